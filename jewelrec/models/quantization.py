"""The backbone graph in int8: same answers; a pass in about 0.64x the time on a CPU with VNNI
(as measured on an earlier machine), the float graph's time on one with AVX2 only (issue 11).

EfficientNet-Lite was designed to be quantised (ReLU6, no squeeze-and-excitation), and
onnxruntime runs int8 convolutions on the vector units of today's CPUs. Static quantisation
(weights per output channel, activations per tensor, QDQ format) needs the range of every
activation, measured on calibration photos. Those come from the synthetic catalog's renderer
(catalog/synthetic.py), not from the home's own photos: so the graph is the same in every home,
can be made before a catalog exists, and depends on nothing outside the package. Measured on real
photos of other shops with a graph calibrated so (README, "int8 backbone"): type accuracy and
same-product recall unchanged, a real query's CPU time 0.77x.

What it imports at the top is light (the backbone reads RECIPE on the query path); the quantiser,
onnx, the renderer and torch are imported only when a graph is made.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

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
# Signed activations (S8S8, onnxruntime's recommended QDQ setting), not unsigned (U8S8): on a
# CPU without VNNI (measured: an AMD EPYC with AVX2 only), onnxruntime multiplies U8S8 pairs with
# an instruction that saturates 16-bit sums, and 100 real photos' GeM features at 320 px agreed
# with the float graph's at cosine 0.992 (min 0.966; 7-bit weights, `reduce_range`: 0.992, min
# 0.981), against 0.997 (min 0.994) for S8S8 there and for U8S8 on a CPU with VNNI. On that
# AVX2 machine S8S8 runs at the float graph's speed (12.6 against 12.2 ms, one photo, 2 threads;
# U8S8 8.6-10.7 ms, U8U8 67 ms): no faster, but the same answers on every CPU.
# Names the recipe in the feature cache: a change of recipe must not reuse features of the old
RECIPE = "int8-qdq-s8s8-minmax-synth64-float01-v2"


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
                   float_prefixes: tuple[str, ...] = ()) -> Path:
    """Write the int8 version of the float graph `source` to `target`, atomically, with the
    activation ranges `batches` (the graph's inputs by name) give; nodes whose names start
    with one of `float_prefixes` stay float."""
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

    kept_float = [node.name for node in onnx.load(str(source)).graph.node
                  if float_prefixes and node.name.startswith(float_prefixes)]
    with atomic_path(target) as written, _quiet_quantiser():  # its helper graph goes to a
        # temporary folder of its own
        quantize_static(
            str(source), str(written), Calibration(), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
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
