"""What finding the pieces of a photo (issue 14) adds to a one-photo query, in CPU time.

For each photo, the same query runs two ways, taking turns: today's `Recommender.recommend`
(load, find the pieces, frame the first, type, embed, search) and the pipeline without piece
finding (`prepare(..., pieces=False)`, the models, the search: what a query cost before). Each
run gets the photo with invisible noise of its own, so the backbone's feature memory (keyed by
pixel content) never answers from an earlier run. Prints the median CPU milliseconds per query
(process time: both cores' work counts, onnxruntime's spinning threads included, so on a busy
machine repeat and compare medians) and the difference, and the images each way puts through the
backbone (exact: what the feature memory did not answer), and the piece finder's own CPU
milliseconds with its crops' features remembered (segmentation, edges, the head, and on a photo
without a clean backdrop the activation maps' own backbone pass, which is never remembered);
--json writes them.

    python benchmarks/pieces_overhead.py --home jewelrec-data PHOTO [PHOTO ...] --repeat 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from jewelrec.imaging.io import load_image
from jewelrec.recommend import Recommender, infer


def _noisy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo with its lowest bit randomised: looks the same, hashes differently."""
    return image ^ rng.integers(0, 2, size=image.shape, dtype=np.uint8)


def _cpu_ms(fn) -> float:
    start = time.process_time()
    fn()
    return 1000 * (time.process_time() - start)


def _count_backbone_images(recommender: Recommender) -> list[int]:
    """Images through the snapshot's backbone (its feature memory answers the rest), batch by
    batch: a counter on this backbone instance only."""
    backbone = recommender.snapshot.classifier.backbone
    run, counts = backbone.run, []

    def counted(batch: np.ndarray):
        counts.append(len(batch))
        return run(batch)

    backbone.run = counted
    return counts


def measure(recommender: Recommender, image: np.ndarray, repeat: int, counts: list[int],
            seed: int = 0) -> dict:
    """Median CPU ms per query with and without piece finding, the images each puts through
    the backbone (`counts`: from _count_backbone_images), and the pieces found."""
    rng = np.random.default_rng(seed)
    snap = recommender.snapshot

    def without(photo: np.ndarray) -> None:
        prepared = recommender.prepare(photo, pieces=False)
        recommender._answer(snap, prepared, infer(snap, [prepared])[0], k=10, filters=None,
                            type=None, known=None, group_variants=False)

    def with_pieces(photo: np.ndarray) -> None:
        recommender.recommend(photo, k=10)

    for fn in (without, with_pieces):  # warm-up: sessions, caches of the index
        fn(_noisy(image, rng))
    times: dict[str, list[float]] = {"without": [], "with_pieces": []}
    images: dict[str, list[int]] = {"without": [], "with_pieces": []}
    for _ in range(repeat):
        for name, fn in (("without", without), ("with_pieces", with_pieces)):
            photo = _noisy(image, rng)
            counts.clear()
            times[name].append(_cpu_ms(lambda fn=fn, photo=photo: fn(photo)))
            images[name].append(sum(counts))
    medians = {name: statistics.median(values) for name, values in times.items()}
    photo = _noisy(image, rng)
    recommender.find_pieces(photo)  # its crops' features are remembered from now on
    finder = statistics.median(_cpu_ms(lambda: recommender.find_pieces(photo))
                               for _ in range(repeat))
    return {**medians, "extra_ms": medians["with_pieces"] - medians["without"],
            "finder_ms_remembered": finder,
            "images_without": statistics.median(images["without"]),
            "images_with_pieces": statistics.median(images["with_pieces"]),
            "pieces": len(recommender.find_pieces(image))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("--home", required=True)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    recommender = Recommender.open(args.home)
    rows = {}
    counts = _count_backbone_images(recommender)
    print(f"{'photo':<32} {'pieces':>6} {'without ms':>10} {'with ms':>8} {'extra ms':>8} "
          f"{'backbone images without/with':>29} {'finder ms':>9}")
    for photo in args.photos:
        row = measure(recommender, load_image(photo), args.repeat, counts)
        rows[str(photo)] = row
        print(f"{photo.name[:32]:<32} {row['pieces']:>6} {row['without']:>10.1f} "
              f"{row['with_pieces']:>8.1f} {row['extra_ms']:>8.1f} "
              f"{row['images_without']:>14g} / {row['images_with_pieces']:<12g} "
              f"{row['finder_ms_remembered']:>9.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
