"""Image + words (issue 12, item 3): "like this but in silver", "with a pearl", "thinner chain".

The shopper's words are read by the text parser (text/query.py) against this catalog's values.
Words naming a type, metal, stone, brand or tag, and a price phrase, become filters; they
override what the photo alone would choose (its detected type; its own metal, which a photo
query never filters by), while the caller's explicit filters still win, as in text search.
Stones and tags, which the vector index does not hold, and the values the words rule out
("without pearls"), become the ids to leave out, excluded before ranking: filters stay before
ranking, so k results come whenever k products pass.

The words no filter took ("thinner chain") re-rank the visual candidates: RERANK_POOL of them by
cosine + TEXT_WEIGHT x the cosine between the words' MiniLM vector and the product's title
vector (from the index version that answers). Both are cosines; the weight keeps the photo the
main signal (visual scores of good matches spread over about 0.2, title cosines of related and
unrelated titles differ by about 0.3). Reported scores stay visual cosines. The filler of such
requests ("like this but", "the same one") ranks nothing, so "but in silver" is a pure filter
and the silver pieces come in visual order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from jewelrec.search.filters import Filters
from jewelrec.text.query import MAX_QUERY_CHARS, parse_query, singular, words_of
from jewelrec.text.search import TextSearcher, combine, sql_condition

if TYPE_CHECKING:
    from jewelrec.recommend import Result

TEXT_WEIGHT = 0.5
RERANK_POOL = 50  # visual candidates the words re-rank (at least 3k)
FILLER = frozenset(
    "but like this these those that same similar just only instead also please want show "
    "find looking one ones version kind style".split()
)


class WordsError(ValueError):
    """Words given with a photo that cannot be read (said in words: the API answers 422)."""


@dataclass(frozen=True)
class PhotoWords:
    """What a photo query's words ask for: the filters to search with, what they applied (the
    shape of text search's `applied`), the words left to rank by, and the type / metal /
    stone values asked for (evidence for the results' reasons)."""

    query: str
    filters: Filters
    applied: dict[str, Any]
    rank_text: str  # "" when every word was a filter or filler
    asked: tuple[str, ...]

    def pool(self, k: int) -> int:
        """Visual candidates to fetch for k results: more when the words re-rank them."""
        return max(RERANK_POOL, 3 * k) if self.rank_text else k


def read_words(
    searcher: TextSearcher, query: str, filters: Filters | None, index_version: str | None
) -> PhotoWords:
    """The words of a photo query read against the catalog (WordsError, in words, for words
    that cannot be read: empty, too long, a price range that holds nothing, a catalog store
    without its text index)."""
    query = " ".join(str(query).split())
    if not query:
        raise WordsError("the words are empty: say what should change, e.g. 'in silver'")
    if len(query) > MAX_QUERY_CHARS:
        raise WordsError(f"the words are longer than {MAX_QUERY_CHARS} characters")
    try:
        vocabulary = searcher.vocabulary(index_version)
        parsed = parse_query(query, vocabulary)
        merged, applied = combine(filters or Filters(), parsed, vocabulary.catalog_values("types"))
    except WordsError:
        raise
    except ValueError as exc:
        raise WordsError(str(exc)) from exc
    if parsed.values("stones") or parsed.values("tags") or parsed.excluded:
        # the stone / tag conditions and what the words ruled out, alone
        where, params = sql_condition(Filters(), parsed)
        keep = set(searcher.store.ids_where(where, params))
        lacking = {pid for pid in searcher.store.ids() if pid not in keep}
        merged = replace(merged, exclude_ids=merged.exclude_ids | lacking)
    rank_words = [w for w in parsed.free_terms if w not in FILLER]
    asked = tuple(applied["types"]) + tuple(applied["metals"]) + tuple(applied["stones"])
    return PhotoWords(query, merged, applied, " ".join(rank_words), asked)


def rerank(
    results: Sequence[Result], words: PhotoWords, searcher: TextSearcher,
    index_version: str | None,
) -> tuple[list[Result], list[str]]:
    """The visual candidates re-ranked by the words left to rank by, and what ranked them
    ("photo", then "title vectors" when the words did); a title that holds one of those words
    says so in its reasons."""
    vectors = searcher.title_vectors(index_version) if words.rank_text else None
    if vectors is None:  # nothing to rank by, or an index built without the text model
        return list(results), ["photo"]
    query = searcher.encoder().embed([words.rank_text])[0]
    wanted = set(words_of(words.rank_text))
    scored = []
    for i, result in enumerate(results):
        row = vectors.row_of.get(result.id)
        similarity = float(vectors.matrix[row] @ query) if row is not None else 0.0
        scored.append((result.score + TEXT_WEIGHT * similarity, i, _with_word_reason(
            result, wanted)))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [result for _, _, result in scored], ["photo", "title vectors"]


def _with_word_reason(result: Result, wanted: set[str]) -> Result:
    """`result` with '"<word>" in its title' when its title holds one of the words (also as a
    plural: "pearls" for "pearl")."""
    title = set(words_of(result.title))
    title |= {s for s in map(singular, title) if s}
    found = sorted(w for w in wanted if w in title or singular(w) in title)
    if not found:
        return result
    return replace(result, why=[*result.why, f"“{found[0]}” in its title"])
