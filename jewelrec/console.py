"""What every `jewelrec` command shares: exit codes, the data home `--home` names, JSON out.

A module of its own so that cli.py (the parser and the dispatch) and the commands it dispatches
to (commands.py, demo.py) import it without importing each other.
"""

from __future__ import annotations

import argparse
import json
import sys

from jewelrec.errors import JewelrecError
from jewelrec.home import Home

EXIT_FAILED = 1  # the command ran but something it was asked to do failed (a photo, --strict)
EXIT_USAGE = 2  # the command could not run (missing step, bad input)


def check_seed(seed: int) -> None:
    """Refuse a --seed numpy's generators cannot take (train, synth, demo), before any work."""
    if not 0 <= seed < 2**32:
        raise JewelrecError(f"--seed must be between 0 and {2**32 - 1}, got {seed}")


def home_of(args: argparse.Namespace) -> Home:
    """The data home `--home` names (default $JEWELREC_HOME, else ./jewelrec-data)."""
    return Home(getattr(args, "home", None))


def printable(text: str) -> str:
    """A file name as text that prints and saves as UTF-8: bytes a file system allows but UTF-8
    does not (Python keeps them as lone surrogates) become U+FFFD. A photo named b"bad\\xffname"
    crashed `recommend --html` and `report --photo`, and made `--json` lines invalid UTF-8."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate no file name gives ("\\ud800" from a feed)
        return text.encode("utf-8", "replace").decode("utf-8")


def print_json(obj: object) -> None:
    """One JSON document on stdout (non-ASCII text kept as it is, file names printable)."""
    print(printable(json.dumps(obj, ensure_ascii=False)))


def print_error(args: argparse.Namespace, message: str) -> None:
    """A command's failure on stderr, and with `--json` as {"error": ...} on stdout too: a
    script reading stdout as JSON got nothing to read."""
    print(f"jewelrec {args.command}: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print_json({"error": message})
