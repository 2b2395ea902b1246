"""Reciprocal-rank fusion: several ranked lists -> one, by rank alone.

BM25 scores and cosine similarities live on unrelated scales; RRF (Cormack et al., 2009) needs
none of them: an item scores sum(1 / (K + rank)) over the lists it appears in (rank from 1), so
an item near the top of both lists beats one at the top of only one. K = 60 is the paper's
constant: it keeps a first place from outweighing everything else.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import TypeVar

RRF_K = 60
T = TypeVar("T", bound=Hashable)


def reciprocal_rank_fusion(
    rankings: Iterable[Sequence[T]], k: int = RRF_K
) -> list[tuple[T, float]]:
    """(item, fused score) best first; ties keep the order in which items were first seen."""
    scores: dict[T, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(dict.fromkeys(ranking), start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    order = {item: i for i, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda pair: (-pair[1], order[pair[0]]))
