"""Text search over the catalog: `jewelrec search "rose gold hoop earrings"`, GET /api/search.

words -> parse (facet words and a price phrase become filters, jewelrec/text/query.py) ->
    BM25 over the catalog store's FTS5 table  ┐
    title vectors (all-MiniLM-L6-v2) nearest  ┴─ reciprocal-rank fusion -> prefer_brand -> k
Both lists are taken among the products that pass the filters (filters before ranking, as for
photos). Title vectors rank only when some word named no filter: "silver hoop earrings" in a
catalog with those values is all filters, and BM25 orders what passes them. The text model is
loaded on the first query that needs it, so a server that never gets one never pays for it;
title vectors come from the index version being served.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from jewelrec.catalog.store import CatalogStore
from jewelrec.errors import NotReadyError
from jewelrec.home import Home
from jewelrec.recommend import Result
from jewelrec.search import variants, versions
from jewelrec.search.filters import Filters, checked_k, spelled_as_catalog
from jewelrec.search.prefer import TEXT_BRAND_BONUS, prefer_brand
from jewelrec.text.fusion import reciprocal_rank_fusion
from jewelrec.text.minilm import MiniLM
from jewelrec.text.query import MAX_QUERY_CHARS, ParsedQuery, Vocabulary, parse_query
from jewelrec.text.vectors import TitleVectors

log = logging.getLogger(__name__)
CANDIDATES = 100  # each list contributes its best max(CANDIDATES, 3k) to the fusion


@dataclass
class TextAnswer:
    """The public JSON shape (`search --json`, GET /api/search): the query, the filters its
    words applied, and results shaped like recommend's."""

    query: str
    applied: dict[str, Any]
    results: list[Result]
    index_version: str | None = None
    ranked_by: list[str] = field(default_factory=list)  # "words" (BM25), "title vectors"

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "applied": self.applied,
            "ranked_by": self.ranked_by,
            "results": [asdict(r) for r in self.results],
            "index_version": self.index_version,  # as the API's answer carries it
        }


@dataclass(frozen=True)
class _CatalogState:
    """What is read once per (index version, catalog change): vocabulary and title vectors."""

    key: tuple[Any, ...]
    vocabulary: Vocabulary
    vectors: TitleVectors | None


class TextSearcher:
    """Answers text queries for one home; safe to share between threads."""

    def __init__(
        self, store: CatalogStore, home: Home | None = None, *,
        encoder: Callable[[], MiniLM] = MiniLM,
    ) -> None:
        self.store = store
        self.home = home
        self._make_encoder = encoder
        self._encoder: MiniLM | None = None
        self._lock = threading.Lock()
        self._state: _CatalogState | None = None

    @classmethod
    def open(cls, home: Home | str, **kwargs: Any) -> TextSearcher:
        """A searcher on a home's catalog (opened read-only: searching never writes)."""
        home = home if isinstance(home, Home) else Home(home)
        return cls(CatalogStore.open(home, read_only=True), home, **kwargs)

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        filters: Filters | None = None,
        prefer_brand_name: str | None = None,
        index_version: str | None = None,
        group_variants: bool = False,
    ) -> TextAnswer:
        """The k products that best match `query` among those passing `filters` and the
        filters its words name (`group_variants`: the best of each variant group only, see
        jewelrec/search/variants.py). Raises ValueError, in words, for a query that cannot be
        read."""
        k = checked_k(k)
        query = " ".join(str(query).split())
        if not query:
            raise ValueError("the query is empty: say what you are looking for")
        if len(query) > MAX_QUERY_CHARS:
            raise ValueError(f"the query is longer than {MAX_QUERY_CHARS} characters")
        version = index_version
        if version is None and self.home is not None:
            version = versions.current_version(self.home)
        state = self._catalog_state(version)
        parsed = parse_query(query, state.vocabulary)
        filters = spelled_as_catalog(filters or Filters(), self.store.facets())
        merged, applied = combine(filters, parsed,
                                  state.vocabulary.catalog_values("types"))
        where, params = sql_condition(merged, parsed)
        want = max(CANDIDATES, 3 * k) * (variants.CANDIDATES_PER_RESULT if group_variants else 1)
        ranked_by: list[str] = []
        rankings: list[list[str]] = []
        if parsed.terms:
            ranked_by.append("words")
            rankings.append([pid for pid, _ in self.store.search_text(
                parsed.terms, where=where, params=params, limit=want)])
        # title vectors serve the words no filter took ("circle", "wrist"); a query whose
        # every word became a filter is ranked by BM25 alone (saves the model's ~10 ms)
        if state.vectors is not None and parsed.free_terms:
            ranked_by.append("title vectors")
            allowed = None if where == "1" else self.store.ids_where(where, params)
            vector = self.encoder().embed([parsed.text])[0]
            rankings.append(state.vectors.nearest(vector, want, allowed))
        elif parsed.free_terms and version is not None:
            # said, so that "no product matches" is not taken for the catalog's last word
            applied["notes"].append(
                f"{' '.join(parsed.free_terms)!r} matched by spelling only: this index has "
                "no readable title vectors (run `jewelrec index` to rebuild them)")
        if not rankings:  # only a price phrase: every product in range, cheapest first
            ranked_by.append("price")
            rankings.append(self.store.ids_where(where, params, order="price")[:want])
        fused = reciprocal_rank_fusion(rankings)[: want]
        if not parsed.free_terms and len(fused) < want and "price" not in ranked_by:
            # every word was a filter: whatever passes them fits ("golden choker" where no
            # title says "choker"), after those the words also found, cheapest first
            seen = {pid for pid, _ in fused}
            rest = [pid for pid in self.store.ids_where(where, params, order="price")
                    if pid not in seen]
            fused += [(pid, 0.0) for pid in rest[: want - len(fused)]]
        products = self.store.get_many(pid for pid, _ in fused)
        shown = self.home.shown_image if self.home is not None else (lambda images: images[0])
        results = [Result.from_product(products[pid], shown(products[pid].images), score)
                   for pid, score in fused if pid in products and products[pid].images]
        results = prefer_brand(results, prefer_brand_name, TEXT_BRAND_BONUS)
        if group_variants:
            results = variants.one_per_group(results, products)
        results = results[:k]
        return TextAnswer(query, applied, results, version, ranked_by)

    def vocabulary(self, index_version: str | None) -> Vocabulary:
        """The catalog's values that words may name (refreshed when the catalog changes)."""
        return self._catalog_state(index_version).vocabulary

    def title_vectors(self, index_version: str | None) -> TitleVectors | None:
        """The title vectors of that index version (None: it was built without the model)."""
        return self._catalog_state(index_version).vectors

    def encoder(self) -> MiniLM:
        """The text model, loaded on first use (once, whichever thread asks first)."""
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = self._make_encoder()
        return self._encoder

    def _catalog_state(self, version: str | None) -> _CatalogState:
        key = (version, self.store.data_version())
        state = self._state
        if state is not None and state.key == key:
            return state
        vectors = None
        if version is not None and self.home is not None:
            try:  # words alone still search when the index's folder is gone or half-written
                vectors = TitleVectors.load(versions.version_dir(self.home, version))
            except NotReadyError as exc:
                log.warning("no title vectors: %s", exc)
        if not self.store.has_text_index():
            raise ValueError(
                f"the catalog store {self.store.path} has no text index yet: run `jewelrec "
                "index` (or any ingest) once with write access to the home"
            )
        state = _CatalogState(key, Vocabulary.build(self.store.distinct_words()), vectors)
        self._state = state  # one reference swapped: readers see the old or the new state
        return state


def combine(explicit: Filters, parsed: ParsedQuery,
            every_type: frozenset[str] = frozenset()) -> tuple[Filters, dict[str, Any]]:
    """The caller's filters with the query's words added, and what the words applied. A facet
    the caller fixed is the caller's (its words are not applied); prices take the tighter.
    Types covering `every_type` (the catalog's: a shopper's "any") fix nothing: "All types"
    with "but a necklace" searches necklaces."""
    applied: dict[str, Any] = {f: [] for f in ("types", "metals", "stones", "brands", "tags")}
    any_type = bool(every_type) and explicit.types >= every_type
    fixed = {"types": frozenset() if any_type else explicit.types, "metals": explicit.metals,
             "brands": explicit.brands}
    chosen: dict[str, frozenset[str]] = {}
    for facet in ("types", "metals", "brands"):
        words = parsed.values(facet)
        if words and not fixed[facet]:
            chosen[facet] = frozenset(words)
            applied[facet] = list(words)
        else:
            chosen[facet] = getattr(explicit, facet)  # the caller's ("any" included)
    applied["stones"] = list(parsed.values("stones"))
    applied["tags"] = list(parsed.values("tags"))
    max_price, min_price = explicit.max_price, explicit.min_price
    applied["max_price"] = applied["min_price"] = None
    if parsed.max_price is not None and (max_price is None or parsed.max_price < max_price):
        max_price = applied["max_price"] = parsed.max_price
    if parsed.min_price is not None and (min_price is None or parsed.min_price > min_price):
        min_price = applied["min_price"] = parsed.min_price
    applied["notes"] = list(parsed.notes)
    # what the words ruled out ("without pearls"): `sql_condition` keeps those products out
    applied["excluded"] = {facet: list(values) for facet, values in parsed.excluded.items()}
    if min_price is not None and max_price is not None and min_price > max_price:
        raise ValueError(f"no price is both at least {min_price:g} and at most {max_price:g}")
    merged = Filters(min_price, max_price, chosen["types"], chosen["brands"], chosen["metals"],
                     explicit.exclude_ids)
    return merged, applied


EXCLUDABLE_COLUMNS = {"types": "type", "metals": "metal", "stones": "stone", "brands": "brand"}


def sql_condition(filters: Filters, parsed: ParsedQuery) -> tuple[str, list[Any]]:
    """The filters as an SQL condition on the products table `p` (values as parameters)."""
    parts: list[str] = []
    params: list[Any] = []

    def one_of(column: str, values: Iterable[str]) -> None:
        values = sorted(values)
        if values:
            parts.append(f"{column} IN ({','.join('?' * len(values))})")
            params.extend(values)

    if filters.min_price is not None:
        parts.append("p.price >= ?")
        params.append(filters.min_price)
    if filters.max_price is not None:
        parts.append("p.price <= ?")
        params.append(filters.max_price)
    one_of("p.type", filters.types)
    one_of("p.brand", filters.brands)
    one_of("p.metal", filters.metals)
    one_of("p.stone", parsed.values("stones"))
    tags = sorted(parsed.values("tags"))  # any of them, as for every facet ("hoops or studs")
    if tags:
        parts.append(f"EXISTS (SELECT 1 FROM json_each(p.tags) WHERE value IN "
                     f"({','.join('?' * len(tags))}))")
        params.extend(tags)
    for facet, values in parsed.excluded.items():  # a product without the value passes
        values = sorted(values)
        marks = ",".join("?" * len(values))
        if facet == "tags":
            parts.append(f"NOT EXISTS (SELECT 1 FROM json_each(p.tags) WHERE value IN ({marks}))")
        else:
            column = f"p.{EXCLUDABLE_COLUMNS[facet]}"
            parts.append(f"({column} IS NULL OR {column} NOT IN ({marks}))")
        params.extend(values)
    if filters.exclude_ids:
        ids = sorted(filters.exclude_ids)
        parts.append(f"p.id NOT IN ({','.join('?' * len(ids))})")
        params.extend(ids)
    return (" AND ".join(parts) or "1"), params
