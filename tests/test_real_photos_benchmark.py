"""The pieces of benchmarks/real_photos.py on a tiny catalog: shop folds never share a shop, a
gallery product is written as one `|` row, and both tables come out of the real pipeline."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import real_photos  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(tiny_catalog) -> list[real_photos.Photo]:
    """The tiny demo catalog's views as 'real photos' of four made-up shops."""
    with open(tiny_catalog / "catalog.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for i, row in enumerate(rows):
        for image in row["image"].split("|"):
            out.append(real_photos.Photo(tiny_catalog / image, row["type"], f"shop{i % 4}",
                                         "product"))
    return out


def test_shop_folds_never_share_a_shop(photos):
    folds = real_photos.shop_folds(photos, 2)
    assert len(folds) == 2
    for train, test in folds:
        assert not {photos[i].source_repo for i in train} & {photos[i].source_repo for i in test}
        assert sorted(train + test) == list(range(len(photos)))


def test_a_gallery_product_is_one_row_with_its_photos(photos, tmp_path):
    product = real_photos.CatalogProduct("g1", "ring", (photos[0].path, photos[1].path))
    path = real_photos.write_catalog(tmp_path, [product])
    row = next(csv.DictReader(open(path, newline="")))
    assert row["id"] == "g1" and len(row["image"].split("|")) == 2
    assert all((tmp_path / name).exists() for name in row["image"].split("|"))


def test_selective_points_rank_by_confidence():
    points = real_photos.selective_points(np.array([0.9, 0.8, 0.2, 0.1]),
                                          np.array([True, True, False, False]))
    assert points["50%"] == 1.0 and points["100%"] == 0.5


def test_the_interval_widens_with_fewer_queries_and_holds_its_mean():
    ranks = [1, 3, None, 12, 1, 2] * 5  # Recall@1 1/3 on 30 queries
    low, high = real_photos.interval(real_photos.found_within(ranks, 1))
    assert low < 1 / 3 < high and 0.0 <= low and high <= 1.0
    few_low, few_high = real_photos.interval(real_photos.found_within(ranks[:6], 1))
    assert few_high - few_low > high - low
    assert real_photos.interval(real_photos.found_within([1, 2, 4], 10)) == (1.0, 1.0)


def test_a_paired_difference_counts_only_the_queries_that_changed():
    baseline = [1, 5, None, 2, 1, 30] * 4
    same = real_photos.paired_difference(baseline, baseline, 1)
    assert same == {"difference": 0.0, "low": 0.0, "high": 0.0}
    better = [1, 1, None, 2, 1, 30] * 4  # one query in six moves to the first place
    moved = real_photos.paired_difference(better, baseline, 1)
    assert moved["difference"] == pytest.approx(1 / 6)
    assert 0.0 < moved["low"] < moved["difference"] < moved["high"]
    with pytest.raises(ValueError, match="same queries"):
        real_photos.paired_difference(better[:3], baseline, 1)


def test_both_tables_come_out_of_the_real_pipeline(photos, tmp_path):
    types = real_photos.type_results("default", photos, 2, tmp_path, epochs=None)
    assert 0.0 <= types["accuracy"] <= 1.0 and len(types["fold_accuracy"]) == 2
    assert 0.0 <= types["decided_coverage"] <= 1.0
    # two "products photographed several ways": the first view is the query, the rest a gallery
    by_id: dict[str, list[real_photos.Photo]] = {}
    for photo in photos:
        by_id.setdefault(photo.path.name.split("_")[0], []).append(photo)
    groups = dict(list(by_id.items())[:2])
    distractors = [p for key, ps in list(by_id.items())[2:] for p in ps[:1]]
    found = real_photos.retrieval_results("default", distractors, groups, tmp_path, epochs=None)
    assert found["queries"] == 2 and found["catalog_products"] == len(distractors) + 2
    assert found["recall@1"] <= found["recall@5"] <= found["recall@10"] <= 1.0
    assert found["recall@10"] == 1.0  # a tiny catalog: the gallery product is in the top 10
    assert len(found["ranks"]) == 2 and found["recall@10_95"] == (1.0, 1.0)
    low, high = found["recall@1_95"]
    assert low <= found["recall@1"] <= high
