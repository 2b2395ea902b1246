"""A query needs numpy, Pillow and onnxruntime only: `recommend` and the server, run in a fresh
interpreter, never import torch, scipy or scikit-learn (issue 11); and model files written
before models were saved from numpy (by safetensors.torch) still load."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jewelrec.models.weights import load_weights, restore_module, save_weights

HEAVY = ("torch", "scipy", "sklearn")

CLI_QUERY = """
import json, sys
from jewelrec.cli import main
status = main(["recommend", sys.argv[1], "--home", sys.argv[2], "--json"])
print(json.dumps({{"status": status, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""

SERVER_QUERY = """
import json, sys
from fastapi.testclient import TestClient
from jewelrec.server.app import create_app
with TestClient(create_app(sys.argv[2])) as client:
    with open(sys.argv[1], "rb") as fh:
        answer = client.post("/api/recommend", files={{"photo": ("q.jpg", fh, "image/jpeg")}})
print(json.dumps({{"status": answer.status_code, "results": len(answer.json()["results"]),
                  "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def _fresh_interpreter(script: str, photo: Path, home: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", script.format(heavy=HEAVY), str(photo), str(home)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def query_file(tiny_query_photo, tmp_path) -> Path:
    path = tmp_path / "query.jpg"
    path.write_bytes(tiny_query_photo)
    return path


def test_recommend_from_the_command_line_imports_no_training_libraries(tiny_home, query_file):
    seen = _fresh_interpreter(CLI_QUERY, query_file, tiny_home)
    assert seen == {"status": 0, "heavy": []}


def test_the_server_answers_without_training_libraries(tiny_home, query_file):
    seen = _fresh_interpreter(SERVER_QUERY, query_file, tiny_home)
    assert seen["status"] == 200 and seen["results"] > 0
    assert seen["heavy"] == []


def _rewrite_with_torch(folder: Path) -> None:
    """Rewrite a model folder's weights as the code before issue 11 did: torch tensors saved
    by safetensors.torch, the config's hash updated to match."""
    import torch
    from safetensors.torch import save_file

    arrays, config = load_weights(folder)
    weights = folder / "weights.safetensors"
    save_file({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, str(weights))
    config["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (folder / "config.json").write_text(json.dumps(config))


def test_models_written_by_safetensors_torch_load_and_answer_the_same(
    tiny_home, tiny_query_photo, tmp_path
):
    from jewelrec.recommend import Recommender

    copy = tmp_path / "home"
    shutil.copytree(tiny_home, copy)
    folders = sorted(p for p in (copy / "models").iterdir() if p.is_dir())
    assert [p.name for p in folders] == ["attributes-efficientnet",  # metal heads (issue 12)
                                         "classifier-efficientnet-tuned", "embedder-efficientnet"]
    for folder in folders:
        _rewrite_with_torch(folder)
    # other bytes for the same weights: as far as the index can tell, another embedder (it
    # refuses one retrained after it was built), so the index records the rewritten files
    from jewelrec.indexing import model_fingerprint

    meta_file = copy / "index" / (copy / "index" / "CURRENT").read_text() / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["embedder_fingerprint"] = model_fingerprint(copy / "models" / "embedder-efficientnet")
    meta_file.write_text(json.dumps(meta))
    before = Recommender.open(tiny_home).recommend(tiny_query_photo, k=5)
    after = Recommender.open(copy).recommend(tiny_query_photo, k=5)
    assert [r.id for r in after.results] == [r.id for r in before.results]
    assert after.type_probabilities == before.type_probabilities
    assert after.attributes == before.attributes


def test_numpy_weights_restore_a_torch_module_and_torch_weights_load_as_arrays(tmp_path):
    import torch
    from safetensors.torch import save_file

    module = torch.nn.Linear(3, 2)
    save_weights(tmp_path / "a", module.state_dict(), {"model": "toy"})
    restored = restore_module(torch.nn.Linear(3, 2), load_weights(tmp_path / "a")[0],
                              tmp_path / "a")
    assert torch.equal(restored.weight, module.weight) and torch.equal(restored.bias, module.bias)

    (tmp_path / "b").mkdir()
    save_file({"w": torch.arange(6.0).reshape(2, 3)}, str(tmp_path / "b" / "weights.safetensors"))
    (tmp_path / "b" / "config.json").write_text(json.dumps({"model": "toy"}))
    arrays, _ = load_weights(tmp_path / "b")
    assert isinstance(arrays["w"], np.ndarray)
    assert np.array_equal(arrays["w"], np.arange(6.0, dtype=np.float32).reshape(2, 3))
