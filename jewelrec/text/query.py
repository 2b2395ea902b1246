"""A shopper's words -> filters this catalog understands, plus the words left to rank by.

"rose gold hoop earrings under 100" against a catalog that has the metal "rose gold", the type
"earring" and the tag "hoop" reads as metal = rose gold, type = earring, tag = hoop, price <= 100.
Only values THIS catalog has become filters (its facets and tags), so a word never filters a
catalog down to nothing it could not hold. Matching is on whole words and phrases, longest
first ("rose gold" before "gold"), plurals read as singulars ("rubies", "hoops"), with a few
plain synonyms ("golden" -> gold, "pendant" -> necklace: the type words of the feed rules). A
price phrase ("under 100", "below $80", "less than 50", "over 200", "between 50 and 100")
becomes a price bound; one with a negative price ("under -5") is left out and said so (`notes`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from jewelrec.catalog.feeds.type_rules import DEFAULT_WORDS as TYPE_WORDS
from jewelrec.catalog.prices import plain_amount

MAX_QUERY_CHARS = 500
# Facets whose values words may name, in the order a phrase naming several is read.
FACETS = ("types", "metals", "stones", "brands", "tags")
# synonym -> the catalog value it stands for (used only when the catalog has that value)
METAL_SYNONYMS = {
    "golden": "gold", "gilded": "gold", "yellow gold": "gold", "silvery": "silver",
    "sterling": "silver", "sterling silver": "silver", "pink gold": "rose gold",
    "rosegold": "rose gold", "rose golden": "rose gold",
}
TAG_SYNONYMS = {"circle": "hoop", "circles": "hoop", "creole": "hoop", "creoles": "hoop"}
STOPWORDS = frozenset(
    "a an and or the with in of for to on by my me i some any that is it its".split()
)

# longest first, in the notations `plain_amount` reads ("1,299.50", "1.299,50", "19,99"); a
# number running on into letters or more digits ("1e309", "5k", "1.2.3") is no price this
# parser can read: left as words, never misread as 1 or 5.
# A minus sign ("-5", "$-5", "-$5") is read so that the phrase can be named as not understood.
_NUMBER = (r"([-−]\s*)?[$€£]?\s*([-−]\s*)?"
           r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?:\.\d{3})+,\d+|\d+(?:[.,]\d+)?)\s*"
           r"(?:dollars?|euros?|bucks|usd|eur|gbp|\$|€|£)?(?!\w|[.,]\d)")
_MAX_PRICE = re.compile(
    r"(?:\b(?:under|below|less than|cheaper than|up to|at most|max(?:imum)?|no more than)\s+"
    r"|<=?\s*)" + _NUMBER, re.IGNORECASE)
_MIN_PRICE = re.compile(
    r"(?:\b(?:over|above|more than|at least|min(?:imum)?)\s+|>=?\s*)" + _NUMBER, re.IGNORECASE)
_BETWEEN = re.compile(r"\bbetween\s+" + _NUMBER + r"\s+and\s+" + _NUMBER, re.IGNORECASE)
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_PHRASE_WORDS = 4


def words_of(text: str) -> list[str]:
    """Lower-case words, accents kept, punctuation dropped ("Lumen & Co" -> lumen, co)."""
    folded = unicodedata.normalize("NFKC", text).casefold().replace("_", " ")
    return _WORD.findall(folded)


def singular(word: str) -> str | None:
    """The plain English singular of a plural word, or None ("rubies" -> "ruby")."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith("ss"):
        return None
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    return word[:-1]


@dataclass(frozen=True)
class Vocabulary:
    """Phrase (words joined by one space) -> (facet, the catalog's value), for one catalog:
    its own values in `exact`, plain synonyms of them in `synonyms` (tried second)."""

    exact: Mapping[str, tuple[str, str]]
    synonyms: Mapping[str, tuple[str, str]]

    @classmethod
    def build(cls, values: Mapping[str, Iterable[str]]) -> Vocabulary:
        """From the catalog's values per facet (`CatalogStore.distinct_words()`)."""
        exact: dict[str, tuple[str, str]] = {}
        synonyms: dict[str, tuple[str, str]] = {}

        def add(table: dict, phrase_words: Sequence[str], facet: str, value: str) -> None:
            if phrase_words and len(phrase_words) <= MAX_PHRASE_WORDS:
                table.setdefault(" ".join(phrase_words), (facet, value))

        catalog = {facet: list(values.get(facet) or ()) for facet in FACETS}
        for facet in FACETS:  # a facet earlier in FACETS wins a phrase naming several
            for value in catalog[facet]:
                add(exact, words_of(value), facet, value)
        by_words = {f: {" ".join(words_of(v)): v for v in catalog[f]} for f in FACETS}
        for type_, words in TYPE_WORDS.items():
            if type_ in by_words["types"]:
                for word in words:
                    add(synonyms, words_of(word), "types", by_words["types"][type_])
        for facet, table in (("metals", METAL_SYNONYMS), ("tags", TAG_SYNONYMS)):
            for word, target in table.items():
                if target in by_words[facet]:
                    add(synonyms, words_of(word), facet, by_words[facet][target])
        return cls(exact, synonyms)

    def lookup(self, words: Sequence[str]) -> tuple[str, str] | None:
        """The facet and value a phrase names (its last word also read as a singular): the
        catalog's own values first, then synonyms ("pendants" is the tag pendant where the
        catalog has one, else the type necklace)."""
        if not words:
            return None
        forms = [" ".join(words)]
        last = singular(words[-1])
        if last:
            forms.append(" ".join([*words[:-1], last]))
        for table in (self.exact, self.synonyms):
            for form in forms:
                if form in table:
                    return table[form]
        return None


@dataclass(frozen=True)
class ParsedQuery:
    """What the words asked for: filters by facet, price bounds and the words to rank by."""

    text: str  # the query without its price phrase: what BM25 and the title vectors rank by
    terms: tuple[str, ...]  # its words, stop words dropped
    free_terms: tuple[str, ...] = ()  # those no filter took: what only ranking can serve
    facets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    max_price: float | None = None
    min_price: float | None = None
    notes: tuple[str, ...] = ()  # price phrases read but not understood, said to the shopper

    def values(self, facet: str) -> tuple[str, ...]:
        return tuple(self.facets.get(facet, ()))


def parse_query(query: str, vocabulary: Vocabulary) -> ParsedQuery:
    """Read the filters out of a query (see the module docstring)."""
    notes: list[str] = []
    text, ranges = _take_prices(query, _BETWEEN, notes)
    text, highs = _take_prices(text, _MAX_PRICE, notes)
    text, lows = _take_prices(text, _MIN_PRICE, notes)
    # "between 100 and 50": a shopper naming a range names its two ends, in whichever order
    # they come to mind; the smaller is the floor (the range holds what they meant, not nothing)
    ceilings = [n for (n,) in highs] + [max(ends) for ends in ranges]
    floors = [n for (n,) in lows] + [min(ends) for ends in ranges]
    max_price = min(ceilings, default=None)  # several bounds: the tightest
    min_price = max(floors, default=None)
    words = words_of(text)
    found: dict[str, list[str]] = {}
    taken: set[int] = set()  # positions of words that named a filter
    i = 0
    while i < len(words):
        for n in range(min(MAX_PHRASE_WORDS, len(words) - i), 0, -1):
            hit = vocabulary.lookup(words[i:i + n])
            if hit is not None and not (n == 1 and words[i] in STOPWORDS):
                facet, value = hit
                if value not in found.setdefault(facet, []):
                    found[facet].append(value)
                taken.update(range(i, i + n))
                i += n
                break
        else:
            i += 1
    return ParsedQuery(
        text=" ".join(text.split()),
        terms=tuple(w for w in dict.fromkeys(words) if w not in STOPWORDS),
        free_terms=tuple(dict.fromkeys(
            w for j, w in enumerate(words) if j not in taken and w not in STOPWORDS)),
        facets={facet: tuple(values) for facet, values in found.items()},
        max_price=max_price,
        min_price=min_price,
        notes=tuple(notes),
    )


def _take_prices(text: str, pattern: re.Pattern,
                 notes: list[str]) -> tuple[str, list[list[float]]]:
    """The numbers of each price phrase `pattern` finds, and the text without the phrases. A
    phrase with a negative number ("under -5") is no price a shop has: rather than filter every
    product away or drop it unsaid, it is left out and named in `notes`."""
    found: list[list[float]] = []
    for match in pattern.finditer(text):
        groups = match.groups()  # (sign, sign after the currency, digits) per number
        numbers = [_price(*groups[i:i + 3]) for i in range(0, len(groups), 3)]
        if any(n < 0 for n in numbers):
            notes.append(f"'{' '.join(match.group(0).split())}': a price below 0 was not "
                         "understood; no price filter taken from it")
        else:
            found.append(numbers)
    return pattern.sub(" ", text), found


def _price(sign: str | None, sign_after_currency: str | None, digits: str) -> float:
    """'1,250.50' -> 1250.5 and '12,5' -> 12.5; negative when a minus sign was written."""
    value = float(plain_amount(digits))
    return -value if sign or sign_after_currency else value
