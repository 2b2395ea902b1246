"""Several pieces in one photo (issue 14): how well `find_pieces` finds, types and counts them.

A small synthetic home is drawn and trained (or reused from --work), then:
- set photos (`jewelrec synth --sets`: 2-3 catalog products each, on plain, gradient and textured
  backgrounds, true boxes in sets/sets.json): % of true pieces found (a found piece with
  IoU >= 0.5, matched one to one), false pieces per photo, % of found pieces typed right;
- single-piece photos (the catalog's shopper photos, today's framing, and single pieces on
  textured backgrounds): % giving exactly one piece.
Targets (issue 14): found >= 90%, false <= 0.3 per photo, typed >= 95%, single >= 95%.

With --real, a home trained on the real photos of half the shops (../shared/data/real-jewelry,
split by source_repo) looks at the necklace photos of the other half (some show necklace sets
with earrings): it prints what it finds and writes a contact sheet PNG with the boxes drawn
(--out; default under --work, never in the repository).

    nice -n 10 python benchmarks/pieces.py                  # synthetic, about 2 minutes here
    nice -n 10 python benchmarks/pieces.py --real           # + real necklace photos
Prints tables and writes benchmarks/results/pieces.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import jewelrec, load_note, print_table, write_results  # noqa: E402

from jewelrec.catalog.synthetic import (  # noqa: E402
    SET_KINDS,
    generate_sets,
    product_spec,
    render_set,
)
from jewelrec.demo import DEMO_CLASSIFIER  # demo catalogs train as `jewelrec demo` does
from jewelrec.home import Home  # noqa: E402
from jewelrec.models.backbone import Backbone  # noqa: E402
from jewelrec.models.base import load_classifier  # noqa: E402
from jewelrec.models.pieces import Piece, find_pieces, iou  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
IOU_FOUND = 0.5
TARGETS = {"found": 0.90, "false_per_photo": 0.3, "typed": 0.95, "single": 0.95}
SHEET_TILE = 256
SHEET_COLUMNS = 6
COLOURS = {"necklace": (230, 40, 40), "earring": (30, 140, 255), "ring": (20, 190, 60),
           "bracelet": (240, 160, 0)}


def open_classifier(home: Home):
    """The home's type classifier, on the home's backbone."""
    return load_classifier(home.models_dir, home.settings().classifier,
                           backbone=Backbone.for_home(home))


def synthetic_home(work: Path, products: int, views: int, sets: int, singles: int,
                   seed: int) -> tuple[Home, Path]:
    """Draw (synth --sets), ingest and train a demo home under `work`, unless already there."""
    catalog, home = work / "catalog", Home(work / "home")
    if not (home.models_dir / f"classifier-{home.settings().classifier}").exists():
        print(f"drawing and training a {products}-product home in {work} ...", flush=True)
        timings = {}
        for step, args in (
            ("synth", ("synth", "--out", catalog, "--products", products, "--views", views,
                       "--seed", seed, "--sets", sets, "--query-photos", singles,
                       "--no-progress")),
            ("ingest", ("ingest", catalog / "catalog.csv", "--home", home.root,
                        "--no-progress")),
            ("train", ("train", "--home", home.root, "--classifier", DEMO_CLASSIFIER,
                       "--no-progress")),
        ):
            timings[step], _ = jewelrec(*map(str, args))
        print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), flush=True)
    sets_json = catalog / "sets" / "sets.json"
    if not sets_json.exists() or len(json.loads(sets_json.read_text())["photos"]) != sets:
        generate_sets(catalog, sets=sets, products=products, seed=seed, progress=False)
    return home, catalog


def match(found: list[Piece], truth: list[dict]) -> list[tuple[int, int]]:
    """One-to-one (found, true) pairs with IoU >= IOU_FOUND, best overlaps first."""
    pairs = sorted(((iou(f.box, t["box"]), i, j) for i, f in enumerate(found)
                    for j, t in enumerate(truth)), reverse=True)
    used_f, used_t, out = set(), set(), []
    for overlap, i, j in pairs:
        if overlap >= IOU_FOUND and i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
            out.append((i, j))
    return out


def measure_sets(classifier, catalog: Path) -> tuple[dict, list]:
    document = json.loads((catalog / "sets" / "sets.json").read_text())
    by: dict[str, Counter] = defaultdict(Counter)
    seconds, examples = [], []
    for photo in document["photos"]:
        with Image.open(catalog / "sets" / photo["file"]) as img:
            img.load()
            start = time.perf_counter()
            found = find_pieces(img, classifier)
            seconds.append(time.perf_counter() - start)
        truth = photo["pieces"]
        pairs = match(found, truth)
        typed = sum(found[i].type == truth[j]["type"] for i, j in pairs)
        for key in ("all", photo["background"], photo["kind"]):
            c = by[key]
            c["photos"] += 1
            c["pieces"] += len(truth)
            c["found"] += len(pairs)
            c["false"] += len(found) - len(pairs)
            c["typed"] += typed
        examples.append((catalog / "sets" / photo["file"], found, truth))
    rows = {key: {"photos": c["photos"], "pieces": c["pieces"],
                  "found": round(c["found"] / c["pieces"], 4),
                  "false_per_photo": round(c["false"] / c["photos"], 3),
                  "typed": round(c["typed"] / max(c["found"], 1), 4)}
            for key, c in by.items()}
    rows["all"]["ms_per_photo"] = round(1000 * float(np.mean(seconds)), 1)
    return rows, examples


def measure_singles(classifier, catalog: Path, seed: int, products: int,
                    textured: int) -> dict:
    """Exactly one piece on the catalog's shopper photos and on single pieces on textures."""
    out = {}
    photos = sorted((catalog / "queries").glob("*.jpg"))
    counts = []
    for path in photos:
        with Image.open(path) as img:
            counts.append(len(find_pieces(img, classifier)))
    out["shopper photos"] = {"photos": len(counts),
                             "one_piece": round(float(np.mean(np.equal(counts, 1))), 4),
                             "pieces_per_photo": round(float(np.mean(counts)), 3)}
    counts = []
    for n in range(textured):
        spec = product_spec(seed, (n * 7919) % products)
        img, _ = render_set([spec], 10_000 + n, background="textured")
        counts.append(len(find_pieces(Image.fromarray(img), classifier)))
    out["textured, one piece"] = {"photos": len(counts),
                                  "one_piece": round(float(np.mean(np.equal(counts, 1))), 4),
                                  "pieces_per_photo": round(float(np.mean(counts)), 3)}
    return out


def real_home(work: Path) -> tuple[Home, list]:
    """A home trained on the real photos of half the shops; the necklace photos of the other
    half to look at."""
    from real_photos import CatalogProduct, build_home, read_real_jewelry, shop_folds

    photos = read_real_jewelry(SHARED / "real-jewelry")
    train, held = shop_folds(photos, 2)[0]
    home = Home(work / "real" / "home")
    if not (home.models_dir / f"classifier-{home.settings().classifier}").exists():
        print(f"training a home on {len(train)} real photos of half the shops ...", flush=True)
        products = [CatalogProduct(f"R{i:05d}", photos[i].type, (photos[i].path,))
                    for i in train]
        home, _ = build_home(work / "real", products, home.settings().classifier,
                             home.settings().embedder, index=False, epochs=None)
    necklaces = [photos[i] for i in held if photos[i].type == "necklace"]
    return home, necklaces


def look_at_real(work: Path, out: Path, limit: int) -> dict:
    home, necklaces = real_home(work)
    classifier = open_classifier(home)
    necklaces = necklaces[:limit]
    print(f"\nreal necklace photos of held-out shops: {len(necklaces)}")
    counts: Counter = Counter()
    kinds: Counter = Counter()
    several = []
    for photo in necklaces:
        with Image.open(photo.path) as img:
            found = find_pieces(img, classifier)
        counts[len(found)] += 1
        kinds[" + ".join(sorted(p.type for p in found))] += 1
        if len(found) > 1:
            several.append((photo.path, found, []))
            print(f"  {photo.path.name}: " + "; ".join(
                f"{p.type} {p.confidence:.0%} {list(p.box)}" for p in found))
    print("pieces per photo: " + ", ".join(f"{n}: {c}" for n, c in sorted(counts.items())))
    print("what was found: " + ", ".join(f"{k} x{c}" for k, c in kinds.most_common(8)))
    if several:
        contact_sheet(several, out)
        print(f"contact sheet of the {len(several)} photos with several pieces: {out}")
    return {"photos": len(necklaces), "pieces_per_photo": dict(sorted(counts.items())),
            "found": dict(kinds.most_common()), "sheet": str(out) if several else None}


def contact_sheet(examples: list, out: Path) -> None:
    """Tiles of photos with found boxes (coloured by type, labelled) and true boxes (white)."""
    rows = -(-len(examples) // SHEET_COLUMNS)
    sheet = Image.new("RGB", (SHEET_COLUMNS * SHEET_TILE, rows * SHEET_TILE), "white")
    for n, (path, found, truth) in enumerate(examples):
        with Image.open(path) as img:
            tile = img.convert("RGB")
        scale = SHEET_TILE / max(tile.size)
        tile = tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))))
        draw = ImageDraw.Draw(tile)
        for t in truth:
            draw.rectangle([round(v * scale) for v in t["box"]], outline=(255, 255, 255))
        for i, p in enumerate(found):
            colour = COLOURS.get(p.type, (255, 0, 255))
            box = [round(v * scale) for v in p.box]
            draw.rectangle(box, outline=colour, width=2)
            draw.text((box[0] + 3, box[1] + 2), f"{i} {p.type} {p.confidence:.0%}", fill=colour)
        sheet.paste(tile, ((n % SHEET_COLUMNS) * SHEET_TILE, (n // SHEET_COLUMNS) * SHEET_TILE))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "jewelrec-bench-pieces",
                        help="where the homes and photos live (reused when present)")
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--sets", type=int, default=90, help="set photos (default 90)")
    parser.add_argument("--singles", type=int, default=60, help="single-piece shopper photos")
    parser.add_argument("--textured-singles", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", action="store_true", help="also look at real necklace photos")
    parser.add_argument("--real-limit", type=int, default=240)
    parser.add_argument("--out", type=Path, help="contact sheet PNG (default: under --work)")
    args = parser.parse_args()
    work = args.work.resolve()
    repo = Path(__file__).resolve().parents[1]
    out = (args.out or work / "pieces-real.png").resolve()
    if out.is_relative_to(repo):
        parser.error(f"--out {out} is inside the repository: write it elsewhere")
    home, catalog = synthetic_home(work, args.products, args.views, args.sets, args.singles,
                                   args.seed)
    classifier = open_classifier(home)
    sets, examples = measure_sets(classifier, catalog)
    singles = measure_singles(classifier, catalog, args.seed, args.products,
                              args.textured_singles)
    order = ["all", "plain", "gradient", "textured", *SET_KINDS]
    print(f"\nset photos ({sets['all']['photos']}; found: IoU >= {IOU_FOUND} with a true box; "
          f"{sets['all']['ms_per_photo']} ms per photo)")
    print_table(["photos", "n", "pieces", "found", "false/photo", "typed"],
                [[k, sets[k]["photos"], sets[k]["pieces"], sets[k]["found"],
                  sets[k]["false_per_photo"], sets[k]["typed"]] for k in order if k in sets])
    print("\nsingle-piece photos")
    print_table(["photos", "n", "one piece", "pieces/photo"],
                [[k, v["photos"], v["one_piece"], v["pieces_per_photo"]]
                 for k, v in singles.items()])
    met = {"found": sets["all"]["found"] >= TARGETS["found"],
           "false_per_photo": sets["all"]["false_per_photo"] <= TARGETS["false_per_photo"],
           "typed": sets["all"]["typed"] >= TARGETS["typed"],
           "single": singles["shopper photos"]["one_piece"] >= TARGETS["single"]}
    print("\ntargets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items()))
    sheet = work / "pieces-synthetic.png"
    contact_sheet(examples[:36], sheet)
    print(f"contact sheet of the first set photos: {sheet}")
    results = {"sets": sets, "singles": singles, "targets": TARGETS, "met": met,
               "settings": {k: str(v) for k, v in vars(args).items()}}
    if args.real:
        if not (SHARED / "real-jewelry" / "manifest.csv").exists():
            print(f"--real: no real photos at {SHARED / 'real-jewelry'}; skipped")
        else:
            results["real"] = look_at_real(work, out, args.real_limit)
    print(load_note())
    print(f"wrote {write_results('pieces', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
