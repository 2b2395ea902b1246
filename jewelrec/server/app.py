"""The shopper's web page and the JSON API, both answered by ONE Recommender.

The Recommender is loaded once at start-up (the app's lifespan) and then shared: queries run in
worker threads (they are CPU-bound), a background task swaps in a newly published index without
a restart, and every error reaches the client as a sentence, never as a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from itertools import chain, zip_longest
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import numpy as np
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    UploadFile,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jewelrec import __version__
from jewelrec.catalog.schema import Product
from jewelrec.errors import (
    BackendUnavailableError,
    ImageError,
    JewelrecError,
    NotReadyError,
    UnknownProductError,
)
from jewelrec.home import Home
from jewelrec.imaging.io import (
    QUERY_SHORT_SIDE,
    READABLE_FORMATS,
    decode_photo,
    sniff_image_type,
)
from jewelrec.imaging.segment import Box
from jewelrec.recommend import (
    MAX_PIECES,
    FilterError,
    NoPhotoError,
    PieceError,
    Recommendation,
    Recommender,
)
from jewelrec.search.filters import ANY_TYPE, Filters, chosen_types, chosen_values
from jewelrec.server import embed, inference, schemas
from jewelrec.server.files import IMMUTABLE, file_answer
from jewelrec.server.params import FilterParams, filter_params
from jewelrec.text.photo_words import WordsError
from jewelrec.text.query import MAX_QUERY_CHARS
from jewelrec.text.search import TextAnswer, TextSearcher

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
DEFAULT_MAX_UPLOAD_BYTES = 10_000_000
MULTIPART_SLACK_BYTES = 64 * 1024  # form fields and multipart boundaries around the photo
RELOAD_INTERVAL_S = 2.0
MAX_K = 100
EXAMPLES_PER_PAGE = 8
BACKEND_RETRY_S = 5  # a Milvus outage: when clients may ask again (a restart takes seconds)
# What an upload may be: exactly the formats the image loader reads, named as people know them.
ACCEPTED_FORMATS = ", ".join({"WEBP": "WebP"}.get(f, f) for f in READABLE_FORMATS[:-1]) + (
    f" or {READABLE_FORMATS[-1]}"
)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
    (b"x-frame-options", b"DENY"),
]

T = TypeVar("T")


# -- middleware (plain ASGI, so they see every response, streamed or not) -----------------------
class SecurityHeaders:
    """Adds the CSP (scripts only from this server) and nosniff to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class InternalErrors:
    """Last line of defence: any unexpected exception becomes 500 "internal error"; the
    traceback goes to the server's log, never into a response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("internal error answering %s %s", scope["method"], scope["path"])
            if not started:
                await JSONResponse({"detail": "internal error"}, status_code=500)(
                    scope, receive, send
                )


class BodySizeLimit:
    """Refuses request bodies over `max_bytes`: at once when Content-Length says so, and while
    reading when a client sends more than it announced (or announces nothing)."""

    def __init__(self, app: ASGIApp, max_bytes: int, message: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        announced = _content_length(scope)
        if announced is not None and announced > self.max_bytes:
            await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions from body parsing: this becomes a 413.
                    raise HTTPException(status_code=413, detail=self.message)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# -- the shared state ------------------------------------------------------------------------
class Shop:
    """What every request shares: the one Recommender, a worker limit sized to the CPU (queries
    are CPU-bound; more threads than cores only thrash), and small caches per index version.
    `group_variants`: the operator's `serve --group-variants` (one product per variant group)."""

    def __init__(self, recommender: Recommender, *, max_upload_bytes: int, workers: int,
                 group_variants: bool = False) -> None:
        self.recommender = recommender
        # passed to the Recommender only when asked (stand-ins in tests need not know it)
        self.ranking: dict[str, Any] = {"group_variants": True} if group_variants else {}
        self.max_upload_bytes = max_upload_bytes
        self.limiter = anyio.CapacityLimiter(workers)
        self._cache: dict[str, tuple[tuple[str | None, int], Any]] = {}
        self._text: TextSearcher | None = None

    @property
    def text(self) -> TextSearcher:
        """Text search on the same catalog (the Recommender's, whose words with a photo share
        its model); the model loads on the first query that needs it."""
        if self._text is None:
            shared = getattr(self.recommender, "text", None)  # stand-ins in tests have none
            self._text = (shared if isinstance(shared, TextSearcher) else
                          TextSearcher(self.recommender.store, self.recommender.home))
        return self._text

    @property
    def home(self) -> Home:
        home = self.recommender.home
        if home is None:
            raise NotReadyError("this recommender has no data home")
        return home

    async def compute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """CPU-bound work (decoding, models, search): in a worker thread, a few at a time."""
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self.limiter)

    async def lookup(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Quick blocking calls (catalog lookups): off the event loop, never queued behind
        queries, so /healthz and product pages answer while the CPU is busy."""
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))

    async def cached(self, key: str, compute: Callable[[], T]) -> T:
        """`compute()` once per index version and catalog change (an ingest between two
        indexes: the price range and examples must not offer what was removed)."""
        version = (self.recommender.index_version,
                   await self.compute(self.recommender.store.data_version))
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = await self.compute(compute)
        self._cache[key] = (version, value)
        return value

    async def facets(self) -> schemas.Facets:
        return await self.cached("facets", lambda: _facets(self.recommender))

    async def examples(self) -> list[schemas.Example]:
        return await self.cached("examples", lambda: _examples(self.recommender))


def _facets(recommender: Recommender) -> schemas.Facets:
    raw = recommender.store.facets()
    return schemas.Facets(
        types=sorted(raw.get("types") or []),
        brands=sorted(raw.get("brands") or []),
        metals=sorted(raw.get("metals") or []),
        price_min=raw.get("price_min"),
        price_max=raw.get("price_max"),
        currency=raw.get("currency") or "USD",
    )


def _examples(recommender: Recommender, count: int = EXAMPLES_PER_PAGE) -> list[schemas.Example]:
    """A few products spread over the catalog, types interleaved (ring, necklace, ring, ...)."""
    by_type: dict[str, list] = {}
    for product in sorted(recommender.store.all_products(), key=lambda p: p.id):
        if product.images:
            by_type.setdefault(product.type, []).append(product)
    per_type = max(1, math.ceil(count / max(1, len(by_type))))
    spread = [products[:: max(1, len(products) // per_type)][:per_type]
              for products in by_type.values()]
    chosen = [p for p in chain.from_iterable(zip_longest(*spread)) if p is not None]
    home = recommender.home
    shown = {p.id: home.shown_image(p.images) if home else p.image for p in chosen[:count]}
    return [
        schemas.Example(
            id=p.id, title=p.title, type=p.type, image=shown[p.id],
            image_url=schemas.image_url(shown[p.id]),
        )
        for p in chosen[:count]
    ]


async def _watch_index(shop: Shop, interval_s: float) -> None:
    """Pick up an index that `jewelrec index` published; a broken one never stops the server."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            if await anyio.to_thread.run_sync(shop.recommender.reload_if_changed):
                log.info("now serving index %s", shop.recommender.index_version)
        except JewelrecError as exc:  # said plainly: what to run is in the message
            log.error("could not load the new index (%s); still serving the previous one", exc)
        except Exception:
            log.exception("could not load the new index; still serving the previous one")


# -- request parsing ----------------------------------------------------------------------
def _unprocessable(message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=message)


async def _filters(shop: Shop, asked: FilterParams) -> Filters:
    """One Filters from the request's filter fields (parsed by the one dependency,
    server/params.py); anything a person could get wrong is a 422."""
    min_price, max_price = asked.min_price, asked.max_price
    if min_price is not None and max_price is not None and min_price > max_price:
        raise _unprocessable(
            f"min_price ({min_price:g}) is above max_price ({max_price:g}): swap or widen them"
        )
    types: list[str] | None = None
    if (asked.type or "").strip():
        # the shop's types: one the models know but the shop does not sell would find
        # nothing, so it is a 422 naming those it sells
        known = (await shop.facets()).types
        try:
            types = chosen_types(asked.type, known)
        except ValueError as exc:
            raise _unprocessable(str(exc)) from exc
    try:
        facets = await shop.facets() if asked.brands or asked.metals else None
        return Filters.build(
            min_price=min_price, max_price=max_price, types=types or [],
            brands=chosen_values("brand", asked.brands or [], facets.brands if facets else []),
            metals=chosen_values("metal", asked.metals or [], facets.metals if facets else []),
        )
    except ValueError as exc:
        raise _unprocessable(str(exc)) from exc


def _parse_crop(text: str | None) -> Box | None:
    """"x0,y0,x1,y1" in the photo's pixels -> Box; the photo's size is checked once loaded."""
    if text is None or not text.strip():
        return None
    try:
        return Box.parse(text)
    except ValueError as exc:
        raise _unprocessable(f"crop: {exc}") from exc


def _crop_inside(box: Box, size: tuple[int, int]) -> Box:
    """The crop clipped to the photo (`size`: its own width and height, whatever it was decoded
    at), or a 422 when nothing of it is inside."""
    try:
        return box.crop_in(*size)
    except ValueError as exc:
        raise _unprocessable(f"crop: {exc}") from exc


async def _read_photo(shop: Shop, upload: UploadFile) -> bytes:
    data = await upload.read()
    if len(data) > shop.max_upload_bytes:
        raise HTTPException(status_code=413, detail=_too_large(shop.max_upload_bytes))
    if not data:
        raise _unprocessable("the uploaded photo is empty")
    if not sniff_image_type(data):
        raise HTTPException(
            status_code=415,
            detail=f"that file is not a photo we can read: upload a {ACCEPTED_FORMATS} image",
        )
    return data


def _too_large(limit: int) -> str:
    return f"the photo is larger than {limit / 1_000_000:g} MB: please upload a smaller one"


def _photo_name(filename: str | None) -> str | None:
    if not filename:
        return None
    return filename.replace("\\", "/").rsplit("/", 1)[-1][:200] or None


def _response(
    recommendation: Recommendation, photo_size: tuple[int, int] | None = None
) -> schemas.Recommendation:
    """The answer as `recommend --json` gives it (to_dict: the schema validates and documents
    it, tests/test_one_place_rules.py keeps the two alike), with what a browser needs on top."""
    data = recommendation.to_dict()
    data["results"] = [_result(r) for r in data["results"]]
    return schemas.Recommendation(
        **data,
        photo_size=(
            schemas.PhotoSize(width=photo_size[0], height=photo_size[1]) if photo_size else None
        ),
    )


def _result(result: dict[str, Any]) -> schemas.Result:
    """One result (`asdict` of recommend.Result, whose fields schemas.Result is made of), and
    where this server serves its image."""
    return schemas.Result(**result, image_url=schemas.image_url(result["image"]))


def _product(p: Product, home: Home | None) -> schemas.Product:
    """A catalog product (`Product.to_dict`), and where this server serves its images: those
    whose file is there (`Home.shown_images`; a deleted one would be a broken link)."""
    images = home.shown_images(p.images) if home else list(p.images)
    return schemas.Product(
        **{**p.to_dict(), "images": images}, image_url=schemas.image_url(images[0]),
        image_urls=[schemas.image_url(name) for name in images],
    )


# -- routes ------------------------------------------------------------------------------
def get_shop(request: Request) -> Shop:
    return request.app.state.shop


ShopDep = Annotated[Shop, Depends(get_shop)]
# the filter fields, parsed by one dependency (server/params.py), as form fields with a photo
PhotoFilters = Annotated[FilterParams, Depends(filter_params(
    Form, type_help=f"search this type; default the detected one; {ANY_TYPE!r}: every type",
    brand_help="only these brands", metal_help="only these metals",
))]
SimilarFilters = Annotated[FilterParams, Depends(filter_params(
    Query, type_help=f"default the product's type; {ANY_TYPE!r}: every type",
))]
SearchFilters = Annotated[FilterParams, Depends(filter_params(
    Query, type_help=f"only this type (wins over the words); {ANY_TYPE!r}: any",
))]
PREFER_BRAND_HELP = ("rank this brand's pieces a little higher without leaving others out "
                     "(see jewelrec/search/prefer.py)")
PreferBrand = Annotated[str, Query(max_length=200, description=PREFER_BRAND_HELP)]
WORDS_HELP = (
    "the shopper's words with the photo, e.g. 'but in silver', 'with a pearl', 'thinner chain': "
    "words naming a type, metal, stone, brand or tag of this catalog and a price phrase become "
    "filters (over the photo's own type; the request's own filters win), the rest re-rank the "
    "similar pieces by their titles; the answer's `applied` says what the words applied"
)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorMessage} for code in (400, 404, 413, 415, 422, 500)
}
ERRORS[408] = {"model": schemas.ErrorMessage,
               "description": f"an upload's body did not arrive within "
                              f"{inference.BODY_SECONDS:g} s (server/inference.py)"}
ERRORS[503] = {
    "model": schemas.ErrorMessage,
    "description": "not ready yet, busy (more queries waiting than `serve --max-queue`), or "
                   "the Milvus backend is unreachable: try again after Retry-After seconds",
    "headers": {"Retry-After": {"description": "seconds to wait before retrying (when busy or "
                                               "the backend is down)",
                                "schema": {"type": "integer"}}},
}
# the CPU-bound queries that count towards `serve --max-queue` (see server/inference.py)
QUEUED_PATHS = re.compile(r"^/api/(recommend|search|products/[^/]+/similar)$")

router = APIRouter()


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
def page(request: Request) -> Response:
    return file_answer(request, STATIC_DIR / "index.html", cache_control="no-cache")


@router.head("/healthz", include_in_schema=False)  # uptime checkers often ask with HEAD
@router.get("/healthz", response_model=schemas.Health, tags=["service"], responses={
    503: {"model": schemas.ErrorMessage,
          "description": "the search backend (a Milvus server) cannot answer: photo searches "
                         "fail until it is back"}})
async def healthz(shop: ShopDep) -> schemas.Health:
    count = await shop.lookup(shop.recommender.store.count)
    await shop.lookup(_search_answers, shop.recommender)  # BackendUnavailableError: a 503
    return schemas.Health(products=count, index_version=shop.recommender.index_version,
                          index_refused=getattr(shop.recommender, "refused_version", None))


def _search_answers(recommender: Recommender) -> None:
    """One nearest-neighbour look-up on the served index, so that /healthz fails while its
    backend (a Milvus server) cannot answer: it said "ok" while every photo search failed."""
    index = getattr(recommender, "index", None)
    dim = (getattr(recommender, "index_meta", None) or {}).get("dim")
    if index is None or not dim:
        return
    probe = np.zeros(int(dim), dtype=np.float32)
    probe[0] = 1.0
    index.search(probe, 1)


@router.post(
    "/api/recommend", response_model=schemas.Recommendation, responses=ERRORS, tags=["search"]
)
async def recommend(
    request: Request,
    shop: ShopDep,
    photo: Annotated[UploadFile, File(description=f"the shopper's photo ({ACCEPTED_FORMATS})")],
    asked: PhotoFilters,
    k: Annotated[int, Form(ge=1, le=MAX_K, description="number of results")] = 10,
    crop: Annotated[
        str | None, Form(description="x0,y0,x1,y1 in the photo's pixels: search only this box")
    ] = None,
    prefer_brand: Annotated[
        str | None, Form(max_length=200, description=PREFER_BRAND_HELP)
    ] = None,
    piece: Annotated[
        int | None,
        Form(ge=0, lt=MAX_PIECES, description="search this piece of the photo: an index into "
             "the answer's `pieces` (default 0, the most salient); `crop` wins over it"),
    ] = None,
    q: Annotated[str | None, Form(max_length=MAX_QUERY_CHARS, description=WORDS_HELP)] = None,
) -> schemas.Recommendation:
    """The photo's type and the k most similar products that pass the filters; the pieces of
    jewelry found in the photo, and which of them was searched."""
    sent = len((await request.form()).getlist("photo"))  # the form FastAPI already parsed
    if sent > 1:  # which one to search is a guess: FastAPI takes the last silently
        raise _unprocessable(f"{sent} photos were sent: send one photo per request")
    filters = await _filters(shop, asked)
    box = _parse_crop(crop)
    data = await _read_photo(shop, photo)
    # a large JPEG is decoded reduced; the crop and the answer's boxes stay in the photo's pixels
    decoded = await shop.compute(decode_photo, data, reduce_to=QUERY_SHORT_SIDE,
                                 keep=box.as_tuple() if box is not None else None)
    if box is not None:
        box = _crop_inside(box, decoded.size)
    preferred = (prefer_brand or "").strip()
    # options passed only when asked: stand-ins in tests need not know them
    options: dict[str, Any] = {"prefer_brand": preferred} if preferred else {}
    options.update(shop.ranking)
    if piece is not None:
        options["piece"] = piece
    if q and q.strip():
        options["text"] = q
    try:
        recommendation = await shop.compute(
            shop.recommender.recommend, decoded, k=k, filters=filters, crop=box,
            photo_name=_photo_name(photo.filename), **options,
        )
    except (PieceError, WordsError, FilterError) as exc:
        raise _unprocessable(str(exc)) from exc
    return _response(recommendation, decoded.size)


@router.get(
    "/api/products/{product_id}", response_model=schemas.Product, responses=ERRORS,
    tags=["catalog"],
)
async def product(shop: ShopDep, product_id: str) -> schemas.Product:
    recommender = shop.recommender
    found = await shop.lookup(_found_product, recommender, product_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no product with id {product_id!r}")
    return found


def _found_product(recommender: Recommender, product_id: str) -> schemas.Product | None:
    """The product as the API shows it, or None; its files are looked at, so off the loop."""
    found = recommender.store.get(product_id)
    return _product(found, recommender.home) if found is not None else None


@router.get(
    "/api/products/{product_id}/similar", response_model=schemas.Recommendation,
    responses={**ERRORS, 409: {"model": schemas.ErrorMessage, "description": (
        "the product has no photo of its own, only a placeholder other products show too: "
        "nothing to find pieces like it by")}},
    tags=["search"],
)
async def similar(
    shop: ShopDep,
    product_id: str,
    asked: SimilarFilters,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    q: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS, description=WORDS_HELP)] = None,
) -> schemas.Recommendation:
    """'More like this': products similar to a catalog product (never itself); with `q`,
    changed as the words say ("in silver": pieces like it, in silver)."""
    filters = await _filters(shop, asked)
    if await shop.lookup(shop.recommender.store.get, product_id) is None:
        raise HTTPException(status_code=404, detail=f"no product with id {product_id!r}")
    options: dict[str, Any] = dict(shop.ranking)
    if q and q.strip():
        options["text"] = q  # passed only when given: stand-ins in tests need not know it
    try:
        recommendation = await shop.compute(
            shop.recommender.similar_to_product, product_id, k=k, filters=filters, **options
        )
    except (WordsError, FilterError) as exc:
        raise _unprocessable(str(exc)) from exc
    except UnknownProductError as exc:  # pruned since the lookup above
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except NoPhotoError as exc:  # a placeholder alone: nothing to be like
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    except ImageError as exc:  # the shop's own file, not the shopper's: no 422, no server path
        log.warning("more like this %s: %s", product_id, exc)
        raise HTTPException(
            status_code=503, detail=f"the catalog image of product {product_id!r} cannot be "
            "read right now (the server's log says why): try another product") from exc
    return _response(recommendation)


@router.get("/api/search", response_model=schemas.TextSearch, responses=ERRORS, tags=["search"])
async def search(
    shop: ShopDep,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description=(
        "what the shopper typed, e.g. 'rose gold hoop earrings under 100': words naming a "
        "type, metal, stone, brand or tag of this catalog and a price phrase become filters"
    ))],
    asked: SearchFilters,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    prefer_brand: PreferBrand = "",
) -> schemas.TextSearch:
    """Products matching words: BM25 over the catalog's text fused with title vectors."""
    filters = await _filters(shop, asked)
    version = shop.recommender.index_version
    try:
        answer = await shop.compute(shop.text.search, q, k=k, filters=filters,
                                    prefer_brand_name=prefer_brand, index_version=version,
                                    **shop.ranking)
    except ValueError as exc:
        raise _unprocessable(str(exc)) from exc
    return _text_response(answer)


def _text_response(answer: TextAnswer) -> schemas.TextSearch:
    data = answer.to_dict()
    return schemas.TextSearch(
        query=data["query"],
        applied=schemas.AppliedFilters(**data["applied"]),
        ranked_by=data["ranked_by"],
        results=[_result(r) for r in data["results"]],
        index_version=data["index_version"],
    )


@router.get("/api/facets", response_model=schemas.Facets, tags=["catalog"])
async def facets(shop: ShopDep) -> schemas.Facets:
    """What the filters can take: types, brands, metals, the price range and currency."""
    return await shop.facets()


@router.get("/api/examples", response_model=list[schemas.Example], tags=["catalog"])
async def examples(shop: ShopDep) -> list[schemas.Example]:
    """A few catalog photos across types, to try the search without a photo of one's own."""
    return await shop.examples()


@router.api_route("/images/{name:path}", methods=["GET", "HEAD"], include_in_schema=False)
def image(shop: ShopDep, name: str, request: Request) -> Response:
    """Managed catalog images, and nothing else: names that leave images/ are 404s, and so are
    names no file system takes (too long: an OSError was a 500 with a traceback logged)."""
    try:
        path = shop.home.image_path(name)
        if path.is_file():
            return file_answer(request, path, cache_control=IMMUTABLE)
    except (ValueError, OSError):  # outside images/, gone meanwhile, a name the OS refuses
        pass
    raise HTTPException(status_code=404, detail="no such image")


# -- error handlers ----------------------------------------------------------------------
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    if request.method == "POST" and not request.headers.get("content-type", "").lower(
    ).startswith("multipart/form-data"):  # a raw photo or JSON: "photo: Field required" misled
        return JSONResponse({"detail": "send the photo as multipart/form-data, in a field "
                             "named 'photo' (other fields beside it), not as the request body "
                             f"({request.headers.get('content-type') or 'no content type'})"},
                            415)
    problems = [
        {"loc": [str(part) for part in e.get("loc", ())], "msg": _said(e.get("msg", "invalid"))}
        for e in exc.errors()
    ]
    sentence = "; ".join(
        f"{_field_named(e.get('loc', ()))}: {p['msg']}"
        for e, p in zip(exc.errors(), problems, strict=True)
    )
    return JSONResponse({"detail": sentence or "invalid request", "errors": problems}, 422)


def _field_named(loc: tuple | list) -> str:
    """The field an error is about as a person names it: ("body", "brand", 0) is brand[0]."""
    names = "".join(f"[{part}]" if isinstance(part, int) else f".{part}"
                    for part in loc[1:] if part is not None)  # loc[0]: body, query, path
    return names.lstrip(".") or "request"


def _said(msg: str) -> str:
    """A validator's message in a shopper's words where it speaks Python (a text field sent
    where the photo file goes: "Expected UploadFile, received: <class 'str'>")."""
    return "expected a file upload, got text" if "Expected UploadFile" in msg else msg


async def _jewelrec_error(request: Request, exc: JewelrecError) -> JSONResponse:
    if isinstance(exc, BackendUnavailableError):  # Milvus down: the request was fine, retry
        return JSONResponse({"detail": str(exc)}, status_code=503,
                            headers={"Retry-After": str(BACKEND_RETRY_S)})
    status = 422 if isinstance(exc, ImageError) else 503 if isinstance(exc, NotReadyError) else 400
    return JSONResponse({"detail": str(exc)}, status_code=status)


# -- the app -----------------------------------------------------------------------------
def create_app(
    home: Home | str | Path | None = None,
    *,
    embedder: str | None = None,
    classifier: str | None = None,
    backend: str | None = None,
    milvus_uri: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    recommender: Recommender | None = None,
    reload_interval_s: float = RELOAD_INTERVAL_S,
    workers: int | None = None,
    allow_origins: Sequence[str] = (),
    group_variants: bool = False,
    max_queue: int = inference.DEFAULT_MAX_QUEUE,
    batch_window_s: float = inference.DEFAULT_WINDOW_S,
    max_batch: int = inference.DEFAULT_MAX_BATCH,
    model_workers: int = inference.DEFAULT_WORKERS,
) -> FastAPI:
    """The web page and the API for one data home.

    The Recommender is opened in the lifespan (once, at start-up) unless one is passed in.
    `allow_origins`: shop sites whose pages may show the widget (CORS on its route only).
    `group_variants`: photo, text and 'more like this' results show one product per variant
    group.
    `max_queue`: photo and text queries in the server at once (running or waiting) before the
    next gets a fast 503 with Retry-After; `batch_window_s`, `max_batch`, `model_workers`: the
    micro-batching of the models and how many batches run at once (server/inference.py).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = recommender or await anyio.to_thread.run_sync(
            partial(
                Recommender.open, home, embedder=embedder, classifier=classifier,
                backend=backend, milvus_uri=milvus_uri,
            )
        )
        # one model runner for all requests; enough worker threads to prepare the photos of
        # full batches while others run (threads waiting for the models use no CPU)
        executor = inference.InferenceExecutor(window_s=batch_window_s, max_batch=max_batch,
                                               workers=model_workers)
        if isinstance(loaded, Recommender):  # stand-ins in tests run their own "models"
            loaded.inference = executor
        app.state.shop = Shop(
            loaded, max_upload_bytes=max_upload_bytes,
            workers=workers or (os.cpu_count() or 1) + executor.workers * max_batch,
            group_variants=group_variants,
        )
        watcher = asyncio.create_task(_watch_index(app.state.shop, reload_interval_s))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if getattr(loaded, "inference", None) is executor:
                loaded.inference = None
            await anyio.to_thread.run_sync(executor.close)

    app = FastAPI(
        title="jewelrec",
        summary="Photo in, visually similar jewelry from the catalog in your price range out.",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # FastAPI's Swagger UI needs a CDN and an inline script: embed.docs
        redoc_url=None,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(InternalErrors),
            Middleware(embed.WidgetCORS, origins=[embed.check_origin(o) for o in allow_origins]),
            Middleware(
                BodySizeLimit,
                max_bytes=max_upload_bytes + MULTIPART_SLACK_BYTES,
                message=_too_large(max_upload_bytes),
            ),
            # inside the size limit: it reads a query's body whole before queueing it
            Middleware(inference.QueueLimit, max_queue=max_queue, paths=QUEUED_PATHS.match),
        ],
        exception_handlers={
            RequestValidationError: _validation_error,
            JewelrecError: _jewelrec_error,
        },
    )
    app.include_router(router)
    app.include_router(embed.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def serve(
    home: Home | str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    embedder: str | None = None,
    classifier: str | None = None,
    backend: str | None = None,
    milvus_uri: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    allow_origins: Sequence[str] = (),
    group_variants: bool = False,
    max_queue: int = inference.DEFAULT_MAX_QUEUE,
    processes: int | None = None,
) -> None:
    """Run the server until interrupted (`jewelrec serve`), in `processes` processes
    (`--workers`; default one per core, at most 4: server/processes.py).

    The port is bound first, then the Recommender opened, before uvicorn starts: a port in use
    or a home that is not ready yet fails with one clear line rather than a start-up traceback
    (with several processes the home is opened once first, in a short-lived process, to
    check). numpy's BLAS runs on one thread here, leaving the cores to the models
    (server/inference.py).
    """
    import uvicorn

    from jewelrec.server.listener import listening_socket
    from jewelrec.server.processes import (
        check_processes,
        default_processes,
        opened_home_products,
        serve_in_processes,
    )

    if max_queue < 1:
        raise JewelrecError(f"--max-queue {max_queue}: expected at least 1")
    processes = check_processes(default_processes() if processes is None else processes)
    inference.pin_blas_threads()
    allow_origins = [embed.check_origin(o) for o in allow_origins]  # before the slow part
    with listening_socket(host, port) as sock:
        where = f"at http://{host}:{sock.getsockname()[1]}/"
        if processes > 1:
            home_root = str((home if isinstance(home, Home) else Home(home)).root.resolve())
            opening = dict(home=home_root, embedder=embedder, classifier=classifier,
                           backend=backend, milvus_uri=milvus_uri)
            products = opened_home_products(opening)  # each process opens its own
            print(f"jewelrec: serving {products} products {where} from {processes} processes")
            serve_in_processes(
                dict(opening, max_upload_bytes=max_upload_bytes, allow_origins=allow_origins,
                     group_variants=group_variants, max_queue=max_queue),
                sock, processes)
            return
        recommender = Recommender.open(
            home, embedder=embedder, classifier=classifier, backend=backend,
            milvus_uri=milvus_uri,
        )
        app = create_app(home, max_upload_bytes=max_upload_bytes, recommender=recommender,
                         allow_origins=allow_origins, group_variants=group_variants,
                         max_queue=max_queue)
        print(f"jewelrec: serving {recommender.store.count()} products {where}")
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=sock.getsockname()[1],
                                               log_level="info", server_header=False))
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn shut down already
            server.run(sockets=[sock])
        if not server.started:
            raise JewelrecError("the server did not start: see the messages above")
