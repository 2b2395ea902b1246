"""`recommend --html`: a static page with each query photo and its results.

All catalog text is escaped; a product link is only rendered when it is http(s); images are
referenced by paths relative to the page, so the page works when opened from disk.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from jewelrec.console import printable
from jewelrec.home import Home, atomic_write_bytes
from jewelrec.imaging.io import image_to_jpeg_bytes, load_image, resize_short_side
from jewelrec.links import safe_link
from jewelrec.recommend import Recommendation

THUMBNAIL_SIDE = 320  # the query photo's long side on the page (shown at 160 CSS pixels)

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#222;
background:#faf8f5}
h1{font-weight:600}section{margin:2rem 0;padding:1rem;background:#fff;border-radius:12px;
box-shadow:0 1px 4px #0001}
.query{display:flex;gap:1rem;align-items:center}.query img{width:160px;height:160px;
object-fit:contain;border-radius:8px;background:#eee}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:1rem;
margin-top:1rem}
.card{border:1px solid #eee;border-radius:10px;padding:.6rem;background:#fff}
.card img{width:100%;aspect-ratio:1;object-fit:contain;border-radius:6px;background:#f3f3f3}
.price{font-weight:600}.meta{color:#666;font-size:.85rem}.err{color:#b00020}
.why{display:flex;flex-wrap:wrap;gap:.3rem;margin-top:.4rem}.why span{font-size:.75rem;
padding:.1rem .5rem;border-radius:999px;background:#f1ece4;color:#5a4a32}
"""


def _thumbnail_data_uri(photo: str | bytes) -> str:
    """Query photos are embedded (small JPEG) so the page does not depend on their location;
    a large photo is decoded reduced and its long side shrunk to THUMBNAIL_SIDE (the page
    shows it in 160 pixels): a 12-megapixel photo would otherwise weigh megabytes on the page."""
    image = load_image(photo, reduce_to=THUMBNAIL_SIDE)
    short, long = sorted(image.shape[:2])
    if long > THUMBNAIL_SIDE:
        image = resize_short_side(image, max(1, round(THUMBNAIL_SIDE * short / long)))
    data = image_to_jpeg_bytes(image, quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def _doubts(outcome: Recommendation) -> str:
    """What the answer is unsure of, in words: not jewelry from this shop, or the type."""
    lines = []
    if not outcome.recognised:
        lines.append("This doesn't look like jewelry from this shop; closest pieces anyway.")
    if not outcome.type_decided:
        options = " or ".join(f"{a.type} ({a.probability:.0%})" for a in outcome.type_alternatives)
        searched = ", ".join(outcome.searched_types or [])
        lines.append(f"Not sure of the type: {options}; searched {searched}.")
    return "".join(f"<p class='meta doubt'>{html.escape(line)}</p>" for line in lines)


def _piece_line(outcome: Recommendation) -> str:
    """Which piece of a photo of several this section searched (recommend --all-pieces gives
    one section per piece); nothing for a photo of one piece."""
    pieces = outcome.pieces
    if len(pieces) < 2:
        return ""
    if outcome.piece is None:
        said = f"your crop (the photo shows {len(pieces)} pieces)"
    else:
        p = pieces[outcome.piece]
        said = (f"piece {outcome.piece + 1} of {len(pieces)}: {p.type} at "
                f"{', '.join(str(v) for v in p.box)}")
    return f"<div class='meta piece'>{html.escape(said)}</div>"


def _why_chips(why: Sequence[str]) -> str:
    """The result's reasons (jewelrec/search/why.py) as small chips; nothing when it has none."""
    if not why:
        return ""
    return ("<div class='why'>" + "".join(f"<span>{html.escape(w)}</span>" for w in why)
            + "</div>")


# No script runs and nothing is fetched but the catalog's images beside the page (escaping is
# the first defence against a hostile catalog title; this is the second).
PAGE_CSP = "default-src 'none'; img-src 'self' data: file:; style-src 'unsafe-inline'"


def render_page(
    home: Home,
    out: Path,
    recommendations: Sequence[tuple[str, Recommendation | str]],
) -> None:
    """`recommendations`: (photo path, Recommendation or an error message) per query."""
    esc = html.escape
    thumbnails: dict[str, str] = {}  # once per photo, however many of its pieces are answered
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{PAGE_CSP}\">",
        f"<title>jewelrec recommendations</title><style>{STYLE}</style></head><body>",
        "<h1>jewelrec recommendations</h1>",
    ]
    for photo, outcome in recommendations:
        parts.append("<section>")
        if isinstance(outcome, str):
            parts.append(f"<p class='err'>{esc(printable(photo))}: {esc(outcome)}</p></section>")
            continue
        confidence = outcome.type_confidence or 0.0
        if photo not in thumbnails:
            thumbnails[photo] = _thumbnail_data_uri(photo)
        parts.append(
            f"<div class='query'><img alt='query photo' src='{thumbnails[photo]}'>"
            f"<div><div class='meta'>{esc(printable(photo))}</div>"
            f"<h2>{esc(outcome.type or '?')} <small>({confidence:.0%})</small></h2>"
            f"{_piece_line(outcome)}"
            f"{_doubts(outcome)}"
            f"<div class='meta'>{len(outcome.results)} results</div></div></div>"
            "<div class='grid'>"
        )
        for r in outcome.results:
            # a relative URL: a '#' or '%' in the home's path is a character, not a fragment
            src = quote(Path(os.path.relpath(home.image_path(r.image),
                                             out.parent.resolve())).as_posix())
            link = safe_link(r.url)
            buy = (
                f"<a href='{esc(link)}' target='_blank' rel='noopener noreferrer'>buy</a>"
                if link
                else ""
            )
            parts.append(
                f"<div class='card'><img alt='{esc(r.title)}' src='{esc(src)}' loading='lazy'>"
                f"<div>{esc(r.title)}</div>"
                f"<div class='meta'>{esc(r.brand or '')} · {esc(r.type)}</div>"
                f"<div><span class='price'>{r.price:,.2f} {esc(r.currency)}</span> "
                f"<span class='meta'>similarity {r.score:.2f}</span> {buy}</div>"
                f"{_why_chips(r.why)}</div>"
            )
        parts.append("</div></section>")
    parts.append("</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, "".join(parts).encode())
