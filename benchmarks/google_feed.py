"""A shop's Google Merchant feed end to end: the demo catalog published as a shop would (an RSS
feed at a URL, images over HTTP from a local server on 127.0.0.1), then, each as an operator
runs it: `jewelrec ingest URL --fetch-images`, a second ingest (must download no image), a
third with --revalidate-images (every image answered 304), `train`, `index`, and one
"more like this" query through `jewelrec serve`'s API, plain and with --group-variants (how many
designs, item_group_ids, the 8 results span).

    python benchmarks/google_feed.py [--products 2000] [--views 3] [--epochs N] [--no-train]

Results: benchmarks/results/google_feed.json. With 2,000 products x 3 views, drawing the catalog
and training take most of the time (several minutes on a busy 2-core machine).
"""

from __future__ import annotations

import argparse
import csv
import http.server
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from common import jewelrec, load_note, print_table, write_results

from jewelrec.catalog.feeds.google_merchant import write_google_feed
from jewelrec.demo import DEMO_CLASSIFIER  # demo catalogs train as `jewelrec demo` does
from jewelrec.search.variants import variant_group

if TYPE_CHECKING:
    import httpx

    from jewelrec.recommend import Recommender


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Static files, counting image answers by status (200 downloads, 304 revalidations)."""

    statuses: dict[int, int]

    def send_response(self, code: int, message: str | None = None) -> None:
        if self.path.startswith("/images/"):
            self.statuses[int(code)] = self.statuses.get(int(code), 0) + 1
        super().send_response(code, message)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def _designs(recommender: Recommender, answer: httpx.Response) -> tuple[int, int]:
    """(results, distinct designs: variant groups, among them) of a 'more like this' answer."""
    if answer.status_code != 200:
        return 0, 0
    ids = [r["id"] for r in answer.json()["results"]]
    found = recommender.store.get_many(ids)
    return len(ids), len({variant_group(found[i].tags) or i for i in ids if i in found})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--no-train", action="store_true", help="stop after the ingests")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="jewelrec-feed-bench-") as folder:
        root = Path(folder)
        catalog, home = root / "catalog", root / "home"
        rows_out: list[list[object]] = []

        seconds, _ = jewelrec("synth", "--out", catalog, "--products", args.products,
                              "--views", args.views, "--no-progress")
        rows_out.append(["draw the demo catalog", round(seconds, 1), ""])

        statuses: dict[int, int] = {}
        handler = type("Handler", (CountingHandler,), {"statuses": statuses})
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(catalog), **k))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            with open(catalog / "catalog.csv", newline="", encoding="utf-8") as fh:
                products = list(csv.DictReader(fh))
            items = write_google_feed(products, catalog / "google-feed.xml", base)
            feed = f"{base}/google-feed.xml"
            results: dict[str, object] = {"products": items, "views": args.views}

            for label, extra in (("ingest (downloads)", []), ("re-ingest", []),
                                 ("re-ingest --revalidate-images", ["--revalidate-images"])):
                statuses.clear()
                seconds, out = jewelrec("ingest", feed, "--home", home, "--fetch-images",
                                        "--allow-private-urls", "--json", *extra)
                summary = json.loads(out)
                got = ", ".join(f"{n} x {code}" for code, n in sorted(statuses.items()))
                rows_out.append([label, round(seconds, 1),
                                 f"{summary['added']} added, {summary['unchanged']} unchanged, "
                                 f"{len(summary['rejected'])} rejected; images: {got or 'none'}"])
                results[label] = {"seconds": round(seconds, 2), "image_answers": dict(statuses),
                                  "added": summary["added"], "unchanged": summary["unchanged"],
                                  "rejected": len(summary["rejected"])}

            if not args.no_train:
                epochs = ["--epochs", args.epochs] if args.epochs else []
                seconds, _ = jewelrec("train", "--home", home, "--classifier",
                                      DEMO_CLASSIFIER, "--no-progress", *epochs)
                rows_out.append(["train", round(seconds, 1), ""])
                results["train_seconds"] = round(seconds, 1)
                seconds, _ = jewelrec("index", "--home", home, "--no-progress")
                rows_out.append(["index", round(seconds, 1), ""])
                results["index_seconds"] = round(seconds, 1)
                from fastapi.testclient import TestClient

                from jewelrec.server.app import create_app

                start = time.perf_counter()
                similar = f"/api/products/{products[0]['id']}/similar?k=8"
                with TestClient(create_app(home)) as client:
                    answer = client.get(similar)
                    loaded = client.app.state.shop.recommender
                seconds = time.perf_counter() - start
                found, designs = _designs(loaded, answer)
                rows_out.append(["serve + one 'more like this'", round(seconds, 1),
                                 f"HTTP {answer.status_code}, {found} results, {designs} designs"])
                results["similar_results"] = found
                results["similar_designs"] = designs
                with TestClient(create_app(home, recommender=loaded,
                                           group_variants=True)) as client:
                    start = time.perf_counter()
                    answer = client.get(similar)
                    seconds = time.perf_counter() - start
                found, designs = _designs(loaded, answer)
                rows_out.append(["the same, serve --group-variants", round(seconds, 1),
                                 f"HTTP {answer.status_code}, {found} results, {designs} designs"])
                results["grouped_similar"] = {"results": found, "designs": designs,
                                              "seconds": round(seconds, 3)}
        finally:
            server.shutdown()
            server.server_close()

    print(f"Google feed of {args.products} products x {args.views} views ({load_note()})")
    print_table(["step", "seconds", "what happened"], rows_out)
    print(f"results: {write_results('google_feed', results)}")


if __name__ == "__main__":
    main()
