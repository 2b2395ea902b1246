"""Figures for the report, `evaluate` and training curves: one matplotlib Figure per caller
(no pyplot state shared between callers), and catalog text drawn as written.

matplotlib reads text between two `$` signs as mathematics: a brand "Bling$ #1 $hop" stopped the
whole report with a parse error, and "Price $5 to $10 Co" was drawn in italics.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def figure(width: float, height: float) -> Any:
    """A Figure of `width` x `height` inches at 100 dpi, with a canvas to save it from."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    made = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(made)
    return made


@contextmanager
def plain_text() -> Iterator[None]:
    """Text created and drawn inside is never read as mathematics (catalog names hold `$`)."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        yield
