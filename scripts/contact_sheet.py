"""Render a contact sheet of the synthetic catalog (first view of ~36 products) for the README.

Why: a person must be able to tell the four types and the three metals apart at a glance; this
sheet is how we check (and show) that. Usage: python scripts/contact_sheet.py [--out PATH]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from jewelrec.catalog.synthetic import generate_catalog

COLUMNS = 6
THUMB = 150
LABEL = 18
MAX_BYTES = 400_000


def contact_sheet(catalog_dir: Path, count: int) -> Image.Image:
    with open(catalog_dir / "catalog.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:count]
    rows_of_cells = (len(rows) + COLUMNS - 1) // COLUMNS
    sheet = Image.new("RGB", (COLUMNS * THUMB, rows_of_cells * (THUMB + LABEL)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for i, row in enumerate(rows):
        x, y = (i % COLUMNS) * THUMB, (i // COLUMNS) * (THUMB + LABEL)
        first = row["image"].split("|")[0]
        with Image.open(catalog_dir / first) as img:
            sheet.paste(img.convert("RGB").resize((THUMB, THUMB), Image.LANCZOS), (x, y))
        label = f"{row['type']} / {row['metal']}"
        width = draw.textlength(label, font=font)
        draw.text((x + (THUMB - width) / 2, y + THUMB + 2), label, fill=(40, 40, 40), font=font)
    return sheet


def save_small_png(img: Image.Image, out: Path) -> int:
    """PNG with a dithered 256-colour palette: as truecolour it would be over the size limit.

    The octree palette keeps small saturated areas (an amethyst, a ruby) that median cut
    merges into grey; dithering keeps the soft backdrops from banding.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    palette = img.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    img.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(out, optimize=True)
    return out.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/contact-sheet.png"))
    parser.add_argument("--products", type=int, default=36)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate_catalog(Path(tmp), products=args.products, views=1, seed=args.seed,
                         progress=False)
        sheet = contact_sheet(Path(tmp), args.products)
    size = save_small_png(sheet, args.out)
    print(f"wrote {args.out} ({size / 1000:.0f} KB)")
    if size > MAX_BYTES:
        print(f"warning: larger than {MAX_BYTES / 1000:.0f} KB")


if __name__ == "__main__":
    main()
