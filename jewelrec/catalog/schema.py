"""The Product record every stage shares.

A product may have several images: in CSV the `image` column holds several values separated
by `|` (JSONL and ShopStyle give a list). In the store, `images` holds the managed file names
(content-addressed, relative to the home's images/ folder), the first one being the main image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Product:
    id: str
    title: str
    type: str
    price: float
    url: str
    images: tuple[str, ...]
    currency: str = "USD"
    brand: str | None = None
    metal: str | None = None
    stone: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    # attributes (metal, stone) whose value was read from the photo by the attribute heads at
    # `jewelrec index`, not given by the catalog (jewelrec/fill_attributes.py); a predicted
    # stone of None is "no stone, as far as the photo shows"
    predicted: tuple[str, ...] = field(default_factory=tuple)

    @property
    def image(self) -> str:
        """The main image (first one)."""
        return self.images[0]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["images"] = list(self.images)
        data["tags"] = list(self.tags)
        data["predicted"] = list(self.predicted)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Product:
        return cls(
            id=str(data["id"]),
            title=data["title"],
            type=data["type"],
            price=float(data["price"]),
            url=data["url"],
            images=tuple(data["images"]),
            currency=data.get("currency") or "USD",
            brand=data.get("brand"),
            metal=data.get("metal"),
            stone=data.get("stone"),
            tags=tuple(data.get("tags") or ()),
            predicted=tuple(data.get("predicted") or ()),
        )
