"""What each `jewelrec` subcommand does: parse-free glue between argparse and the stages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jewelrec.console import EXIT_FAILED, EXIT_USAGE, check_seed, home_of, print_json, printable
from jewelrec.errors import CatalogError, JewelrecError
from jewelrec.home import Home


def run_synth(args: argparse.Namespace) -> int:
    from jewelrec.catalog.synthetic import (
        check_products,
        check_sets,
        generate_catalog,
        generate_sets,
    )

    # before check_sets, which lists the products by type
    check_products(args.products, args.views, args.query_photos)
    check_seed(args.seed)
    if args.sets < 0:
        raise JewelrecError("--sets cannot be negative")
    if args.sets:  # refused before the catalog is drawn, not after
        check_sets(args.sets, args.products, args.seed)
    path = generate_catalog(
        Path(args.out), products=args.products, views=args.views, seed=args.seed,
        query_photos=args.query_photos, progress=not args.no_progress,
    )
    print(f"wrote {args.products} products x {args.views} views: {path}")
    if args.sets:
        sets = generate_sets(Path(args.out), sets=args.sets, products=args.products,
                             seed=args.seed, progress=not args.no_progress)
        print(f"wrote {args.sets} set photos: {sets}")
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    from jewelrec.catalog.feeds import FeedOptions, TypeRules
    from jewelrec.catalog.ingest import IngestSummary, ingest
    from jewelrec.links import is_http_ref

    options = FeedOptions(types=TypeRules.load(args.types), shop_url=args.shop_url,
                          currency=args.currency.upper() if args.currency else None)
    try:
        summary = ingest(
            args.catalog if is_http_ref(args.catalog) else Path(args.catalog),
            home_of(args), strict=args.strict, prune=args.prune,
            fetch_images=args.fetch_images, allow_private_urls=args.allow_private_urls,
            progress=not args.no_progress and not args.json, format=args.format,
            feed_options=options, fetch_workers=args.fetch_workers,
            revalidate_images=args.revalidate_images,
            placeholder_min=args.placeholder_min, keep_duplicates=args.keep_duplicates,
        )
    except CatalogError as exc:
        if not args.json:
            raise
        # a script still gets its one JSON object, saying what went wrong (and only that one)
        failed = IngestSummary(args.catalog, "unknown", committed=False, error=str(exc))
        print_json(failed.to_dict())
        print(f"jewelrec ingest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print_json(summary.to_dict())
        if summary.error:
            print(f"jewelrec ingest: {summary.error}", file=sys.stderr)
    else:
        print(summary.describe())
        after = next_after_ingest(home_of(args), summary)
        if after:
            print(after)
    if summary.error or (args.strict and summary.rejected):
        return EXIT_FAILED
    return 0


def run_train(args: argparse.Namespace) -> int:
    from jewelrec.train import train_home

    home = home_of(args)
    trained = train_home(
        home, embedder=args.embedder, classifier=args.classifier, epochs=args.epochs,
        seed=args.seed, progress=not args.no_progress and not args.json,
        adapt_seconds=args.adapt_seconds, tune_seconds=args.tune_seconds,
        precision=args.precision,
    )
    if args.json:
        print_json([t.to_dict() for t in trained])
    else:
        for t in trained:
            curve = t.folder / "loss.png"
            extra = f", loss curve {curve}" if curve.exists() else ""
            print(f"trained {t.kind} {t.name} in {t.seconds:.1f}s -> {t.folder}{extra}")
            for warning in t.warnings:
                print(f"warning: {warning}", file=sys.stderr)
        print(f"next: `{home.command('index')}`, for searches to use these models")
    return 0


def next_after_ingest(home: Home, summary) -> str | None:
    """What to run for searches to see an ingest's changes, in the order they need it: a home
    never trained, or whose types changed, trains first (a new shop was sent to `index`, which
    then asked for `train`)."""
    from jewelrec.models.base import model_folder

    if not summary.committed or not (summary.added or summary.updated or summary.removed):
        return None
    trained = model_folder(home.models_dir, "classifier", home.settings().classifier).exists()
    if trained and not (summary.types_added or summary.types_removed):
        return f"next: `{home.command('index')}`, for searches to see these changes"
    return f"next: `{home.command('train')}`, then `{home.command('index')}`"


def run_index(args: argparse.Namespace) -> int:
    from jewelrec.indexing import build_index

    report = build_index(
        home_of(args), embedder=args.embedder, backend=args.backend, milvus_uri=args.milvus_uri,
        progress=not args.no_progress and not args.json,
    )
    if args.json:
        print_json(report.to_dict())
    else:
        print(
            f"indexed {report.images} images of {report.products} products "
            f"({report.embedded} newly embedded) with {report.embedder} on {report.backend} in "
            f"{report.seconds:.1f}s [{report.stages.describe()}] -> version {report.version}"
        )
        if report.excluded:
            print(f"left out {report.excluded} placeholder or shared-photo views flagged at "
                  "ingest (ingest --keep-duplicates keeps them)")
        if report.types_not_learnt:
            print(f"warning: the type classifier was trained before the catalog had "
                  f"{', '.join(report.types_not_learnt)}: photos of them are typed as something "
                  f"else and those pieces are not found by photo; run "
                  f"`{home_of(args).command('train')}` and `{home_of(args).command('index')}` "
                  "again", file=sys.stderr)
    return 0


def filters_from_args(args: argparse.Namespace):
    from jewelrec.search.filters import Filters

    try:
        return Filters.build(
            min_price=args.min_price, max_price=args.max_price, brands=args.brand,
            metals=args.metal,
        )
    except ValueError as exc:  # said with the options' names, as the shopper typed them
        said = str(exc).replace("min_price", "--min-price").replace("max_price", "--max-price")
        raise JewelrecError(said) from exc


def run_recommend(args: argparse.Namespace) -> int:
    from jewelrec.html_report import render_page
    from jewelrec.imaging.segment import Box
    from jewelrec.recommend import Recommender

    if args.k < 1 or args.k > 1000:
        raise JewelrecError("-k must be between 1 and 1000")
    filters = filters_from_args(args)
    html = output_file(args.html, "--html") if args.html is not None else None
    try:
        crop = Box.parse(args.crop) if args.crop else None
    except ValueError as exc:
        raise JewelrecError(f"--crop: {exc}") from exc
    if args.piece is not None and args.piece < 0:
        raise JewelrecError(f"--piece {args.piece}: pieces are numbered from 0")
    if args.all_pieces and crop is not None:
        raise JewelrecError("--all-pieces searches every piece found; --crop searches one box: "
                            "choose one")
    home = home_of(args)
    recommender = Recommender.open(
        home, embedder=args.embedder, classifier=args.classifier, backend=args.backend,
        milvus_uri=args.milvus_uri,
    )
    types = chosen_types_of(args, recommender.store.types())  # the types the shop sells
    if types is not None:  # one type, or "any": every type (the detected one otherwise)
        filters = filters.with_types(types)
    filters = options_as_catalog(filters, recommender.store)
    outcomes = []
    failed = 0
    options = dict(k=args.k, filters=filters, prefer_brand=args.prefer_brand,
                   group_variants=args.group_variants, text=args.words)
    for path in args.photos:
        photo = printable(path)  # the name as shown: any bytes the file system allowed
        try:
            if args.all_pieces:
                recs = recommender.recommend_pieces(Path(path), photo_name=photo, **options)
            else:
                recs = [recommender.recommend(Path(path), crop=crop, piece=args.piece,
                                              photo_name=photo, **options)]
        except (JewelrecError, ValueError, OSError) as exc:
            failed += 1
            message = printable(str(exc))
            print(f"{photo}: {message}", file=sys.stderr)
            outcomes.append((path, message))
            if args.json:  # one line per photo, so a script reading them stays in step
                print_json({"photo": photo, "error": message})
            continue
        outcomes.extend((path, rec) for rec in recs)
        if args.json:
            print_json([rec.to_dict() for rec in recs] if args.all_pieces
                       else recs[0].to_dict())
        else:
            print("\n".join(format_table(rec) for rec in recs))
    if html:
        render_page(home, html, outcomes)
        print(f"wrote {args.html}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_FAILED if failed else 0


def output_file(path: str, option: str) -> Path:
    """The page an option names for output, refused before any work when it is a folder or
    a file that is no page (`--html photo.jpg` replaced the photo it was asked about;
    `--html home/catalog.sqlite` the catalog)."""
    if not path.strip():  # `--html ""` from a script whose variable was empty
        raise JewelrecError(f"{option} names no file: give the path of the page to write")
    out = Path(path)
    if out.is_dir():
        raise JewelrecError(f"{option} {path} is a folder: name the file to write")
    if out.exists() and out.suffix.lower() not in {".html", ".htm"}:
        raise JewelrecError(f"{option} {path} exists and is not an HTML page: name a .html file "
                            "(or remove that file first)")
    return out


def format_table(rec) -> str:
    searched = ", ".join(rec.searched_types) if rec.searched_types else "all types"
    lines = [
        f"{rec.photo}: {rec.type} ({percent(rec.type_confidence)}); searched {searched}",
    ]
    if len(rec.pieces) > 1:
        lines.append(f"  {format_pieces(rec)}")
    if rec.applied is not None:
        lines.append(f"  your words: {format_applied(rec.applied)}")
        lines += [f"  note: {note}" for note in rec.applied.get("notes", [])]
    if not rec.recognised:
        lines.append("  this doesn't look like jewelry from this shop; closest pieces anyway:")
    if not rec.type_decided:
        options = " or ".join(f"{a.type} ({percent(a.probability)})" for a in rec.type_alternatives)
        lines.append(f"  not sure of the type: {options}? (--type to choose)")
    return "\n".join([*lines, *format_results(rec.results)])


def percent(probability: float) -> str:
    """A probability as a whole percentage that never overstates: 0.9996 is ">99%" (an unsure
    answer at "100%" reads as a contradiction), 0.004 is "<1%"."""
    shown = round(100 * probability)
    if shown >= 100 and probability < 1:
        return ">99%"
    if shown <= 0 < probability:
        return "<1%"
    return f"{shown}%"


def format_pieces(rec) -> str:
    """Which of the photo's pieces the answer searched, and the others (--piece I)."""
    def said(i: int) -> str:
        p = rec.pieces[i]
        return f"{i}: {p.type} ({percent(p.confidence)}) at {','.join(str(v) for v in p.box)}"

    others = "; ".join(said(i) for i in range(len(rec.pieces)) if i != rec.piece)
    searched = "your --crop" if rec.piece is None else f"piece {said(rec.piece)}"
    return (f"searched {searched}; {len(rec.pieces)} pieces in the photo, other: {others} "
            "(--piece I, --all-pieces)")


def options_as_catalog(filters, store):
    """`--brand` / `--metal` as the catalog writes them ("northstone" is its "Northstone"), or
    a clear error naming the option for one it lacks: search/filters.spelled_as_catalog, as
    the API and the Python API read them."""
    from jewelrec.search.filters import spelled_as_catalog

    try:
        return spelled_as_catalog(filters, store.facets())
    except ValueError as exc:
        said = str(exc)
        for option in ("type", "brand", "metal"):
            said = said.replace(f"unknown {option}", f"--{option}: unknown {option}")
        raise JewelrecError(said) from exc


def chosen_types_of(args: argparse.Namespace, known) -> list[str] | None:
    """The types `--type` names (None: not given), or a clear error for one the catalog lacks."""
    from jewelrec.search.filters import chosen_types

    try:
        return chosen_types(args.type, known)
    except ValueError as exc:
        raise JewelrecError(f"--type: {exc}") from exc


def format_results(results, empty: str = "no products match the filters") -> list[str]:
    """One line per result (score, price, title, brand, link), for recommend and search."""
    from jewelrec.catalog.importers import shown_text  # stores ingested before it was applied

    if not results:
        return [f"  {empty}"]
    return [
        f"  {i:>2}. {r.score:6.3f}  {r.price:>10,.2f} {r.currency}  "
        f"{shown_text(r.title)[:48]:<48} {shown_text(r.brand or '')[:18]:<18} {r.url}"
        for i, r in enumerate(results, 1)
    ]


def run_search(args: argparse.Namespace) -> int:
    from jewelrec.text.search import TextSearcher

    if args.k < 1 or args.k > 1000:
        raise JewelrecError("-k must be between 1 and 1000")
    filters = filters_from_args(args)
    searcher = TextSearcher.open(home_of(args))
    types = chosen_types_of(args, searcher.store.types())
    if types is not None:
        filters = filters.with_types(types)
    filters = options_as_catalog(filters, searcher.store)
    try:
        answer = searcher.search(" ".join(args.query), k=args.k, filters=filters,
                                 prefer_brand_name=args.prefer_brand,
                                 group_variants=args.group_variants)
    except ValueError as exc:
        raise JewelrecError(str(exc)) from exc
    if args.json:
        print_json(answer.to_dict())
        return 0
    said = format_applied(answer.applied)
    print(f"{answer.query}: filters from the words: {said}; ranked by "
          f"{' + '.join(answer.ranked_by)}")
    for note in answer.applied.get("notes", []):
        print(f"  note: {note}")
    print("\n".join(format_results(answer.results, "no product matches these words and filters")))
    return 0


def format_applied(applied: dict) -> str:
    """The filters a query's words applied, as one line ("metals ['silver']"; "none"); its
    notes are the caller's to print, a line each."""
    given = {key: value for key, value in applied.items()
             if value not in (None, [], {}) and key != "notes"}
    return ", ".join(f"{key} {value}" for key, value in given.items()) or "none"


def run_evaluate(args: argparse.Namespace) -> int:
    from jewelrec.evaluate import evaluate_home

    report = evaluate_home(
        home_of(args), embedder=args.embedder, classifier=args.classifier,
        progress=not args.no_progress and not args.json,
    )
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.describe())
    return 0


def run_report(args: argparse.Namespace) -> int:
    from jewelrec.errors import ImageError
    from jewelrec.imaging.io import load_image
    from jewelrec.report import build_report

    if not 0 <= args.examples <= 50:
        raise JewelrecError("--examples must be between 0 and 50")
    home = home_of(args)
    out = output_file(args.out, "--out") if args.out is not None else home.root / "report.html"
    photos = [Path(p) for p in args.photo or []]
    for photo in photos:
        if photo.is_dir():
            raise JewelrecError(f"--photo {printable(str(photo))} is a folder: name a photo file")
        if not photo.is_file():
            raise JewelrecError(f"--photo {printable(str(photo))}: no such file")
        try:  # a text file named .jpg was said only inside the page, the command exiting 0
            load_image(photo)
        except ImageError as exc:
            raise JewelrecError(f"--photo: {printable(str(exc))}") from exc
    summary = build_report(
        home, out, photos=photos,
        examples=args.examples, progress=not args.no_progress and not args.json,
    )
    if args.json:
        print_json(summary.to_dict())
    else:
        for section, why in summary.unavailable.items():
            print(f"section {section} not available: {why}", file=sys.stderr)
        print(f"wrote {summary.path.resolve()}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from jewelrec.server.app import serve

    serve(
        home_of(args), host=args.host, port=args.port, embedder=args.embedder,
        classifier=args.classifier, backend=args.backend, milvus_uri=args.milvus_uri,
        allow_origins=args.allow_origin or (), group_variants=args.group_variants,
        max_queue=args.max_queue, processes=args.workers,
    )
    return 0
