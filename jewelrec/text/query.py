"""A shopper's words -> filters this catalog understands, plus the words left to rank by.

"rose gold hoop earrings under 100" against a catalog that has the metal "rose gold", the type
"earring" and the tag "hoop" reads as metal = rose gold, type = earring, tag = hoop, price <= 100.
Only values THIS catalog has become filters (its facets and tags), so a word never filters a
catalog down to nothing it could not hold. Matching is on whole words and phrases, longest
first ("rose gold" before "gold"), plurals read as singulars ("rubies", "hoops"), with a few
plain synonyms ("golden" -> gold, "pendant" -> necklace: the type words of the feed rules). A
price phrase ("under 100", "below $80", "less than 50", "over 200", "between 50 and 100",
"not more than 200", "$50 to $100", "50-100") becomes a price bound; one with a negative price
("under -5") is left out and said so (`notes`). A number followed by a unit ("18 inch", "2 ct")
is a size, never a price. A value named after a negation ("without diamonds", "no pearls",
"not gold", "nickel free") rules that value out (`excluded`) instead of choosing it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
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
# Metals named with a word of another but of another colour ("white gold" looks like silver):
# where the catalog lacks them they are left as words to rank by, never read as the metal their
# last word names. (A warm gold such as "pink gold" still reads as gold where rose gold is not
# sold: the nearest colour the shop has.)
OTHER_METALS = frozenset({"white gold", "black gold", "black silver", "oxidised silver",
                          "oxidized silver"})
STOPWORDS = frozenset(
    "a an and or but the with in of for to on by my me i some any that is it its".split()
)

# longest first, in the notations `plain_amount` reads ("1,299.50", "1.299,50", "19,99"); a
# number running on into letters or more digits ("1e309", "5k", "1.2.3") is no price this
# parser can read: left as words, never misread as 1 or 5.
# A minus sign ("-5", "$-5", "-$5") is read so that the phrase can be named as not understood.
# A size, not a price, follows: "under 18 inches", "16-18 in", "over 2 ct".
_UNIT = (r"(?!\s*(?:inch(?:es)?\b|in\b(?!\s+\w)|cm\b|mm\b|carats?\b|karats?\b|ct\b|ctw\b"
         r"|kt\b|grams?\b|g\b|[\"”″]))")
_NUMBER = (r"([-−]\s*)?[$€£]?\s*([-−]\s*)?"
           r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?:\.\d{3})+,\d+"
           r"|\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:[.,]\d+)?|\d+(?:[.,]\d+)?)\s*"
           r"(?:dollars?|euros?|bucks|usd|eur|gbp|\$|€|£)?(?!\w|[.,]\d)" + _UNIT)
_NOT = r"(?:no|not|nothing)\s+"
# "no less than 1000" is a floor and "not more than 200" a ceiling: read before the plain forms
_NEGATED_MIN_PRICE = re.compile(
    r"\b" + _NOT + r"(?:less than|under|below|cheaper than|lower than)\s+" + _NUMBER,
    re.IGNORECASE)
_MAX_PRICE = re.compile(
    r"(?:\b(?:under|below|less than|cheaper than|up to|at most|max(?:imum)?|not exceeding|"
    + _NOT + r"(?:more than|over|above|higher than|pricier than|more expensive than))\s+"
    r"|<=?\s*)" + _NUMBER, re.IGNORECASE)
_MIN_PRICE = re.compile(
    r"(?:\b(?:over|above|more than|at least|min(?:imum)?)\s+|>=?\s*)" + _NUMBER, re.IGNORECASE)
_BETWEEN = re.compile(r"\bbetween\s+" + _NUMBER + r"\s+and\s+" + _NUMBER, re.IGNORECASE)
# "50-100", "$50 to $100", "from 50 to 100": a price range when it says so (a currency, "from",
# "price") or its top is at least RANGE_MIN_TOP ("size 6-7", "16-18" stay words)
_RANGE = re.compile(r"(\b(?:from|priced?|price range)\s+)?" + _NUMBER
                    + r"\s*(?:-|–|—|\bto\b)\s*" + _NUMBER, re.IGNORECASE)
_CURRENCY_WORD = re.compile(r"[$€£]|\b(?:dollars?|euros?|bucks|usd|eur|gbp)\b", re.IGNORECASE)
RANGE_MIN_TOP = 20
NEGATIONS = frozenset("no not without non except excluding neither nor".split())
_NEGATION_REACH = 3  # "without any of the pearls" is too far; "not in gold", "no pearls" are not
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
                if "&" in value:  # "Lumen and Co" names the brand "Lumen & Co"
                    add(synonyms, words_of(value.replace("&", " and ")), facet, value)
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

    def catalog_values(self, facet: str) -> frozenset[str]:
        """The catalog's own values of `facet` (those words can name)."""
        return frozenset(value for f, value in self.exact.values() if f == facet)

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
    excluded: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # "without pearls"

    def values(self, facet: str) -> tuple[str, ...]:
        return tuple(self.facets.get(facet, ()))


def parse_query(query: str, vocabulary: Vocabulary) -> ParsedQuery:
    """Read the filters out of a query (see the module docstring)."""
    notes: list[str] = []
    text, ranges = _take_prices(query, _BETWEEN, notes)
    text, loose_ranges = _take_prices(text, _RANGE, notes, accept=_is_price_range)
    text, negated_lows = _take_prices(text, _NEGATED_MIN_PRICE, notes)
    text, highs = _take_prices(text, _MAX_PRICE, notes)
    text, lows = _take_prices(text, _MIN_PRICE, notes)
    ranges += loose_ranges
    lows += negated_lows
    # "between 100 and 50": a shopper naming a range names its two ends, in whichever order
    # they come to mind; the smaller is the floor (the range holds what they meant, not nothing)
    ceilings = [n for (n,) in highs] + [max(ends) for ends in ranges]
    floors = [n for (n,) in lows] + [min(ends) for ends in ranges]
    max_price = min(ceilings, default=None)  # several bounds: the tightest
    min_price = max(floors, default=None)
    words = words_of(text)
    found: dict[str, list[str]] = {}
    excluded: dict[str, list[str]] = {}
    taken: set[int] = set()  # positions of words that named a filter
    negated: set[int] = set()  # positions of the words that ruled a value out: not ranked by
    negation: int | None = None  # position of a negation word still waiting for its value
    chained: int | None = None  # end of a negated value an "or" may extend ("no X or Y")
    i = 0
    while i < len(words):
        if " ".join(words[i:i + 2]) in OTHER_METALS and vocabulary.lookup(words[i:i + 2]) is None:
            i += 2  # a metal this catalog does not have: words to rank by, not its last word
            continue
        for n in range(min(MAX_PHRASE_WORDS, len(words) - i), 0, -1):
            hit = vocabulary.lookup(words[i:i + n])
            if hit is not None and not (n == 1 and words[i] in STOPWORDS):
                facet, value = hit
                by = _negated_by(words, i, i + n, negation, chained)
                table = excluded if by is not None else found
                if value not in table.setdefault(facet, []):
                    table[facet].append(value)
                taken.update(range(i, i + n))
                if by is not None:
                    negated.update([*range(i, i + n), *by])
                negation, chained = None, (i + n - 1 if by is not None else None)
                i += n
                break
        else:
            if words[i] in NEGATIONS:
                negation = i
            i += 1
    ranked = [j for j, w in enumerate(words)
              if w not in STOPWORDS and w not in NEGATIONS and j not in negated]
    if negated:  # the title vectors must not look for what the shopper ruled out
        text = " ".join(w for j, w in enumerate(words) if j not in negated)
    return ParsedQuery(
        text=" ".join(text.split()),
        terms=tuple(dict.fromkeys(words[j] for j in ranked)),
        free_terms=tuple(dict.fromkeys(words[j] for j in ranked if j not in taken)),
        facets={facet: tuple(values) for facet, values in found.items()},
        max_price=max_price,
        min_price=min_price,
        notes=tuple(notes),
        excluded={facet: tuple(values) for facet, values in excluded.items()},
    )


def _negated_by(words: Sequence[str], start: int, end: int, negation: int | None,
                chained: int | None) -> tuple[int, ...] | None:
    """The positions of the words that rule out the value at words[start:end] ("not", "no",
    "without" shortly before it; "or" after a value ruled out; "free" after it), or None."""
    if (negation is not None and start - negation <= _NEGATION_REACH
            and all(w in STOPWORDS or w == "any" for w in words[negation + 1:start])):
        return tuple(range(negation, start))
    if (chained is not None and start - chained == 2
            and words[chained + 1] in {"or", "nor"}):
        return (chained + 1,)
    if end < len(words) and words[end] == "free":
        return (end,)
    return None


def _is_price_range(match: re.Match, ends: Sequence[float]) -> bool:
    """Whether "50-100" / "from 6 to 7" found by `_RANGE` names prices (see `_RANGE`)."""
    return bool(match.group(1) or _CURRENCY_WORD.search(match.group(0))
                or max(ends) >= RANGE_MIN_TOP)


def _take_prices(
    text: str, pattern: re.Pattern, notes: list[str],
    accept: Callable[[re.Match, Sequence[float]], bool] | None = None,
) -> tuple[str, list[list[float]]]:
    """The numbers of each price phrase `pattern` finds (those `accept` takes, when given), and
    the text without those phrases. A phrase with a negative number ("under -5") is no price a
    shop has: rather than filter every product away or drop it unsaid, it is left out and named
    in `notes`."""
    found: list[list[float]] = []

    def take(match: re.Match) -> str:
        groups = match.groups()[-3 * (len(match.groups()) // 3):]  # (signs, digits) per number
        numbers = [_price(*groups[i:i + 3]) for i in range(0, len(groups), 3)]
        if any(n < 0 for n in numbers):
            notes.append(f"'{' '.join(match.group(0).split())}': a price below 0 was not "
                         "understood; no price filter taken from it")
        elif accept is not None and not accept(match, numbers):
            return match.group(0)  # words, not a price
        else:
            found.append(numbers)
        return " "

    return pattern.sub(take, text), found


def _price(sign: str | None, sign_after_currency: str | None, digits: str) -> float:
    """'1,250.50' -> 1250.5 and '12,5' -> 12.5; negative when a minus sign was written."""
    value = float(plain_amount(digits))
    return -value if sign or sign_after_currency else value
