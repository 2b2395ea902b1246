"""What every `jewelrec` command shares: exit codes, the data home `--home` names, JSON out.

A module of its own so that cli.py (the parser and the dispatch) and the commands it dispatches
to (commands.py, demo.py) import it without importing each other.
"""

from __future__ import annotations

import argparse
import json

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


def print_json(obj: object) -> None:
    """One JSON document on stdout (non-ASCII text kept as it is)."""
    print(json.dumps(obj, ensure_ascii=False))
