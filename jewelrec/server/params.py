"""Request parameters several routes share, declared once: the filters (price range, type,
brands, metals) that a photo search, a text search and 'more like this' all take, with the
same names, limits and validation messages. A photo comes in a form, so its route reads them
as form fields; the others read them from the query string.

(No `from __future__ import annotations` here: FastAPI reads the dependency's signature, and
its annotations name `kind`, a variable of the factory.)"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Form, Query
from pydantic import StringConstraints

# A type, brand or metal is at most as long as the catalog lets one be (catalog/importers.py
# MAX_LENGTHS); a request names at most this many brands or metals
MAX_NAME_CHARS = 200
MAX_NAMES = 50
Name = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]


@dataclass(frozen=True)
class FilterParams:
    """The filter fields as the request gave them; the route checks them against the catalog
    (a known type, min_price <= max_price) and builds its Filters."""

    min_price: float | None = None
    max_price: float | None = None
    type: str | None = None
    brands: list[str] | None = None
    metals: list[str] | None = None


def filter_params(
    kind: Callable[..., Any],
    *,
    type_help: str,
    brand_help: str | None = None,
    metal_help: str | None = None,
) -> Callable[..., FilterParams]:
    """The dependency that parses the filter fields: `kind` is fastapi's `Form` (a photo's
    POST) or `Query`; `type_help` says what `type` means on that route (its default differs)."""
    if kind not in (Form, Query):
        raise ValueError(f"filter fields come from a form or a query string, not {kind!r}")

    def filters(
        min_price: Annotated[float | None, kind(ge=0, allow_inf_nan=False)] = None,
        max_price: Annotated[float | None, kind(ge=0, allow_inf_nan=False)] = None,
        type: Annotated[str | None, kind(max_length=MAX_NAME_CHARS, description=type_help)] = None,
        brand: Annotated[list[Name] | None,
                         kind(max_length=MAX_NAMES, description=brand_help)] = None,
        metal: Annotated[list[Name] | None,
                         kind(max_length=MAX_NAMES, description=metal_help)] = None,
    ) -> FilterParams:
        return FilterParams(min_price, max_price, type, brand, metal)

    return filters
