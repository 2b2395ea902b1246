"""The `jewelrec` command: one entry point, a subcommand per stage.

    synth -> ingest -> train -> index -> recommend / evaluate / serve      (demo runs them all)

Errors the user can fix print one line and exit non-zero; set JEWELREC_DEBUG=1 for a traceback.
Each subcommand's parser names the function that runs it (`set_defaults(run=...)`), so a wrong
name fails when the parser is built, not when someone first runs that command.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from jewelrec import __version__, commands
from jewelrec.console import EXIT_USAGE, home_of, print_error
from jewelrec.demo import run_demo
from jewelrec.errors import JewelrecError
from jewelrec.home import PRECISIONS, storage_error

# Options whose value may begin with "-" (a crop box at the photo's edge: -1,0,5,5). argparse
# takes such a word for an option ("expected one argument"); written as --crop=-1,0,5,5 it is
# a value, so `_join_dash_values` writes it that way and the box check explains the problem.
DASH_VALUE_OPTIONS = ("--crop",)
_NUMBER_LIST = re.compile(r"-[\d.]*(,\s*-?[\d.]*)+")


class _IntermixedParser(argparse.ArgumentParser):
    """A subcommand's parser whose positionals may come before, between and after its options
    (`recommend a.jpg --all-pieces b.jpg`): plain argparse takes a `nargs="+"` positional in one
    run and calls the photos after an option 'unrecognized arguments'. With "--" the plain
    parse runs: Python 3.11's intermixed parse drops the "--" and then reads `-a.jpg` after it
    as an option."""

    _intermixing = False  # set while parse_known_intermixed_args runs its own two passes

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._intermixing or (args is not None and "--" in args):
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _home_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        metavar="DIR",
        help="data home (catalog, images, models, index); "
        "default $JEWELREC_HOME or ./jewelrec-data",
    )


def _model_args(parser: argparse.ArgumentParser) -> None:
    from jewelrec.models.base import CLASSIFIERS  # names only: no model is imported

    _embedder_arg(parser, "what the home records, a new home efficientnet; -gap: the first "
                  "wave's global average pool, kept as a baseline; -adapted: the network's last "
                  "block trained on the catalog, see --adapt-seconds")
    parser.add_argument(
        "--classifier", choices=list(CLASSIFIERS), metavar="CLASSIFIER",
        help=f"type classifier name: {', '.join(CLASSIFIERS)} "
        "(default: what the home records, a new home efficientnet-tuned, EfficientNet-Lite1's "
        "last two stages fine-tuned for the type on the catalog, typing each photo whole and "
        "zoomed in; `demo` uses efficientnet-head)")


def _embedder_arg(parser: argparse.ArgumentParser, default: str) -> None:
    from jewelrec.models.base import EMBEDDERS  # names only: no model is imported

    parser.add_argument("--embedder", choices=list(EMBEDDERS), metavar="EMBEDDER",
                        help=f"embedder name: {', '.join(EMBEDDERS)} (default: {default})")


def _backend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=["exact", "milvus"],
        help="vector index backend (default: what the home records, else exact)",
    )
    parser.add_argument("--milvus-uri", metavar="URI", help="Milvus server, e.g. http://host:19530")


def price_amount(text: str) -> float:
    """A price bound as shops write it ("199.99", "199,99", "1,299", "1 299,00"), for argparse;
    the same reading as catalog prices (catalog/prices.py)."""
    from jewelrec.catalog.prices import plain_amount

    try:
        return float(plain_amount(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a price (write it as 199.99 or 199,99)") from None


def _filter_args(parser: argparse.ArgumentParser, type_default: str) -> None:
    parser.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    parser.add_argument("--min-price", type=price_amount, metavar="P",
                        help="lowest price to show")
    parser.add_argument("--max-price", type=price_amount, metavar="P",
                        help="highest price to show")
    parser.add_argument("--type", help="search only this type (as the catalog names it, in any "
                        f"case), or 'any': every type (default: {type_default})")
    parser.add_argument("--brand", action="append", help="only this brand (repeatable)")
    parser.add_argument("--metal", action="append", help="only this metal (repeatable)")


def _prefer_brand_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefer-brand", metavar="BRAND",
                        help="rank this brand's pieces a little higher, without leaving other "
                        "brands out")


def _group_variants_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--group-variants", action="store_true",
                        help="show one product per variant group (a shop feed's item_group_id, "
                        "a 'group:ID' tag): the best-ranked variant of each design")


def _feed_args(parser: argparse.ArgumentParser) -> None:
    from jewelrec.catalog.feeds import FORMATS

    parser.add_argument("--format", choices=FORMATS, default="auto",
                        help="catalog format (default auto: told from the content)")
    parser.add_argument("--types", metavar="RULES.toml",
                        help="extra rules mapping category text to types (shop feeds)")
    parser.add_argument("--shop-url", metavar="URL",
                        help="the shop's address, for Shopify/WooCommerce product links")
    parser.add_argument("--currency", metavar="CODE",
                        help="currency of exports that state none (Shopify, WooCommerce)")
    parser.add_argument("--fetch-workers", type=int, default=8, metavar="N",
                        help="image downloads at a time with --fetch-images (default 8)")
    parser.add_argument("--revalidate-images", action="store_true",
                        help="ask image servers whether images seen before changed "
                        "(conditional requests: unchanged ones are not downloaded again)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jewelrec",
        description="Image-based jewelry recommender: show it a photo of a piece you like, get "
        "the most similar pieces of a shop's catalog in your price range.",
        epilog="Typical run: jewelrec synth --out demo && jewelrec ingest demo/catalog.csv && "
        "jewelrec train && jewelrec index && jewelrec recommend photo.jpg",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--version", action="version", version=f"jewelrec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_IntermixedParser)

    p = sub.add_parser("synth", help="draw a synthetic demo catalog (CSV + images)",
                       description="Draw a procedural jewelry catalog: earrings (pairs), "
                       "necklaces, rings, bracelets in gold, silver and rose gold, several views "
                       "each. Writes OUT/catalog.csv and OUT/images/.")
    p.set_defaults(run=commands.run_synth)
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--products", type=int, default=2000, help="number of products (default 2000)")
    p.add_argument("--views", type=int, default=3, help="photos per product (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same catalog")
    p.add_argument("--query-photos", type=int, default=0, metavar="N",
                   help="also draw N extra shopper photos of catalog products in OUT/queries/")
    p.add_argument("--sets", type=int, default=0, metavar="N",
                   help="also draw N photos of sets (2-3 catalog products each: necklace + "
                   "earrings, rings side by side, a bracelet with a ring) on plain, gradient and "
                   "textured backgrounds in OUT/sets/, their true boxes in OUT/sets/sets.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("ingest", help="load a catalog file into the data home",
                       description="Read a catalog (CSV, JSON Lines, or ShopStyle-style product "
                       "JSON), validate every row, store images and products. Re-running adds, "
                       "updates and (with --prune) removes products. Bad rows are reported and "
                       "skipped, never half-stored.")
    p.set_defaults(run=commands.run_ingest)
    p.add_argument("catalog", metavar="CATALOG",
                   help="catalog file or http(s) feed URL (CSV, JSON Lines, ShopStyle JSON, "
                   "Google Merchant XML/TSV, Shopify or WooCommerce CSV export)")
    _home_arg(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--strict", action="store_true",
                   help="change nothing and exit 1 if any row is rejected")
    p.add_argument("--prune", action="store_true", help="remove products no longer listed")
    p.add_argument("--fetch-images", action="store_true",
                   help="download http(s) image URLs (timeout and size limit apply)")
    p.add_argument("--allow-private-urls", action="store_true",
                   help="allow image URLs on loopback/private addresses (tests, intranets)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--placeholder-min", type=int, default=5, metavar="N",
                   help="an image (or near-identical copies) on N or more products is a "
                   "placeholder, left out of the index (default 5)")
    p.add_argument("--keep-duplicates", action="store_true",
                   help="report placeholders and photos shared by products, but index them")
    _feed_args(p)

    p = sub.add_parser("train", help="train the type classifier and the embedder",
                       description="Train the home's type classifier and embedder on its "
                       "catalog (held-out views excluded) and save them under DIR/models/ with "
                       "loss curves.")
    p.set_defaults(run=commands.run_train)
    _home_arg(p)
    _model_args(p)
    p.add_argument("--epochs", type=int, help="training epochs (default: each model's own)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same weights")
    p.add_argument("--adapt-seconds", type=float, metavar="S",
                   help="time budget for adapting the network to the catalog (embedder "
                   "efficientnet-adapted; default 300; 0 keeps it frozen)")
    p.add_argument("--tune-seconds", type=float, metavar="S",
                   help="time budget for fine-tuning a network's last stages for the type "
                   "(classifier efficientnet-tuned: its views, trainings and held-out "
                   "passes together, the photos sampled when a large catalog's do not fit; "
                   "default 720: `train` of 2,100 photos in about 14 minutes on 2 cores; 0: "
                   "the frozen head alone)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="how the network computes: int8 (a pass in about 0.64x the time on a "
                   "CPU with VNNI, float's time without; same quality measured on real "
                   "photos; a new home's default) or fp32 (a home from before int8 keeps "
                   "it until told). Run `index` after changing it")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("index", help="embed the catalog and publish a new search index",
                       description="Embed every catalog image and publish a new index; a "
                       "running server keeps answering from the old one until the new one is "
                       "complete.")
    p.set_defaults(run=commands.run_index)
    _home_arg(p)
    _embedder_arg(p, "what the home records")
    _backend_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("recommend", help="find catalog pieces similar to photos",
                       description="For each photo: detect the jewelry type, then list the "
                       "most similar catalog products of that type that pass the filters.")
    p.set_defaults(run=commands.run_recommend)
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="photo files")
    _home_arg(p)
    _filter_args(p, "the detected type")
    p.add_argument("--crop", metavar="X0,Y0,X1,Y1",
                   help="search only this box of the photo (pixels, e.g. --crop=10,20,300,260)")
    pieces = p.add_mutually_exclusive_group()
    pieces.add_argument("--piece", type=int, metavar="I",
                        help="search piece I of the photo (0 = the most salient; the answer "
                        "lists the pieces found); --crop wins over it")
    pieces.add_argument("--all-pieces", action="store_true",
                        help="answer every piece found in the photo (with --json: one list of "
                        "answers per photo)")
    _model_args(p)
    _backend_args(p)
    p.add_argument("--json", action="store_true", help="JSON Lines, one object per photo "
                   "(with --all-pieces: one list per photo; a photo that fails: "
                   '{"photo": ..., "error": ...})')
    p.add_argument("--html", metavar="OUT", help="also write an HTML page of the results")
    _prefer_brand_arg(p)
    _group_variants_arg(p)
    p.add_argument("--words", metavar="WORDS",
                   help='words with the photo, e.g. "but in silver", "with a pearl": words '
                   "naming a type, metal, stone, brand or tag of the catalog and a price phrase "
                   "filter (over the photo's type), the rest re-rank the similar pieces")

    p = sub.add_parser("search", help="find catalog pieces by words",
                       description="Text search: words naming a type, metal, stone, brand or "
                       "tag of the catalog, and a price phrase ('under 100'), become filters; "
                       "the rest ranks by BM25 over the catalog's text fused with title vectors.")
    p.set_defaults(run=commands.run_search)
    p.add_argument("query", nargs="+", metavar="WORDS", help='e.g. "rose gold hoop earrings"')
    _home_arg(p)
    _filter_args(p, "the type the words name, else every type")
    _prefer_brand_arg(p)
    _group_variants_arg(p)
    p.add_argument("--json", action="store_true", help="print the answer as one JSON object")

    p = sub.add_parser("evaluate", help="measure quality and speed on held-out views",
                       description="Held-out views of catalog products are searched against an "
                       "index of the other views: type accuracy, confusion matrix, Recall@1/5/10, "
                       "type and metal precision@10, median latency.")
    p.set_defaults(run=commands.run_evaluate)
    _home_arg(p)
    _model_args(p)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("report", help="write one self-contained HTML report with plots",
                       description="One HTML file, images inlined, no script, no network: "
                       "catalog composition, hygiene findings, training curves, confusion matrix, "
                       "Recall@K and precision per type, confidence/accuracy curve, example "
                       "queries and a map of the catalog's embeddings. Runs the held-out "
                       "evaluation as `evaluate` does.")
    p.set_defaults(run=commands.run_report)
    _home_arg(p)
    p.add_argument("--out", metavar="FILE", help="where to write (default HOME/report.html)")
    p.add_argument("--photo", action="append", metavar="PHOTO",
                   help="an example query photo (repeatable; default: held-out catalog views)")
    p.add_argument("--examples", type=int, default=4, metavar="N",
                   help="held-out views shown as example queries (default 4)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("serve", help="serve the shopper's web page and the JSON API",
                       description="Serve the web page and the HTTP API (OpenAPI at "
                       "/openapi.json) from the home's models and index.")
    p.set_defaults(run=commands.run_serve)
    _home_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                   help="a shop site whose pages may show the similar-pieces widget, e.g. "
                   "https://shop.example (repeatable; CORS on the widget's route only)")
    p.add_argument("--max-queue", type=int, default=64, metavar="N",
                   help="photo and text queries in the server at once, running or waiting; one "
                   "more is answered at once with 503 and Retry-After: 1 (default 64; per "
                   "process with --workers). An upload counts once its photo has arrived; as "
                   "many may be arriving at once, each within 30 s (else 408)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="server processes on the port (default: one per core, at most 4). One "
                   "process keeps at most about 1.6 cores busy (Python's lock); more answer more "
                   "shoppers at once. Each loads its own copy of the models and the index "
                   "(about 150 MB for 2,000 products) and runs its models on cores / N threads "
                   "($JEWELREC_MODEL_THREADS overrides)")
    _group_variants_arg(p)
    _model_args(p)
    _backend_args(p)

    p = sub.add_parser("demo", help="the whole pipeline on a generated demo catalog",
                       description="synth -> ingest -> train -> index -> recommend a few "
                       "shopper photos -> HTML page -> serve. Steps already done are skipped.")
    p.set_defaults(run=run_demo)
    _home_arg(p)
    p.add_argument("--products", type=int, default=2000, help="demo catalog size (default 2000)")
    p.add_argument("--views", type=int, default=3, help="photos per product (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--epochs", type=int, help="training epochs (default: each model's own)")
    _model_args(p)
    p.add_argument("--no-serve", action="store_true", help="stop before serving the web page")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on")
    p.add_argument("--port", type=int, default=8000, help="port to serve on")
    return parser


def _join_dash_values(argv: Sequence[str]) -> list[str]:
    """["--crop", "-1,0,5,5"] -> ["--crop=-1,0,5,5"]: the number list is the option's value."""
    out: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            out.extend([word, *words])
            break
        if word in DASH_VALUE_OPTIONS:
            value = next(words, None)
            if value is not None and _NUMBER_LIST.fullmatch(value):
                out.append(f"{word}={value}")
                continue
            out.extend([word] if value is None else [word, value])
            continue
        out.append(word)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_join_dash_values(sys.argv[1:] if argv is None else argv))
    # Vector search is a memory-bound matrix-vector product: one BLAS thread does it as fast as
    # two, and spare threads only fight the model runtime for the cores (measured: a query's CPU
    # cost fell from 58 to 37 ms). Must be set before numpy loads; the user's setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.run(args)
    except JewelrecError as exc:
        print_error(args, str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early (`| head`): nothing is wrong with the home
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that exit's flush of stdout fails no more
        return 128 + 13  # as a program killed by SIGPIPE, what shells report for `yes | head`
    except OSError as exc:  # a disk or permission problem no stage put into words: name it
        if os.environ.get("JEWELREC_DEBUG"):
            raise
        name = exc.filename
        where = Path(os.fsdecode(name)) if isinstance(name, str | bytes) else home_of(args).root
        print_error(args, str(storage_error("use", where, exc)))
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - last line of defence: a message, not a traceback
        if os.environ.get("JEWELREC_DEBUG"):
            raise
        print_error(args, f"unexpected error: {type(exc).__name__}: {exc}\n"
                    "(set JEWELREC_DEBUG=1 to see the traceback)")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
