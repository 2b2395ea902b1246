"""`jewelrec index --backend milvus` end to end: the home records the backend, and recommend
answers from Milvus exactly what the exact backend answers (FLAT index)."""

from __future__ import annotations

import json
import shutil

from jewelrec.cli import main


def test_index_on_milvus_and_recommend_like_exact(tiny_home, tiny_catalog, tmp_path, capsys,
                                                  milvus_uri):
    home = tmp_path / "home"
    shutil.copytree(tiny_home, home)
    photo = str(sorted((tiny_catalog / "queries").glob("*.jpg"))[0])

    def recommend(*extra: str) -> dict:
        assert main(["recommend", photo, "--home", str(home), "--json", "-k", "5", *extra]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    exact = recommend("--max-price", "400")
    assert main(["index", "--home", str(home), "--backend", "milvus", "--milvus-uri", milvus_uri,
                 "--no-progress"]) == 0
    capsys.readouterr()
    settings = json.loads((home / "settings.json").read_text())
    assert settings["backend"] == "milvus" and settings["milvus_uri"] == milvus_uri
    on_milvus = recommend("--max-price", "400")
    assert [r["id"] for r in on_milvus["results"]] == [r["id"] for r in exact["results"]]
    for a, b in zip(on_milvus["results"], exact["results"], strict=True):
        assert abs(a["score"] - b["score"]) < 1e-4
    # the exact backend can still be asked for explicitly
    assert recommend("--max-price", "400", "--backend", "exact")["results"] == exact["results"]


def test_asking_milvus_for_an_index_built_exact_says_how_to_build_it(tiny_home, tiny_catalog,
                                                                       capsys):
    photo = str(sorted((tiny_catalog / "queries").glob("*.jpg"))[0])
    code = main(["recommend", photo, "--home", str(tiny_home), "--backend", "milvus",
                 "--milvus-uri", "http://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "built for the exact backend" in err and "jewelrec index --backend milvus" in err
    assert "KeyError" not in err and "unexpected" not in err


def test_an_interrupted_milvus_build_drops_the_collection_it_made(tiny_home, tmp_path,
                                                                   monkeypatch):
    """Ctrl-C between creating a build's collection and publishing its version left the
    collection in Milvus for ever: no version named it, so nothing dropped it later."""
    import pytest

    from jewelrec.home import Home
    from jewelrec.indexing import build_index
    from jewelrec.search import milvus, versions

    made: list = []

    class Collection:  # what index asks of a Milvus collection, no server needed
        def __init__(self, uri, *, collection, dim):
            self.collection, self.dropped = collection, False
            made.append(self)

        def upsert(self, rows, matrix):
            pass

        def flush(self):
            raise KeyboardInterrupt  # the operator's Ctrl-C while Milvus builds its index

        def drop(self):
            self.dropped = True

    monkeypatch.setattr(milvus, "MilvusIndex", Collection)
    home = Home(shutil.copytree(tiny_home, tmp_path / "home"))
    before = versions.current_version(home)
    with pytest.raises(KeyboardInterrupt):
        build_index(home, backend="milvus", milvus_uri="http://127.0.0.1:1", progress=False)
    assert [c.dropped for c in made] == [True]
    assert versions.current_version(home) == before  # the exact index still serves
