"""Figures for the report, `evaluate` and training curves: one matplotlib Figure per caller
(no pyplot state shared between callers), and catalog text drawn as written.

matplotlib reads text between two `$` signs as mathematics: a brand "Bling$ #1 $hop" stopped the
whole report with a parse error, and "Price $5 to $10 Co" was drawn in italics. Turning the
mathematics off everywhere drew a log axis's own labels as `$\\mathdefault{10^{2}}$`, so the
catalog's words are escaped instead (`as_written`).
"""

from __future__ import annotations

from typing import Any


def figure(width: float, height: float) -> Any:
    """A Figure of `width` x `height` inches at 100 dpi, with a canvas to save it from."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    made = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(made)
    return made


def as_written(text: str) -> str:
    """Catalog text (a brand, a type) to draw as it is written: its `$` signs escaped."""
    return str(text).replace("$", r"\$")
