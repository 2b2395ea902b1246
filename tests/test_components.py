"""jewelrec/imaging/components.py gives exactly what scipy.ndimage gives for the calls
segment.py used to make (random masks of many shapes and densities, clustered blobs too)."""

from __future__ import annotations

import numpy as np
import pytest

from jewelrec.imaging import components

ndimage = pytest.importorskip("scipy.ndimage", reason="scipy is the reference, not installed")


def _masks():
    rng = np.random.default_rng(0)
    for trial in range(150):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        if trial % 3 == 0:  # blobs: what a photo's foreground looks like
            yield ndimage.binary_dilation(rng.random((h, w)) < 0.04, iterations=2)
        else:
            yield rng.random((h, w)) < rng.uniform(0.05, 0.95)
    yield np.zeros((5, 7), bool)
    yield np.ones((5, 7), bool)
    yield np.eye(9, dtype=bool) | np.eye(9, dtype=bool)[::-1]  # diagonals touch by corners only


def test_label_dilate_close_and_boxes_match_scipy():
    square = np.ones((3, 3), bool)
    checked = 0
    for mask in _masks():
        expected, count = ndimage.label(mask)
        labels, found = components.label(mask)
        assert found == count and np.array_equal(labels, expected)
        assert components.bounding_boxes(labels, found) == ndimage.find_objects(expected)
        assert np.array_equal(components.dilate(mask, iterations=2),
                              ndimage.binary_dilation(mask, iterations=2))
        assert np.array_equal(components.close_square(mask),
                              ndimage.binary_closing(mask, structure=square))
        assert np.array_equal(components.erode(mask), ndimage.binary_erosion(mask))
        assert np.array_equal(components.erode(mask, components.SQUARE),
                              ndimage.binary_erosion(mask, structure=square))
        checked += 1
    assert checked == 153


def test_a_label_without_pixels_has_no_box():
    labels = np.array([[0, 2], [2, 0]], np.int32)
    assert components.bounding_boxes(labels, 2) == [None, (slice(0, 2), slice(0, 2))]


def test_sized_boxes_keep_the_labels_covering_the_fraction_in_label_order():
    mask = np.zeros((10, 10), bool)
    mask[0:2, 0:2] = True  # 4 pixels
    mask[5:9, 3:8] = True  # 20 pixels
    mask[0, 9] = True  # 1 pixel
    labels, count = components.label(mask)
    assert components.sized_boxes(labels, count, 0.04) == [
        ((slice(0, 2), slice(0, 2)), 4), ((slice(5, 9), slice(3, 8)), 20)]
    assert components.sized_boxes(labels, count, 0.05) == [((slice(5, 9), slice(3, 8)), 20)]
    assert len(components.sized_boxes(labels, count, 0.0)) == count == 3
