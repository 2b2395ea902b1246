"""`group_variants`: one product per design in a result list (issue 13), when the operator asks.

A Google Merchant feed lists each variant of a design (size, metal, colour) as its own item,
tied to the others by `item_group_id`. They stay separate products (each can be found, filtered
by price or metal and linked to); the importer tags them `group:<id>` (any catalog may carry such
a tag). A shopper looking for similar pieces gains little from three sizes of one ring, so an
operator can ask (`recommend --group-variants`, `serve --group-variants`) for the best-ranked
product of each group only. A post-ranking step: products without a group tag are left alone,
scores are untouched, and the search asks the index for CANDIDATES_PER_RESULT times k candidates,
twice as many again while fewer than k designs come and the index has more (Recommender._search).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

GROUP_TAG_PREFIX = "group:"
CANDIDATES_PER_RESULT = 4  # a design seldom has more variants that look alike


class Identified(Protocol):
    @property
    def id(self) -> str: ...


class Tagged(Protocol):
    @property
    def tags(self) -> tuple[str, ...]: ...


R = TypeVar("R", bound=Identified)


def variant_group(tags: Iterable[str]) -> str | None:
    """The design a product is a variant of (its first `group:<id>` tag), or None."""
    for tag in tags:
        if tag.startswith(GROUP_TAG_PREFIX) and len(tag) > len(GROUP_TAG_PREFIX):
            return tag[len(GROUP_TAG_PREFIX):]
    return None


def one_per_group(results: Sequence[R], products: Mapping[str, Tagged]) -> list[R]:
    """`results` (best first) keeping only the first, best-ranked, product of each variant group;
    `products` (id -> product) says the groups; a result not found there is kept as is."""
    seen: set[str] = set()
    kept: list[R] = []
    for result in results:
        product = products.get(result.id)
        group = variant_group(product.tags) if product is not None else None
        if group is not None:
            if group in seen:
                continue
            seen.add(group)
        kept.append(result)
    return kept
