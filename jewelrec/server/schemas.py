"""The HTTP API's contract: request parsing helpers and response models.

The response models mirror `Recommendation.to_dict()` (the `recommend --json` shape) and add
only what a browser needs on top (image URLs, the box that was searched, the photo's size).
Fields may be added; the documented ones are never removed.

Where the API answers a pipeline dataclass as it is (a result, a likely type, an attribute
guess), its model is made of that dataclass's fields (`model_of`): a field added there is
answered and documented here. Where the API's shape differs (the answer, a piece, a product:
boxes as lists, image URLs), the model is written out and tests/test_one_place_rules.py checks
that its fields and the dataclass's stay the same set.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_type_hints
from urllib.parse import quote

from pydantic import BaseModel, Field, create_model

from jewelrec import recommend
from jewelrec.models import attributes


def image_url(name: str) -> str:
    """URL under which the server serves a managed image (see GET /images/{name})."""
    return "/images/" + quote(name)


def model_of(
    source: type,
    *,
    descriptions: dict[str, str] | None = None,
    extra: dict[str, tuple[Any, Any]] | None = None,
    after: str | None = None,
) -> type[BaseModel]:
    """A response model named as `source` (a dataclass) with its fields, their types and
    defaults, and the `descriptions` given here; `extra`: fields only the API answers, placed
    after the field `after` (default: last). A description or `after` naming no field of
    `source` is a TypeError at import, so the two cannot drift apart unnoticed."""
    names = [f.name for f in dataclasses.fields(source)]
    descriptions = descriptions or {}
    unknown = sorted((set(descriptions) | ({after} if after else set())) - set(names))
    if unknown:
        raise TypeError(f"{source.__name__} has no field {', '.join(unknown)}")
    hints = get_type_hints(source)
    definitions: dict[str, Any] = {}
    for f in dataclasses.fields(source):
        if f.default is not dataclasses.MISSING:
            info = Field(f.default, description=descriptions.get(f.name))
        elif f.default_factory is not dataclasses.MISSING:
            info = Field(default_factory=f.default_factory, description=descriptions.get(f.name))
        else:
            info = Field(description=descriptions.get(f.name))
        definitions[f.name] = (hints[f.name], info)
        if f.name == after:
            definitions.update(extra or {})
    if after is None:
        definitions.update(extra or {})
    return create_model(source.__name__, __module__=__name__, **definitions)


# a result as recommend.Result has it (`recommend --json`), and where this server serves its image
Result = model_of(
    recommend.Result,
    descriptions={
        "url": "the product page where it can be bought",
        "image": "managed image name, relative to the home's images/ folder",
        "score": "cosine similarity to the query, higher is closer",
        "why": "short reasons it matches, each shown only with its evidence: '<type> like "
        "yours', '<metal> like yours', '<stone> like yours', 'same brand' (more like this), "
        "'looks NN% alike' (from the cosine score); with words (`q`): '<value> as you asked', "
        "'“<word>” in its title'",
        "metal": "its metal (see `predicted`)",
        "stone": "its main stone (see `predicted`)",
        "predicted": "which of metal / stone were read from its photo (the catalog gives none)",
    },
    extra={"image_url": (str, Field(description="where this server serves `image`"))},
    after="score",
)


class PhotoSize(BaseModel):
    width: int
    height: int


TypeAlternative = model_of(recommend.TypeAlternative)

AttributeGuess = model_of(attributes.AttributeGuess, descriptions={
    "value": "the most likely value; null for stone: no stone",
    "confidence": "calibrated probability of that value",
})


class Piece(BaseModel):
    """One piece of jewelry found in the photo (jewelrec/models/pieces.py)."""

    box: list[int] = Field(
        min_length=4, max_length=4,
        description="[x0, y0, x1, y1] in the photo's pixels (x1, y1 excluded)",
    )
    type: str = Field(description="the type the classifier reads in this box")
    confidence: float = Field(description="its probability of that type (0..1)")


class Recommendation(BaseModel):
    photo: str | None = Field(description="the uploaded file's name, or the product id queried")
    type: str | None = Field(description="the detected jewelry type")
    type_confidence: float | None
    recognised: bool = Field(
        True,
        description="false: the photo does not look like jewelry from this shop (it is less "
        "like the catalog than the catalog's pieces are like each other); results are the "
        "closest pieces anyway",
    )
    type_decided: bool = Field(
        True,
        description="false: the classifier is not sure of the type, or the photo is not "
        "recognised (and the request fixed none); the results span the likely types and a "
        "person can choose one of type_alternatives",
    )
    type_alternatives: list[TypeAlternative] = Field(
        default_factory=list,
        description="the most likely types (at most three, each at least 5%), most likely first",
    )
    results: list[Result]
    type_probabilities: dict[str, float] = Field(default_factory=dict)
    crop: list[int] | None = Field(
        None,
        description="[x0, y0, x1, y1] in the photo's pixels: the area searched "
        "(the caller's crop, or the piece found automatically); null means the whole photo",
    )
    searched_types: list[str] | None = Field(
        None, description="types the search was limited to; null means every type"
    )
    photo_size: PhotoSize | None = None
    index_version: str | None = None
    attributes: dict[str, AttributeGuess] = Field(
        default_factory=dict,
        description="metal and stone read from the photo (those the catalog could teach: "
        "`jewelrec train` fits them when it labels enough photos); empty when none",
    )
    pieces: list[Piece] = Field(
        default_factory=list,
        description="the pieces of jewelry found in the photo (a set, or several worn pieces), "
        "most salient first; at least one for a photo, empty for 'more like this'. Search "
        "another one with the `piece` field",
    )
    piece: int | None = Field(
        None,
        description="which of `pieces` (its index) the results are for; null when the "
        "caller's crop was searched (or for 'more like this')",
    )
    query: str | None = Field(None, description="the words given with the photo (`q`)")
    applied: AppliedFilters | None = Field(
        None, description="the filters the words applied (as in /api/search); null without `q`"
    )
    ranked_by: list[str] | None = Field(
        None, description="with `q`: 'photo', then 'title vectors' when words no filter took "
        "re-ranked the similar pieces"
    )


class AppliedFilters(BaseModel):
    """The filters a text query's words applied (a facet the request fixed is not listed)."""

    types: list[str] = Field(default_factory=list)
    metals: list[str] = Field(default_factory=list)
    stones: list[str] = Field(default_factory=list)
    brands: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    max_price: float | None = Field(None, description="from 'under 100', 'below $80' ...")
    min_price: float | None = Field(None, description="from 'over 200', 'at least 50' ...")
    notes: list[str] = Field(
        default_factory=list,
        description="price phrases read but not understood ('under -5': a price below 0), "
        "so no filter was taken from them")
    excluded: dict[str, list[str]] = Field(
        default_factory=dict,
        description="values the words ruled out, by facet ('without diamonds' -> "
        "{'stones': ['diamond']}): products holding them are left out")


class TextSearch(BaseModel):
    query: str
    applied: AppliedFilters
    ranked_by: list[str] = Field(
        description="what ordered the results: 'words' (BM25), 'title vectors', or 'price' "
        "when the query was only a price phrase"
    )
    results: list[Result] = Field(
        description="best first; `score` is the reciprocal-rank-fusion score of the two lists"
    )
    index_version: str | None = None


class Product(BaseModel):
    id: str
    title: str
    type: str
    price: float
    currency: str
    url: str
    brand: str | None = None
    metal: str | None = None
    stone: str | None = None
    tags: list[str] = Field(default_factory=list)
    images: list[str]
    image_url: str = Field(description="where this server serves the main image")
    image_urls: list[str]
    predicted: list[str] = Field(
        default_factory=list,
        description="attributes ('metal', 'stone') whose value was read from the photo by the "
        "attribute heads at `jewelrec index` because the catalog gives none (a predicted stone "
        "of null: none seen); empty when every value is the catalog's",
    )


class Example(BaseModel):
    """A catalog product whose main image makes a good first query."""

    id: str
    title: str
    type: str
    image: str
    image_url: str


class Facets(BaseModel):
    types: list[str]
    brands: list[str]
    metals: list[str]
    price_min: float | None
    price_max: float | None
    currency: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    products: int
    index_version: str | None
    index_refused: str | None = Field(
        None, description="a newer published index this server could not load (its log says "
        "why): it answers from index_version until one loads")


class ErrorMessage(BaseModel):
    detail: str = Field(description="what went wrong, in words")
