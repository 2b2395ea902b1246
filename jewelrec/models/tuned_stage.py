"""The tuned type head's own stage, run on the home backbone's trunk output (issues 9 and 11).

Why: the tuned type head (models/heads.py, trained by models/type_tuning.py) changes only blocks
11-15 and the head convolution of EfficientNet-Lite0; the stem and blocks 0-10 stay ImageNet's,
which is what the home's backbone runs for the frozen head anyway. So the home's pass hands over
the output of block 10 ("trunk", models/backbone.py) and only the stage runs again: about a third
of a whole network's multiply-adds at 224 px, instead of a second whole network for every photo
and every candidate piece the piece finder types.

The stage is exported to its own small ONNX graph (trunk -> GeM of the tuned last map) beside the
classifier's weights; torch is only the fallback when that file cannot be written, and the
reference the tests compare it with.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np

from jewelrec.home import FP32
from jewelrec.models.backbone import (
    FEATURE_DIM,
    GEM_POWER,
    TAIL_ARRAY_PREFIX,
    TRUNK_OUTPUT_BLOCKS,
    export_graph,
    open_or_export,
)

STAGE_INPUT, STAGE_OUTPUTS = "trunk", ("features",)
TRUNK_CHANNELS = 112  # what blocks 0-10 of Lite0 output


def first_tuned_block(tail: dict[str, np.ndarray]) -> int:
    """The first block the tail arrays ("tail._blocks.<i>. ...") hold weights for."""
    blocks = [int(k.split(".")[2]) for k in tail if k.startswith(f"{TAIL_ARRAY_PREFIX}_blocks.")]
    if not blocks:
        raise ValueError("the tuned stage holds no block weights")
    return min(blocks)


class TunedStage:
    """Blocks 11-15, the head convolution and GeM pooling with the tuned weights `tail`:
    trunk output (N, 112, h, w) -> features (N, 1280). Runs on onnxruntime from `onnx_path`
    (exported there first when missing or stale), else on torch (also when `onnx_path` is None,
    before the classifier is saved)."""

    dim = FEATURE_DIM

    def __init__(self, onnx_path: Path | None, tail: dict[str, np.ndarray],
                 precision: str = FP32) -> None:
        if first_tuned_block(tail) != TRUNK_OUTPUT_BLOCKS:
            raise ValueError(f"the tuned stage starts at block {first_tuned_block(tail)}, but the "
                             f"home's pass hands over the output of block "
                             f"{TRUNK_OUTPUT_BLOCKS - 1}: train the classifier again")
        self.onnx_path = Path(onnx_path) if onnx_path is not None else None
        self.tail = tail
        self.precision = precision  # "int8": the graph at `onnx_path` is quantised
        digest = hashlib.blake2b(digest_size=8)
        for name in sorted(tail):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(tail[name]).tobytes())
        self.tag = digest.digest()
        self._session = None
        self._tried = onnx_path is None
        self._network = None  # the torch copy, built on first need
        self._lock = threading.Lock()  # opening the session (which may export the module)
        self._network_lock = threading.Lock()

    @property
    def runtime(self) -> str:
        return "onnxruntime" if self._session is not None else "torch"

    def prepare(self) -> bool:
        """Open the ONNX session now (exporting the graph first if needed); False: torch."""
        if not self._tried:
            with self._lock:
                if not self._tried and self.onnx_path is not None:
                    self._session = open_or_export(self.export_onnx, self.onnx_path,
                                                   STAGE_OUTPUTS)
                    self._tried = True
        return self._session is not None

    def run(self, trunk: np.ndarray) -> np.ndarray:
        """Trunk output (N, 112, h, w) float32 -> GeM features (N, 1280) float32."""
        self.prepare()
        if self._session is not None:
            return self._session.run(list(STAGE_OUTPUTS), {STAGE_INPUT: trunk})[0]
        import torch

        with torch.inference_mode():
            return self._module()(torch.from_numpy(np.ascontiguousarray(trunk))).numpy()

    def export_onnx(self, path: Path) -> Path:
        """Write the stage as ONNX (dynamic batch, height and width), atomically; in int8, its
        activation ranges are measured on the ImageNet trunk's output for the calibration
        photos (models/quantization.py), as the home's pass would hand them over."""
        import torch

        size = 224 // 16  # the trunk's side at 224 px: any even side gives the same pads
        axes = {STAGE_INPUT: {0: "batch", 2: "height", 3: "width"}, "features": {0: "batch"}}
        example = torch.zeros(1, TRUNK_CHANNELS, size, size)
        if self.precision == FP32:
            return export_graph(self._module(), example, path, STAGE_INPUT, STAGE_OUTPUTS, axes)
        from jewelrec.models.backbone import export_int8_graph, load_torch_model
        from jewelrec.models.quantization import calibration_photos

        imagenet = load_torch_model()

        def trunks():
            with torch.inference_mode():
                for photo in calibration_photos():
                    trunk = imagenet.trunk(torch.from_numpy(photo), TRUNK_OUTPUT_BLOCKS)
                    yield {STAGE_INPUT: trunk.numpy()}

        return export_int8_graph(self._module(), example, path, STAGE_INPUT, STAGE_OUTPUTS, axes,
                                 trunks())

    def _module(self):
        """The stage as a torch module (training-only: imports torch)."""
        import torch

        from jewelrec.models.adaptation import adapted_network
        from jewelrec.models.efficientnet_lite import gem

        with self._network_lock:
            if self._network is None:
                network = adapted_network(self.tail)

                class Stage(torch.nn.Module):
                    def __init__(self) -> None:
                        super().__init__()
                        self.net = network

                    def forward(self, x: torch.Tensor) -> torch.Tensor:
                        return gem(self.net.stage(x, TRUNK_OUTPUT_BLOCKS), GEM_POWER)

                self._network = Stage().eval()
            return self._network
