"""Held-out view split, and the atomic index-version pointer."""

import numpy as np
import pytest

from jewelrec.catalog.schema import Product
from jewelrec.catalog.views import split_views
from jewelrec.errors import NotReadyError
from jewelrec.home import Home
from jewelrec.search import versions
from jewelrec.search.index import ExactIndex, IndexRow


def product(pid, images):
    return Product(pid, "t", "ring", 1.0, "https://x.example/p", tuple(images))


def test_split_views_holds_out_last_view_of_multi_view_products():
    fit, held = split_views([product("A", ["a1", "a2", "a3"]), product("B", ["b1"])])
    assert [i for _, i in fit] == ["a1", "a2", "b1"]
    assert [(p.id, i) for p, i in held] == [("A", "a3")]


def test_publish_switches_pointer_and_incomplete_builds_are_invisible(tmp_path):
    home = Home(tmp_path).ensure()
    with pytest.raises(NotReadyError):
        versions.version_dir(home)
    building = versions.new_version_dir(home)
    index = ExactIndex(4)
    index.upsert([IndexRow("A", "a", "ring", 1.0)], np.ones((1, 4)))
    index.save(building)
    assert versions.current_version(home) is None  # not published yet
    name = versions.publish(home, building, {"embedder": "x"})
    assert versions.current_version(home) == name
    assert versions.read_meta(home)["embedder"] == "x"
    # a later build killed half-way leaves the published version in place
    versions.new_version_dir(home)
    assert versions.current_version(home) == name
