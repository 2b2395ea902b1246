"""Category text -> product type, by editable word rules (`jewelrec ingest --types rules.toml`).

Shop feeds do not say "earring": they say "Apparel & Accessories > Jewelry > Earrings",
"Jewellery / Rings" or "Ohrringe". A rule lists, per type, the words and phrases that name it
(any language) and, optionally, Google product taxonomy ids. Matching is on whole words, case
and accents as written ("Ohrringe" never matches "ringe"/ring, "Earrings" never "rings"), with
typographic apostrophes read as plain ones.

How a product's categories are read (`TypeRules.classify`):

- Categories come in sources of falling priority (Google: product_type, then
  google_product_category). The first source that decides, decides.
- A category is a path ("A > B > C", "A / B"); its most specific segment that matches any rule
  gives the type ("Jewelry > Rings > Engagement" is a ring).
- Several categories of one source (WooCommerce's "Rings, Sale") must agree.
- Two types at once ("Earring & Necklace Sets") or none at all: the row is rejected with the
  category text in the reason, never guessed. Add a rule and ingest again.

TOML file format (see README): `[types]` maps a type to a list of words; `[google_ids]` maps a
type to taxonomy ids. A type listed in the file gets its words added to the defaults (tried
first); `defaults = false` at the top uses only the file's rules.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jewelrec.errors import CatalogError

# Singular and plural, English, German, French, Spanish (and a few Italian/Dutch words).
# Pendants are filed as necklaces: shops sell them on a chain.
DEFAULT_WORDS: dict[str, tuple[str, ...]] = {
    "earring": (
        "earring", "earrings", "ear cuff", "ear cuffs", "ear climber", "ear climbers",
        "ohrring", "ohrringe", "ohrstecker", "ohrhänger", "creolen",
        "boucle d'oreille", "boucles d'oreilles", "boucles d'oreille", "créoles",
        "pendiente", "pendientes", "arete", "aretes", "orecchino", "orecchini", "oorbellen",
    ),
    "ring": (
        "ring", "rings", "ringe", "bague", "bagues", "anillo", "anillos", "sortija",
        "sortijas", "anello", "anelli", "engagement ring", "wedding band", "wedding bands",
    ),
    "necklace": (
        "necklace", "necklaces", "pendant", "pendants", "choker", "chokers", "halskette",
        "halsketten", "kette", "ketten", "collier", "colliers", "anhänger", "pendentif",
        "pendentifs", "collar", "collares", "colgante", "colgantes", "gargantilla",
        "gargantillas", "collana", "collane", "ketting", "kettingen",
    ),
    "bracelet": (
        "bracelet", "bracelets", "bangle", "bangles", "armband", "armbänder", "armreif",
        "armreifen", "armkette", "armketten", "jonc", "joncs", "pulsera", "pulseras",
        "brazalete", "brazaletes", "bracciale", "bracciali", "armbanden",
    ),
    "anklet": ("anklet", "anklets", "fußkette", "fußketten", "chevillère", "chevillères",
               "tobillera", "tobilleras"),
    "brooch": ("brooch", "brooches", "lapel pin", "lapel pins", "brosche", "broschen",
               "broche", "broches"),
    "watch": ("watch", "watches", "armbanduhr", "armbanduhren", "uhr", "uhren", "montre",
              "montres", "reloj", "relojes"),
    "cufflink": ("cufflink", "cufflinks", "manschettenknöpfe", "boutons de manchette",
                 "gemelos"),
}
# Google product taxonomy ids (Apparel & Accessories > Jewelry > ...).
DEFAULT_GOOGLE_IDS: dict[str, tuple[int, ...]] = {
    "anklet": (189,), "bracelet": (191,), "necklace": (192, 196), "earring": (194,),
    "brooch": (197,), "ring": (200,), "watch": (201,),
}

_SEGMENT = re.compile(r"\s*(?:>|/|\|)\s*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


class TypeDecision(str):
    """A decided type (a plain str), so callers can tell it from a rejection reason."""


@dataclass(frozen=True)
class TypeRules:
    """Ordered (type, compiled word pattern) rules and taxonomy ids; see the module docstring."""

    words: tuple[tuple[str, tuple[str, ...]], ...]
    google_ids: dict[int, str]

    @classmethod
    def defaults(cls) -> TypeRules:
        return cls.build(DEFAULT_WORDS, DEFAULT_GOOGLE_IDS)

    @classmethod
    def build(
        cls, words: dict[str, Sequence[str]], google_ids: dict[str, Sequence[int]]
    ) -> TypeRules:
        ordered = tuple((_normalise(t), tuple(_normalise(w) for w in ws if _normalise(w)))
                        for t, ws in words.items())
        ids = {int(i): _normalise(t) for t, values in google_ids.items() for i in values}
        return cls(ordered, ids)

    @classmethod
    def load(cls, path: str | Path | None) -> TypeRules:
        """The defaults, extended (or replaced) by the rules in a TOML file."""
        if path is None:
            return cls.defaults()
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CatalogError(f"cannot read type rules {path}: {exc.strerror or exc}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CatalogError(f"type rules {path} are not valid TOML: {exc}") from exc
        return cls.from_mapping(data, str(path))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str = "type rules") -> TypeRules:
        keep_defaults = data.get("defaults", True)
        if not isinstance(keep_defaults, bool):
            raise CatalogError(f"{where}: 'defaults' must be true or false")
        unknown = set(data) - {"defaults", "types", "google_ids"}
        if unknown:
            raise CatalogError(f"{where}: unknown keys {', '.join(sorted(unknown))} "
                               "(expected defaults, [types], [google_ids])")
        words = _table(data.get("types", {}), str, where, "types")
        ids = _table(data.get("google_ids", {}), int, where, "google_ids")
        if not keep_defaults:
            if not words:
                raise CatalogError(f"{where}: defaults = false needs a [types] table")
            return cls.build(words, ids)
        merged_words = {t: [*words.get(t, ()), *DEFAULT_WORDS.get(t, ())]
                        for t in [*words, *DEFAULT_WORDS]}
        merged_ids = {t: [*ids.get(t, ()), *DEFAULT_GOOGLE_IDS.get(t, ())]
                      for t in [*ids, *DEFAULT_GOOGLE_IDS]}
        return cls.build(merged_words, merged_ids)

    def classify(self, sources: Sequence[Iterable[str | None]]) -> TypeDecision | str:
        """The type (a TypeDecision) or the reason there is none (a plain str)."""
        seen: list[str] = []
        for source in sources:
            texts = [t.strip() for t in source if t and t.strip()]
            seen.extend(texts)
            found: dict[str, str] = {}  # type -> the category that named it
            for text in texts:
                for type_ in self._types_of(text):
                    found.setdefault(type_, text)
            if len(found) == 1:
                return TypeDecision(next(iter(found)))
            if len(found) > 1:
                categories = ", ".join(repr(c) for c in dict.fromkeys(found.values()))
                return (f"category {categories} names several types ({', '.join(found)}): "
                        "not guessed; add a more specific rule with --types rules.toml")
        if not seen:
            return "no category to take the type from (and no type column)"
        shown = "; ".join(repr(t) for t in dict.fromkeys(seen))
        return f"no type rule matches the category {shown}: add one with --types rules.toml"

    def _types_of(self, text: str) -> list[str]:
        """Types named by the most specific segment of one category path that names any."""
        stripped = text.strip()
        if stripped.isdigit():
            found = self.google_ids.get(int(stripped))
            return [found] if found else []
        for segment in reversed(_SEGMENT.split(_normalise(stripped))):
            found = [t for t, words in self.words if any(_has_phrase(segment, w) for w in words)]
            if found:
                return list(dict.fromkeys(found))
        return []


def _has_phrase(text: str, phrase: str) -> bool:
    start = text.find(phrase)
    while start >= 0:
        end = start + len(phrase)
        before = text[start - 1] if start else " "
        after = text[end] if end < len(text) else " "
        if not _word_char(before) and not _word_char(after):
            return True
        start = text.find(phrase, start + 1)
    return False


def _word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _normalise(text: str) -> str:
    return " ".join(str(text).translate(_APOSTROPHES).lower().split())


def _table(value: Any, kind: type, where: str, name: str) -> dict[str, list]:
    if not isinstance(value, dict):
        raise CatalogError(f"{where}: [{name}] must be a table of type = [...]")
    table: dict[str, list] = {}
    for type_, items in value.items():
        if not isinstance(items, list) or not all(
            isinstance(i, kind) and not isinstance(i, bool) for i in items
        ):
            raise CatalogError(f"{where}: [{name}] {type_} must be a list of "
                               f"{'words' if kind is str else 'whole numbers'}")
        table[type_] = items
    return table
