"""Price text as shops and shoppers write it: "1,299.00", "1.299,00", "1 299,00", "19,99".

One reading for the catalog importers, the shop-feed readers and the shopper's query parser,
so a catalog price "1,299.00" and a search for "under 1,299" mean the same number. A comma
followed by groups of exactly three digits separates thousands ("1,299" is 1299, as
English-language shops write it); any other comma is a decimal comma ("19,99").
"""

from __future__ import annotations

import re

_SPACES = "[ \u00a0\u202f]"  # plain, no-break and narrow no-break spaces (French, Swiss)
_COMMA_GROUPS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DOT_GROUPS = re.compile(r"\d{1,3}(?:\.\d{3})+,\d+|\d{1,3}(?:\.\d{3}){2,}")
_SPACE_GROUPS = re.compile(rf"\d{{1,3}}(?:{_SPACES}\d{{3}})+(?:[.,]\d+)?")
_DECIMAL_COMMA = re.compile(r"\d+,\d+")


def plain_amount(text: str) -> str:
    """The amount in the plain notation `Decimal` reads ("1,299.00" -> "1299.00", "19,99" ->
    "19.99"); text that is no separated number comes back unchanged for the caller to judge."""
    text = text.strip()
    if _COMMA_GROUPS.fullmatch(text):
        return text.replace(",", "")
    if _DOT_GROUPS.fullmatch(text):
        return text.replace(".", "").replace(",", ".")
    if _SPACE_GROUPS.fullmatch(text):
        return re.sub(_SPACES, "", text).replace(",", ".")
    if _DECIMAL_COMMA.fullmatch(text):
        return text.replace(",", ".")
    return text
