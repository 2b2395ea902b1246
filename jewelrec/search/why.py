""""Why this result" (issue 12, item 4): short reasons a person can check, computed from data.

Each reason appears only with its evidence: the result's type equals the type decided for the
query; its metal / stone equals the one read from (or given for) the query, or the one the
shopper's words asked for ("in silver": "silver as you asked"); its brand equals
the source product's ("more like this"); its cosine score says how alike the photos look.
Nothing is guessed: an unknown attribute, an undecided type or a score that is not a cosine
gives no reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from jewelrec.search.prefer import same_brand

# attribute values compare as brands do: as people write them (case, outer spaces ignored)
_same = same_brand


@dataclass(frozen=True)
class QueryFacts:
    """What is known about the query, each None when unknown (then it gives no reason)."""

    type: str | None = None  # the decided type only: an undecided guess is no evidence
    metal: str | None = None
    stone: str | None = None
    brand: str | None = None  # the source product's brand ("more like this")
    cosine: bool = True  # False: scores are not cosines (e.g. text search), say nothing
    asked: tuple[str, ...] = ()  # type / metal / stone values the shopper's words asked for


def alike_percent(score: float) -> int | None:
    """A cosine as 'NN% alike' (1..100), None for a score that shows no likeness (rounds to 0
    or below, or NaN)."""
    if not score > 0:  # also rejects NaN
        return None
    percent = min(100, round(100 * score))
    return percent if percent > 0 else None


def reasons(
    facts: QueryFacts,
    *,
    type: str | None,
    metal: str | None,
    stone: str | None,
    brand: str | None,
    score: float,
) -> list[str]:
    """The reasons one result matches the query, most concrete first."""
    why: list[str] = []
    for known, value in ((facts.type, type), (facts.metal, metal), (facts.stone, stone)):
        if value and any(_same(asked, value) for asked in facts.asked):
            why.append(f"{value.strip()} as you asked")
        elif value and _same(known, value):
            why.append(f"{value.strip()} like yours")
    if same_brand(facts.brand, brand):
        why.append("same brand")
    percent = alike_percent(score) if facts.cosine else None
    if percent is not None:
        why.append(f"looks {percent}% alike")
    return why
