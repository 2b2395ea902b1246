"""What reduced decoding saves on a large query photo (issue 11): a JPEG decoded whole vs decoded
at 1/2, 1/4 or 1/8 scale (Pillow's draft mode) keeping the short side >= QUERY_SHORT_SIDE, as
`recommend` and POST /api/recommend now decode. Runs take turns (whole, reduced, whole, ...) so
a machine that gets busier mid-run slows both alike; prints the median wall milliseconds of each,
the ratio, and the decoded sizes, and writes benchmarks/results/decode.json. With --home, also
whole queries (`Recommender.recommend` of the file: decode, pieces, framing, models, search) each
way, wall and CPU milliseconds; each query gets the photo with invisible noise of its own, so the
backbone's feature memory never answers from an earlier run.

    python benchmarks/decode.py                    # a made-up 12-megapixel (4032x3024) photo
    python benchmarks/decode.py --photo big.jpg --repeat 15 --home jewelrec-data
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import load_note, print_table, write_results

from jewelrec.imaging.io import QUERY_SHORT_SIDE, decode_photo, image_to_jpeg_bytes
from jewelrec.recommend import Recommender

PHONE_SIZE = (4032, 3024)  # a 12-megapixel phone camera's photo


def made_up_photo(width: int, height: int) -> bytes:
    """A JPEG with a phone photo's mix: smooth light, a textured object, sensor noise (pure noise
    would make the entropy decoder, which reduced decoding cannot skip, all the cost)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 200 - 60 * (x / width) - 40 * (y / height)
    ring = np.abs(np.hypot(x - width / 2, y - height / 2) - height / 4) < height / 20
    texture = 40 * np.sin(x / 7) * np.cos(y / 11)
    grey = np.where(ring, 120 + texture, light) + rng.normal(0, 3, (height, width))
    rgb = np.stack([grey, grey * 0.9, grey * 0.7], axis=2)
    return image_to_jpeg_bytes(np.clip(rgb, 0, 255).astype(np.uint8), quality=90)


def _ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


def queries(home: Path, data: bytes, repeat: int) -> dict[str, dict[str, float]]:
    """Median wall and CPU ms of `recommend(file)` with the photo decoded reduced and whole."""
    recommender = Recommender.open(home)
    image, rng = decode_photo(data).image, np.random.default_rng(1)
    runs: dict[str, list[tuple[float, float]]] = {"whole": [], "reduced": []}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "photo.jpg"
        for _ in range(repeat):
            for way in runs:
                noisy = image ^ rng.integers(0, 2, image.shape, dtype=np.uint8)
                path.write_bytes(image_to_jpeg_bytes(noisy))
                cpu, start = time.process_time(), time.perf_counter()
                # a photo decoded whole by the caller is searched as it is
                recommender.recommend(path if way == "reduced" else decode_photo(path), k=10)
                runs[way].append((1000 * (time.perf_counter() - start),
                                  1000 * (time.process_time() - cpu)))
    return {way: {"wall_ms": round(statistics.median(r[0] for r in ms), 1),
                  "cpu_ms": round(statistics.median(r[1] for r in ms), 1)}
            for way, ms in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", type=Path, help="a JPEG to decode (default: a made-up one)")
    parser.add_argument("--repeat", type=int, default=9, help="runs of each way (default 9)")
    parser.add_argument("--home", type=Path, help="also time whole queries on this data home")
    args = parser.parse_args()
    data = args.photo.read_bytes() if args.photo else made_up_photo(*PHONE_SIZE)
    whole = decode_photo(data)
    reduced = decode_photo(data, reduce_to=QUERY_SHORT_SIDE)
    times: dict[str, list[float]] = {"whole": [], "reduced": []}
    for _ in range(args.repeat):
        times["whole"].append(_ms(lambda: decode_photo(data)))
        times["reduced"].append(_ms(lambda: decode_photo(data, reduce_to=QUERY_SHORT_SIDE)))
    median = {way: statistics.median(ms) for way, ms in times.items()}
    print(f"{whole.size[0]}x{whole.size[1]} JPEG, {len(data) / 1e6:.1f} MB, "
          f"{args.repeat} runs each, median wall ms")
    print_table(["decode", "size", "median ms", "MB of pixels"], [
        ["whole", "x".join(map(str, whole.image_size)), median["whole"],
         whole.image.nbytes / 1e6],
        [f"reduced (short side >= {QUERY_SHORT_SIDE})", "x".join(map(str, reduced.image_size)),
         median["reduced"], reduced.image.nbytes / 1e6],
    ])
    print(f"reduced / whole: {median['reduced'] / median['whole']:.2f}; {load_note()}")
    query = queries(args.home, data, args.repeat) if args.home else None
    if query:
        print("whole queries (recommend of the file), median ms:")
        print_table(["decode", "wall ms", "CPU ms"],
                    [[way, q["wall_ms"], q["cpu_ms"]] for way, q in query.items()])
        fast, slow = query["reduced"], query["whole"]
        print(f"reduced / whole: wall {fast['wall_ms'] / slow['wall_ms']:.2f}, "
              f"CPU {fast['cpu_ms'] / slow['cpu_ms']:.2f}; {load_note()}")
    path = write_results("decode", {
        "photo": str(args.photo) if args.photo else f"made up {PHONE_SIZE[0]}x{PHONE_SIZE[1]}",
        "bytes": len(data), "repeat": args.repeat, "short_side": QUERY_SHORT_SIDE,
        "whole": {"size": whole.image_size, "median_ms": round(median["whole"], 2),
                  "runs_ms": [round(t, 2) for t in times["whole"]]},
        "reduced": {"size": reduced.image_size, "median_ms": round(median["reduced"], 2),
                    "runs_ms": [round(t, 2) for t in times["reduced"]]},
        "queries": query,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
