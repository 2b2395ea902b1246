"""`jewelrec demo` (and `make demo`): the whole pipeline on a generated catalog.

synth -> ingest -> train -> index -> recommend a few shopper photos -> HTML page -> report ->
serve (`jewelrec serve` in this process's place, so the server does not keep what training
held in memory).
A second run skips what is already up to date (same catalog parameters, same training data,
same model), so it goes straight to the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from jewelrec.console import check_seed, home_of
from jewelrec.home import Home, atomic_write_json
from jewelrec.search import versions

DEMO_CLASSIFIER = "efficientnet-head"  # see `run_demo`: the frozen head suits drawn shapes


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _synth(folder: Path, products: int, views: int, seed: int) -> Path:
    from jewelrec.catalog.synthetic import generate_catalog

    params = {"products": products, "views": views, "seed": seed, "query_photos": 6}
    marker = folder / "synth.json"
    csv = folder / "catalog.csv"
    if csv.exists() and marker.exists() and json.loads(marker.read_text()) == params:
        print(f"demo catalog already drawn: {csv}")
        return csv
    generate_catalog(folder, **params)
    atomic_write_json(marker, params)
    return csv


def _models_current(home: Home, names: dict[str, str], fingerprint: str) -> bool:
    from jewelrec.models.base import model_folder

    for kind, name in names.items():
        record = model_folder(home.models_dir, kind, name) / "training.json"
        if not record.exists():
            return False
        if json.loads(record.read_text()).get("training_data_fingerprint") != fingerprint:
            return False
    return True


def _index_current(home: Home, embedder: str, catalog_fingerprint: str) -> bool:
    from jewelrec.indexing import model_fingerprint
    from jewelrec.models.base import model_folder

    try:
        meta = versions.read_meta(home)
    except Exception:  # noqa: BLE001 - no usable index means: build one
        return False
    folder = model_folder(home.models_dir, "embedder", embedder)
    return (
        meta.get("embedder") == embedder
        and meta.get("catalog_fingerprint") == catalog_fingerprint
        and folder.exists()
        and meta.get("embedder_fingerprint") == model_fingerprint(folder)
    )


def run_demo(args: argparse.Namespace) -> int:
    from jewelrec.catalog.ingest import ingest
    from jewelrec.catalog.store import CatalogStore
    from jewelrec.commands import format_table
    from jewelrec.evaluate import evaluate_home
    from jewelrec.html_report import render_page
    from jewelrec.indexing import build_index
    from jewelrec.recommend import Recommender
    from jewelrec.report import build_report
    from jewelrec.train import train_home

    home = home_of(args)
    _check_arguments(args, home)  # all of them, before the home changes at all
    home.ensure()
    # The demo's types are drawn shapes the frozen head already tells apart; fine-tuning for
    # real shops' photos (the default classifier) would add about ten minutes here.
    settings = home.update_settings(embedder=args.embedder,
                                    classifier=args.classifier or DEMO_CLASSIFIER)
    names = {"classifier": settings.classifier, "embedder": settings.embedder}
    folder = home.root / "demo-catalog"

    _step(f"1/6 draw the demo catalog ({args.products} products x {args.views} views)")
    csv = _synth(folder, args.products, args.views, args.seed)

    _step("2/6 ingest it")
    print(ingest(csv, home, prune=True).describe())
    fingerprint = CatalogStore.open(home).fingerprint()

    _step(f"3/6 train {names['classifier']} and {names['embedder']}")
    if _models_current(home, names, fingerprint):
        print("models are up to date with the catalog")
    else:
        for t in train_home(home, epochs=args.epochs, seed=args.seed):
            print(f"trained {t.kind} {t.name} in {t.seconds:.1f}s -> {t.folder}")

    _step("4/6 build the search index")
    if _index_current(home, names["embedder"], fingerprint):
        print(f"index {versions.current_version(home)} is up to date")
    else:
        report = build_index(home)
        print(f"indexed {report.images} images in {report.seconds:.1f}s -> {report.version}")

    _step("5/6 evaluate on held-out views")
    evaluation = evaluate_home(home)
    print(evaluation.describe())

    _step("6/6 recommend for a few shopper photos")
    recommender = Recommender.open(home)
    outcomes = []
    for photo in sorted((folder / "queries").glob("*.jpg")):
        rec = recommender.recommend(photo, k=8)
        outcomes.append((str(photo), rec))
        print(format_table(rec))
    page = home.root / "demo-results.html"
    render_page(home, page, outcomes)
    print(f"\nresults page: {page.resolve()}")
    written = build_report(home, home.root / "report.html", evaluation=evaluation,
                           photos=sorted((folder / "queries").glob("*.jpg"))[:4])
    print(f"report: {written.path.resolve()}")

    if args.no_serve:
        return 0
    print(f"\nserving the shop page at http://{args.host}:{args.port}/  (Ctrl-C stops)")
    serve_afresh(home, args.host, args.port)
    return 0


def _check_arguments(args: argparse.Namespace, home: Home) -> None:
    """Refuse what would fail later (a bad --epochs after the catalog was replaced, a bad
    --port after minutes of training) and a home that holds a shop's own catalog, which the
    demo's ingest would prune to the demo's products."""
    from jewelrec.catalog.synthetic import check_products
    from jewelrec.errors import JewelrecError

    check_products(args.products, args.views)
    check_seed(args.seed)
    if args.epochs is not None and args.epochs < 1:
        raise JewelrecError(f"--epochs must be at least 1, got {args.epochs}")
    if not args.no_serve and not 0 <= args.port <= 65535:
        raise JewelrecError(f"--port {args.port}: expected 0 to 65535")
    last = _last_ingest(home)
    source = Path(str((last or {}).get("catalog")))  # as given then: relative to that run's cwd
    if last and (source.parent.name, source.name) != ("demo-catalog", "catalog.csv"):
        raise JewelrecError(
            f"{home.root} holds a shop's catalog (last ingested from {last.get('catalog')}): the "
            "demo would replace it with drawn products; give the demo a --home of its own")


def _last_ingest(home: Home) -> dict | None:
    """What the home's last ingest recorded (its catalog's source), None for a new home."""
    from jewelrec.catalog.store import CatalogStore

    if not home.catalog_db.exists():
        return None
    store = CatalogStore.open(home)
    try:
        last = store.meta("last_ingest")
    finally:
        store.close()
    return last if isinstance(last, dict) else None


def serve_command(home: Home, host: str, port: int) -> list[str]:
    """The `jewelrec serve` command line that serves `home` as the demo would."""
    return [sys.executable, "-m", "jewelrec.cli", "serve", "--home", str(home.root.resolve()),
            "--host", host, "--port", str(port)]


def serve_afresh(home: Home, host: str, port: int) -> None:
    """Serve the demo's home from a fresh program: `jewelrec serve` takes this process's place
    (exec, same process and terminal, so Ctrl-C stops it as before), so what training, indexing
    and evaluating left in memory here (2.1 GB on the 2,000-product demo: torch, features) is
    not held for as long as the page is served. Where exec does not replace the process (not
    POSIX), the server runs here instead."""
    if os.name != "posix":
        from jewelrec.server.app import serve

        serve(home, host=host, port=port)
        return
    command = serve_command(home, host, port)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
