"""The CLI dispatches by reference, not by string (issue 10, design): every subcommand's parser
names the function that runs it, and the command modules do not import the CLI back."""

from __future__ import annotations

import subprocess
import sys

from jewelrec.cli import EXIT_USAGE, build_parser, main

COMMANDS = {"synth", "ingest", "train", "index", "recommend", "search", "evaluate", "report",
            "serve", "demo"}


def test_every_subcommand_names_the_function_that_runs_it():
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(subcommands) == COMMANDS  # names unchanged
    runners = {name: sub.get_default("run") for name, sub in subcommands.items()}
    assert all(callable(run) for run in runners.values()), runners
    assert runners["index"].__name__ == "run_index" and runners["demo"].__name__ == "run_demo"
    args = parser.parse_args(["index", "--home", "somewhere"])
    assert args.run is runners["index"] and args.command == "index"


def test_a_dispatched_command_runs_and_its_error_is_one_line(tmp_path, capsys):
    assert main(["index", "--home", str(tmp_path / "empty")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("jewelrec index: no catalog in") and err.count("\n") == 1


def test_the_command_modules_do_not_import_the_cli():
    code = ("import sys, jewelrec.commands, jewelrec.demo; "
            "sys.exit('jewelrec.cli' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_an_unknown_model_name_is_refused_with_the_names_there_are(tmp_path, capsys):
    """Not advice to index with a model that does not exist."""
    import pytest

    for argv in (["recommend", "x.jpg", "--embedder", "foo"], ["index", "--embedder", "foo"],
                 ["train", "--classifier", "bar"]):
        with pytest.raises(SystemExit) as stopped:
            main([*argv, "--home", str(tmp_path / "home")])
        err = capsys.readouterr().err
        assert stopped.value.code == EXIT_USAGE and "invalid choice" in err, argv
        assert "efficientnet" in err and "jewelrec index --embedder" not in err


def test_a_type_is_read_as_the_catalog_stores_types_and_any_means_every_type():
    from jewelrec.search.filters import chosen_types

    known = ["ring", "rose ring", "necklace"]
    assert chosen_types(None, known) is None and chosen_types("  ", known) is None
    assert chosen_types("RING", known) == ["ring"]
    assert chosen_types(" Rose  Ring ", known) == ["rose ring"]
    assert chosen_types("Any", known) == ["necklace", "ring", "rose ring"]
    import pytest

    with pytest.raises(ValueError, match=r"unknown type 'spoon': use one of necklace, ring, "
                                         r"rose ring \(or 'any'\)"):
        chosen_types("spoon", known)


def test_a_home_that_is_a_file_is_one_clear_line(tmp_path, capsys):
    afile = tmp_path / "not-a-folder"
    afile.write_text("x")
    for argv in (["index"], ["ingest", str(afile)], ["search", "ring"]):
        assert main([*argv, "--home", str(afile)]) == EXIT_USAGE, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is a file, not a folder" in err, err


def test_an_output_file_that_is_a_folder_is_refused_before_any_work(tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    for argv in (["report", "--out", str(folder)], ["recommend", "x.jpg", "--html", str(folder)]):
        assert main([*argv, "--home", str(tmp_path / "no-home")]) == EXIT_USAGE, argv
        err = capsys.readouterr().err
        assert f"{folder} is a folder: name the file to write" in err, err
    photo = tmp_path / "photo.jpg"  # `--html photo.jpg` replaced the photo with a page
    photo.write_bytes(b"\xff\xd8 a shopper's photo")
    for argv in (["report", "--out", str(photo)], ["recommend", str(photo), "--html", str(photo)]):
        assert main([*argv, "--home", str(tmp_path / "no-home")]) == EXIT_USAGE, argv
        assert "exists and is not an HTML page" in capsys.readouterr().err
    assert photo.read_bytes() == b"\xff\xd8 a shopper's photo"
    for argv in (["report", "--out", ""], ["recommend", str(photo), "--html", " "]):
        assert main([*argv, "--home", str(tmp_path / "no-home")]) == EXIT_USAGE, argv
        assert "names no file" in capsys.readouterr().err


def test_training_options_that_would_save_an_untrained_model_are_refused(tmp_path, capsys):
    for option, value, said in (("--epochs", "0", "--epochs must be at least 1"),
                                ("--epochs", "-3", "--epochs must be at least 1"),
                                ("--seed", "-1", "--seed must be between 0 and 4294967295")):
        assert main(["train", "--home", str(tmp_path / "home"), option, value]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err


def test_an_evaluation_with_nothing_to_ask_with_says_why():
    from jewelrec.evaluate import EvaluationReport

    said = EvaluationReport("efficientnet", "efficientnet-tuned", 0, None).describe()
    assert "every product has one photo" in said and "n/a" not in said


def test_a_catalog_that_cannot_be_read_leaves_no_empty_home(tmp_path, capsys):
    home = tmp_path / "home"
    assert main(["ingest", str(tmp_path / "missing.csv"), "--home", str(home)]) != 0
    assert "catalog file not found" in capsys.readouterr().err
    assert not home.exists()


def test_demo_refuses_bad_arguments_before_it_changes_the_home(tmp_path, capsys):
    """`demo --epochs 0` replaced the home's catalog with the demo's and rewrote its settings,
    then refused the epochs; `--port 99999` was refused only after the whole pipeline."""
    home = tmp_path / "home"
    for option, value, said in (("--epochs", "0", "--epochs must be at least 1"),
                                ("--products", "0", "--products and --views must be at least 1"),
                                ("--views", "50", "at most 20 photos of each product"),
                                ("--seed", "-1", "--seed must be between 0 and"),
                                ("--port", "99999", "--port 99999: expected 0 to 65535")):
        assert main(["demo", "--home", str(home), option, value]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err
        assert not home.exists()
    assert main(["synth", "--out", str(tmp_path / "s"), "--seed", "-5"]) == EXIT_USAGE
    assert "--seed must be between 0 and" in capsys.readouterr().err


def test_demo_will_not_replace_a_shops_catalog(tmp_path, tiny_home, capsys):
    import shutil

    home = shutil.copytree(tiny_home, tmp_path / "shop")
    settings = (home / "settings.json").read_text()
    assert main(["demo", "--home", str(home), "--no-serve", "--products", "5"]) == EXIT_USAGE
    assert "holds a shop's catalog" in capsys.readouterr().err
    assert (home / "settings.json").read_text() == settings
    assert not (home / "demo-catalog").exists()


def test_a_reader_that_stops_early_is_not_blamed_on_the_home(tmp_path):
    """`jewelrec search ring | head -1` said "cannot use <home>: Broken pipe"."""
    code = ("import sys\nimport jewelrec.commands as c\n"
            "def stopped(args):\n    print('first line', flush=True)\n    raise BrokenPipeError\n"
            "c.run_search = stopped\nfrom jewelrec.cli import main\n"
            f"sys.exit(main(['search', 'ring', '--home', {str(tmp_path)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 141 and done.stderr == "", done.stderr


def test_the_results_page_finds_its_images_from_a_home_whose_path_has_hash_or_percent(
        tiny_home, tiny_query_photo, tmp_path):
    """The page's image links were the plain relative path: a browser read '#1' as a fragment
    and '%20' as a space, and showed no image."""
    import re
    import shutil
    from urllib.parse import unquote

    home = shutil.copytree(tiny_home, tmp_path / "shop#1%20x")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(tiny_query_photo)
    page = tmp_path / "out" / "results.html"
    assert main(["recommend", str(photo), "--home", str(home), "-k", "2",
                 "--html", str(page)]) == 0
    sources = [s for s in re.findall(r"src='([^']+)'", page.read_text())
               if not s.startswith("data:")]
    assert sources and all("#" not in s for s in sources)
    assert all((page.parent / unquote(s)).is_file() for s in sources)


def test_with_json_a_failed_command_says_why_on_stdout_too(tmp_path, capsys):
    """A script reading `--json` output got an empty stdout for a home not ready, and its
    json.loads failed instead of reading the error."""
    import json

    missing = str(tmp_path / "no-home")
    for argv in (["recommend", "x.jpg"], ["search", "gold"], ["evaluate"], ["report"],
                 ["index"]):
        assert main([*argv, "--home", missing, "--json"]) == EXIT_USAGE, argv
        out, err = capsys.readouterr()
        said = json.loads(out)
        assert set(said) == {"error"} and said["error"] and said["error"] in err, (argv, out)
    # ingest's own summary object, with its error: one JSON document, not two
    assert main(["ingest", str(tmp_path / "none.csv"), "--home", missing, "--json"]) == EXIT_USAGE
    said = json.loads(capsys.readouterr().out)
    assert said["committed"] is False and "none.csv" in said["error"]


def test_a_photo_name_that_is_not_utf8_is_shown_not_a_crash(tiny_home, tiny_query_photo,
                                                           tmp_path, capsys):
    """A file name with a byte UTF-8 does not allow crashed `--html` and `report --photo`, and
    made `--json` lines invalid UTF-8."""
    import json
    import os

    photo = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xffname.jpg")
    with open(photo, "wb") as out:
        out.write(tiny_query_photo)
    page = tmp_path / "page.html"
    code = main(["recommend", photo, "--home", str(tiny_home), "-k", "2", "--json",
                 "--html", str(page)])
    out, err = capsys.readouterr()
    assert code == 0, err
    answer = json.loads(out.encode("utf-8"))  # encodable: no lone surrogates left
    assert answer["photo"].endswith("bad\ufffdname.jpg")
    shown = page.read_text(encoding="utf-8")
    assert "bad\ufffdname.jpg" in shown
    assert "Content-Security-Policy" in shown and "default-src 'none'" in shown  # no script
    assert set(answer) >= {"crop", "index_version", "searched_types", "type_probabilities"}
    report = tmp_path / "report.html"
    assert main(["report", "--home", str(tiny_home), "--photo", photo, "--out", str(report),
                 "--examples", "0", "--no-progress"]) == 0
    assert "bad\ufffdname.jpg" in report.read_text(encoding="utf-8")


def test_version(capsys):
    from jewelrec import __version__

    try:
        main(["--version"])
    except SystemExit as done:
        assert done.code == 0
    assert capsys.readouterr().out.strip() == f"jewelrec {__version__}"


def test_a_command_to_run_next_is_quoted_for_pasting(tiny_catalog, tmp_path, capsys):
    """A home with a space in its path gave `jewelrec index --home /x/my shop`, which a shell
    reads as two words."""
    import shlex

    home = tmp_path / "my shop ü"
    assert main(["ingest", str(tiny_catalog / "catalog.csv"), "--home", str(home),
                 "--no-progress"]) == 0
    said = capsys.readouterr().out.splitlines()[-1]  # a new shop trains first, then indexes
    assert said.startswith("next: `") and [shlex.split(part) for part in said.split("`")[1::2]] == [
        ["jewelrec", "train", "--home", str(home)], ["jewelrec", "index", "--home", str(home)]]
    assert main(["recommend", str(tiny_catalog / "catalog.csv"), "--home", str(home)]) == EXIT_USAGE
    err = capsys.readouterr().err
    suggested = err.split("`")[1]
    assert shlex.split(suggested) == ["jewelrec", "index", "--home", str(home)], err


def test_an_ingest_into_a_trained_home_says_to_index(tiny_home, tiny_catalog, tmp_path, capsys):
    import csv
    import shutil

    home = shutil.copytree(tiny_home, tmp_path / "home")
    rows = list(csv.DictReader((tiny_catalog / "catalog.csv").open(encoding="utf-8")))
    rows[0]["price"] = str(float(rows[0]["price"]) + 1)
    catalog = tmp_path / "catalog.csv"
    with catalog.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    shutil.copytree(tiny_catalog / "images", tmp_path / "images")
    assert main(["ingest", str(catalog), "--home", str(home), "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"next: `jewelrec index --home {home}`, for searches to see these changes")
