"""`prefer_brand`: a brand as a signal, not a filter (issue 12).

A post-ranking step: results of the preferred brand rank as if their score were `bonus` higher,
so they move up past close competitors but never push out a much better match, and no other
brand is excluded. Reported scores stay what the search measured (the bonus only reorders).
Callers search a few more candidates than they show, so a preferred piece just below the cut
can move in. Bonuses (chosen to be small next to the gaps between good and poor matches):
photos 0.05 cosine (one photo of a piece scores about 0.9 against another, unrelated pieces
about 0.16); text 0.005 in reciprocal-rank-fusion units (about ten places in both lists).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

PHOTO_BRAND_BONUS = 0.05
TEXT_BRAND_BONUS = 0.005


class Ranked(Protocol):
    @property
    def brand(self) -> str | None: ...

    @property
    def score(self) -> float: ...


R = TypeVar("R", bound=Ranked)


def same_brand(a: str | None, b: str | None) -> bool:
    """Brands compared as people write them: case and surrounding spaces do not matter."""
    return bool(a and b and a.strip().casefold() == b.strip().casefold())


def prefer_brand(results: Sequence[R], brand: str | None, bonus: float) -> list[R]:
    """`results` (best first) reordered with `bonus` added to the preferred brand's scores."""
    if not brand or not brand.strip():
        return list(results)
    keyed = [(r.score + (bonus if same_brand(r.brand, brand) else 0.0), -i, r)
             for i, r in enumerate(results)]
    return [r for _, _, r in sorted(keyed, key=lambda t: (t[0], t[1]), reverse=True)]
