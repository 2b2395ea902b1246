"""The piece's mask travels with its frame: the colour signature reads it (less its rim) instead
of segmenting the framed piece again, nearly the same signature as segmenting gives, and the
index and the query path hand the same mask, so a catalog image asked as a query gets its index
vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from jewelrec.imaging.colour import colour_signature, colour_signatures
from jewelrec.imaging.focus import focus_on_piece, frame_piece
from jewelrec.imaging.io import load_image
from jewelrec.imaging.segment import Box

GOLD, SILVER = (212, 175, 55), (192, 192, 196)


def ring_photo(colour=GOLD, background=(250, 250, 250), size=(300, 220)) -> np.ndarray:
    """A ring off-centre on a plain backdrop, so framing crops it with a margin."""
    image = Image.new("RGB", size, background)
    ImageDraw.Draw(image).ellipse((40, 30, 160, 150), outline=colour, width=12)
    return np.asarray(image)


def test_frame_piece_frames_as_focus_on_piece_and_carries_the_piece_s_mask():
    photo = ring_photo()
    framed = frame_piece(photo)
    image, box = focus_on_piece(photo)
    assert framed.box == box and box is not None and np.array_equal(framed.image, image)
    mask = framed.mask
    assert mask is not None and mask.dtype == bool
    h, w = image.shape[:2]
    assert abs(mask.shape[0] / mask.shape[1] - h / w) < 0.05  # it covers the whole frame
    assert not mask[mask.shape[0] // 2, mask.shape[1] // 2]  # the ring's hole is backdrop
    ys, xs = np.nonzero(mask)
    # the ring's band: leftmost on the middle row, inside the frame's margin
    assert 0 < xs.min() < mask.shape[1] // 4 and 0 < ys.min() < mask.shape[0] // 4
    assert 0.05 < mask.mean() < 0.6


def test_a_caller_s_box_or_no_auto_framing_carries_no_mask():
    photo = ring_photo()
    assert frame_piece(photo, Box(10, 10, 100, 100)).mask is None
    assert frame_piece(photo, auto=False).mask is None
    plain = np.full((80, 80, 3), 200, np.uint8)  # nothing stands out: the whole photo, no piece
    framed = frame_piece(plain)
    assert framed.box is None and framed.mask is not None and not framed.mask.any()
    assert np.isfinite(colour_signature(framed.image, framed.mask)).all()


def test_the_signature_describes_what_the_mask_marks():
    half = np.zeros((60, 120, 3), np.uint8)
    half[:, :60], half[:, 60:] = GOLD, SILVER
    left = np.zeros((6, 12), bool)
    left[:, :6] = True
    gold = colour_signature(np.full((60, 60, 3), GOLD, np.uint8))
    silver = colour_signature(np.full((60, 60, 3), SILVER, np.uint8))
    marked = colour_signature(half, left)
    assert marked @ gold > 0.95 and marked @ silver < 0.5  # (resizing blurs the seam a little)
    other = colour_signature(half, ~left)
    assert other @ silver > 0.95 and other @ gold < 0.5
    with pytest.raises(ValueError, match="mask"):
        colour_signature(half, np.zeros((0, 4), bool))


def test_the_rim_of_the_piece_is_left_out_unless_the_piece_is_all_rim():
    photo = np.full((96, 96, 3), 250, np.uint8)
    photo[30:66, 30:66] = (231, 212, 152)  # a rim blending gold into the white backdrop
    photo[31:65, 31:65] = GOLD
    mask = np.zeros((96, 96), bool)
    mask[30:66, 30:66] = True
    gold = colour_signature(np.full((96, 96, 3), GOLD, np.uint8))
    assert colour_signature(photo, mask) @ gold > 0.999
    chain = np.full((96, 96, 3), 250, np.uint8)
    chain[48, 10:86] = SILVER  # one pixel thin: nothing would be left inside it
    line = np.zeros((96, 96), bool)
    line[48, 10:86] = True
    silver = colour_signature(np.full((96, 96, 3), SILVER, np.uint8))
    assert colour_signature(chain, line) @ silver > 0.999


def test_the_framing_s_mask_gives_nearly_the_signature_a_fresh_segmentation_gave(tiny_catalog):
    photos = [ring_photo(c, b) for c in (GOLD, SILVER) for b in ((250, 250, 250), (40, 40, 40))]
    photos += [load_image(p) for p in sorted((tiny_catalog / "images").glob("*.jpg"))[:24]]
    framings = [frame_piece(p) for p in photos]
    images = [f.image for f in framings]
    before = colour_signatures(images)  # each framed piece segmented again, as before
    after = colour_signatures(images, [f.mask for f in framings])
    cosines = (before * after).sum(axis=1)
    assert cosines.min() > 0.9 and np.median(cosines) > 0.99, np.round(cosines, 3)


def test_index_and_query_give_a_catalog_image_the_same_vector(tiny_home):
    from jewelrec.catalog.store import CatalogStore
    from jewelrec.catalog.views import all_views
    from jewelrec.home import Home
    from jewelrec.indexing import embed_images
    from jewelrec.recommend import Recommender, infer

    home = Home(Path(tiny_home))
    recommender = Recommender.open(home)
    snap = recommender.snapshot
    names = [image for _, image in all_views(CatalogStore.open(home, read_only=True)
                                             .all_products())][:8]
    indexed = embed_images(home, snap.embedder, names, progress=False)  # what `index` runs
    compared = 0
    for name in names:
        path = home.image_path(name)
        as_catalog = infer(snap, [recommender.prepare(path, pieces=False)])[0]  # more like this
        np.testing.assert_allclose(as_catalog.vector, indexed[name], atol=1e-5)
        as_photo = infer(snap, [recommender.prepare(path)])[0]  # a shopper's upload
        if len(as_photo.framing.pieces) <= 1:  # framed as the index frames a one-piece photo
            np.testing.assert_allclose(as_photo.vector, indexed[name], atol=1e-5)
            compared += 1
    assert compared >= 2
