"""The colour signature separates metals that CNN features blur together."""

import numpy as np
from PIL import Image, ImageDraw

from jewelrec.imaging.colour import SIGNATURE_DIM, colour_signature

GOLD, SILVER, ROSE = (212, 175, 55), (192, 192, 196), (183, 110, 121)


def ring(colour, size=140, width=14, background=(250, 250, 250)) -> np.ndarray:
    image = Image.new("RGB", (200, 200), background)
    offset = (200 - size) // 2
    ImageDraw.Draw(image).ellipse(
        (offset, offset, offset + size, offset + size), outline=colour, width=width
    )
    return np.asarray(image)


def test_signature_is_a_unit_vector():
    signature = colour_signature(ring(GOLD))
    assert signature.shape == (SIGNATURE_DIM,) and signature.dtype == np.float32
    assert abs(float(np.linalg.norm(signature)) - 1.0) < 1e-5


def test_same_metal_is_closer_than_another_metal():
    gold_a = colour_signature(ring(GOLD))
    gold_b = colour_signature(ring(GOLD, size=100, width=8, background=(60, 60, 60)))
    for other in (SILVER, ROSE):
        assert gold_a @ gold_b > gold_a @ colour_signature(ring(other)) + 0.2


def test_photo_without_a_clear_piece_still_gets_a_signature():
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert np.isfinite(colour_signature(noise)).all()
