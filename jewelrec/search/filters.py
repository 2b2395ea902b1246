"""One filter spec for every backend. Filters are applied *before* ranking (pre-filter), so a
query for k results gets k whenever k products match (the prototype filtered 10 neighbours
afterwards and could return none)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from jewelrec.catalog.schema import Product


@dataclass(frozen=True)
class Filters:
    min_price: float | None = None
    max_price: float | None = None
    types: frozenset[str] = field(default_factory=frozenset)
    brands: frozenset[str] = field(default_factory=frozenset)
    metals: frozenset[str] = field(default_factory=frozenset)
    exclude_ids: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for name in ("min_price", "max_price"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if (
            self.min_price is not None
            and self.max_price is not None
            and self.min_price > self.max_price
        ):
            raise ValueError(
                f"min_price ({self.min_price}) is above max_price ({self.max_price})"
            )

    @classmethod
    def build(
        cls,
        *,
        min_price: float | None = None,
        max_price: float | None = None,
        types: Iterable[str] | str | None = None,
        brands: Iterable[str] | str | None = None,
        metals: Iterable[str] | str | None = None,
        exclude_ids: Iterable[str] | None = None,
    ) -> Filters:
        return cls(
            min_price=min_price,
            max_price=max_price,
            types=_as_set(types),
            brands=_as_set(brands),
            # the catalog keeps metals in lower case ("rose gold"): "Silver" finds silver
            metals=frozenset(" ".join(m.lower().split()) for m in _as_set(metals)),
            exclude_ids=frozenset(exclude_ids or ()),
        )

    def with_types(self, types: Iterable[str]) -> Filters:
        return Filters(
            self.min_price, self.max_price, frozenset(types), self.brands, self.metals,
            self.exclude_ids,
        )

    def mask(
        self,
        *,
        price: np.ndarray,
        type_: np.ndarray,
        brand: np.ndarray,
        metal: np.ndarray,
        product_id: np.ndarray,
    ) -> np.ndarray:
        """Boolean mask over index rows (ExactIndex's compilation of the spec)."""
        keep = np.ones(len(price), dtype=bool)
        if self.min_price is not None:
            keep &= price >= self.min_price
        if self.max_price is not None:
            keep &= price <= self.max_price
        if self.types:
            keep &= np.isin(type_, list(self.types))
        if self.brands:
            keep &= np.isin(brand, list(self.brands))
        if self.metals:
            keep &= np.isin(metal, list(self.metals))
        if self.exclude_ids:
            keep &= ~np.isin(product_id, list(self.exclude_ids))
        return keep


    def admits(self, product: Product) -> bool:
        """Whether a product as the catalog holds it now passes (`mask`'s rules on one row): an
        index built before the catalog changed filters on the prices and types it copied."""
        def one(value: Any) -> np.ndarray:
            return np.array([value], dtype=object)

        return bool(self.mask(price=np.array([product.price], dtype=float),
                              type_=one(product.type), brand=one(product.brand),
                              metal=one(product.metal), product_id=one(product.id))[0])


def _as_set(value: Iterable[str] | str | None) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    return frozenset(v.strip() for v in value if v and v.strip())


def checked_k(k: object) -> int:
    """How many results a caller asks for, as a whole number of at least 1 (ValueError, in
    words, otherwise): a negative k cut the answer from its end, 2.5 failed deep in numpy."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k is how many results to show: a whole number of at least 1, "
                         f"not {k!r}")
    return int(k)


MAX_LISTED = 20  # catalog values an error lists (a shop may have hundreds of brands)
ANY_TYPE = "any"  # a shopper's `type`: every type instead of the detected one


def chosen_types(asked: str | None, known: Iterable[str]) -> list[str] | None:
    """The types a shopper's `type` names among the `known` ones: None when it names none (the
    detected type then), every known type for "any", else the one named, read as the catalog
    stores types (lower case, single spaces: "Rose  Ring" is "rose ring"). ValueError with the
    choices for a type the catalog does not have."""
    wanted = " ".join((asked or "").lower().split())
    if not wanted:
        return None
    known = sorted(set(known))
    if wanted == ANY_TYPE:
        return known
    if wanted in known:
        return [wanted]
    raise ValueError(f"unknown type {asked.strip()!r}: use one of {', '.join(known)} "
                     f"(or {ANY_TYPE!r})")


def chosen_values(kind: str, asked: Iterable[str], known: Iterable[str]) -> list[str]:
    """The brands or metals asked for, as the catalog writes them ("northstone" is its
    "Northstone"); ValueError naming some of the catalog's values for one it does not have:
    a filter that matches nothing would otherwise answer an empty page without saying why."""
    spelled = {" ".join(value.lower().split()): value for value in known}
    chosen = []
    for value in asked:
        key = " ".join(value.lower().split())
        if key not in spelled:
            shown = sorted(spelled.values())
            listed = ", ".join(shown[:MAX_LISTED]) + (", ..." if len(shown) > MAX_LISTED else "")
            raise ValueError(f"unknown {kind} {value.strip()!r}: use one of {listed}")
        chosen.append(spelled[key])
    return chosen


def spelled_as_catalog(filters: Filters, facets: Mapping[str, Any]) -> Filters:
    """`filters` with its types, brands and metals read as the CLI and the API read theirs:
    "RING" is the type ring, "any" every type, "maison verel" the brand "Maison Verel";
    ValueError, in words, for a value the catalog lacks. A Python caller's Filters used to match
    only the catalog's exact spelling and answer an empty list without a word."""
    if not (filters.types or filters.brands or filters.metals):
        return filters
    known = facets.get("types") or ()
    return replace(
        filters,
        types=frozenset(t for asked in filters.types for t in chosen_types(asked, known) or ()),
        brands=frozenset(chosen_values("brand", filters.brands, facets.get("brands") or ())),
        metals=frozenset(chosen_values("metal", filters.metals, facets.get("metals") or ())),
    )
