"""The backbone graph in int8: same answers; a pass in about 0.55-0.64x the float one's time on a
CPU with VNNI, the float graph's time on one with AVX2 only (issue 11).

EfficientNet-Lite was designed to be quantised (ReLU6, no squeeze-and-excitation), and
onnxruntime runs int8 convolutions on the vector units of today's CPUs. Static quantisation
(weights per output channel, activations per tensor, QDQ format) needs the range of every
activation, measured on calibration photos. Those come from the synthetic catalog's renderer
(catalog/synthetic.py), not from the home's own photos: so the graph is the same in every home,
can be made before a catalog exists, and depends on nothing outside the package. Measured on real
photos of other shops with a graph calibrated so (README, "int8 backbone"): type accuracy and
same-product recall unchanged, a real query's CPU time 0.77x.

What it imports at the top is light (the backbone asks `activations` and `recipe` on the query
path); the quantiser, onnx, the renderer and torch are imported only when a graph is made.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from jewelrec.errors import JewelrecError

CALIBRATION_PHOTOS = 64  # measured enough: activation ranges stop moving by then
CALIBRATION_SEED = 11  # the synthetic products the ranges come from
CALIBRATION_SIZE = 256  # rendered side; the network sees the usual 224 centre crop
# The stem and blocks 0-1 stay float: they see the pixels at 1/2 and 1/4 scale, where rounding
# errors start and then grow through every later block. Measured on 120 real photos at 320 px
# (GeM features against the float graph's): all int8 cosine 0.9895 at 0.50x the float time,
# these float 0.9976 at 0.64x; keeping only the stem float 0.9917, blocks 14-15 and the head
# float 0.9897 (the error is made early, not late). With all of it int8, same-product recall on
# real photos lost 2-3 of 130 queries in the top ranks (notes of issue 11).
FLOAT_PREFIXES = ("/_conv_stem/", "/_blocks.0/", "/_blocks.1/")  # node names of the export
# Activations unsigned (U8S8) on a CPU with VNNI, signed (S8S8) elsewhere. VNNI multiplies
# unsigned by signed bytes into 32-bit sums, and onnxruntime runs S8S8 there no faster than float:
# on an Intel Xeon with AVX512-VNNI (2026-12-07, 2 threads) a photo at 320 px in batches of 8 took
# 9.5-9.7 ms in U8S8, 17-22 ms in S8S8 and 15-19 ms in float, one at 224 px 5.9-6.8, 10.4-13.8 and
# 9.9-10.8 ms, with the same agreement (64 real photos' GeM features at 320 px, cosine to the float
# graph's 0.9976 both, min 0.996). Without VNNI (measured: an AMD EPYC with AVX2 only) onnxruntime
# multiplies U8S8 pairs with an instruction that saturates 16-bit sums: cosine 0.992 (min 0.966)
# against 0.997 (min 0.994) for S8S8, which runs there at the float graph's speed (12.6 against
# 12.2 ms, one photo; U8S8 8.6-10.7 ms, U8U8 67 ms): no faster, but the same answers.
ACTIVATIONS = ("u8", "s8")
ACTIVATIONS_VARIABLE = "JEWELREC_INT8_ACTIVATIONS"  # overrides the CPU's choice, e.g. to make a
# home on one machine for serving on another of the other kind
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})  # /proc/cpuinfo's names for it


def cpu_has_vnni(cpuinfo: str | None = None) -> bool:
    """Whether this CPU (or the `cpuinfo` text given) has x86 VNNI; False where it cannot tell."""
    if cpuinfo is None:
        cpuinfo = _cpuinfo()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return bool(VNNI_FLAGS & set(line.partition(":")[2].split()))
    return False


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:  # not Linux: signed activations, right everywhere
        return ""


def activations() -> str:
    """'u8' or 's8': what int8 graphs made in this process compute their activations in."""
    chosen = os.environ.get(ACTIVATIONS_VARIABLE, "").strip().lower()
    if chosen and chosen not in ACTIVATIONS:
        raise JewelrecError(f"${ACTIVATIONS_VARIABLE} should be one of {', '.join(ACTIVATIONS)}"
                            f", not {chosen!r}")
    return chosen or ("u8" if cpu_has_vnni() else "s8")


def recipe(activation: str | None = None) -> str:
    """Names the recipe in graph files and feature caches: features of one recipe are never
    reused for another (the S8S8 name is the one homes have had since 2026-12-01)."""
    return f"int8-qdq-{activation or activations()}s8-minmax-synth64-float01-v2"


def calibration_photos() -> Iterator[np.ndarray]:
    """One preprocessed synthetic photo (1, 3, 224, 224) at a time, half catalog views and half
    shopper photos (loosely framed, softer), over every type the renderer draws."""
    from jewelrec.catalog.synthetic import product_spec, render_view
    from jewelrec.models.backbone import IMAGENET_CROP, INPUT_SIZE, preprocess

    for i in range(CALIBRATION_PHOTOS):
        photo = render_view(product_spec(CALIBRATION_SEED, i), 0, size=CALIBRATION_SIZE,
                            shopper=i % 2 == 1)
        yield preprocess(photo, IMAGENET_CROP, INPUT_SIZE)[None]


def quantize_graph(source: Path, target: Path, batches: Iterable[dict[str, np.ndarray]],
                   float_prefixes: tuple[str, ...] = (), activation: str | None = None) -> Path:
    """Write the int8 version of the float graph `source` to `target`, atomically, with the
    activation ranges `batches` (the graph's inputs by name) give; nodes whose names start
    with one of `float_prefixes` stay float; activations in `activation` (default: this
    CPU's choice, `activations`)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from jewelrec.home import atomic_path
    from jewelrec.models.onnx_graph import prune_graph

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    activation_type = QuantType.QUInt8 if (activation or activations()) == "u8" else QuantType.QInt8
    kept_float = [node.name for node in onnx.load(str(source)).graph.node
                  if float_prefixes and node.name.startswith(float_prefixes)]
    with atomic_path(target) as written, _quiet_quantiser():  # its helper graph goes to a
        # temporary folder of its own
        quantize_static(
            str(source), str(written), Calibration(), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=activation_type, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=kept_float,
            calibration_providers=["CPUExecutionProvider"],
        )
        prune_graph(written)
    return target


@contextmanager
def _quiet_quantiser() -> Iterator[None]:
    """The quantiser's advice ("consider pre-processing") and onnxruntime's notes on its helper
    graphs are for the person writing a recipe, not for a shop running `train`: silenced for
    the few seconds it runs, then the process's levels are put back."""
    import onnxruntime as ort

    class DropAdvice(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing" not in record.getMessage()

    advice = DropAdvice()
    logging.getLogger().addFilter(advice)
    ort.set_default_logger_severity(3)  # errors only
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default: warnings
        logging.getLogger().removeFilter(advice)
