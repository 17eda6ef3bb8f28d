"""argparse value types shared by the command-line programs: each refuses a bad number with a message that names
the value and the range, so `--steps 0`, `--fps nan` or `--batch -1` stop at parse time (exit 2) with a usage line
instead of failing later (or not at all). Library code: nothing here reads argv.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def _int(text: str, lo: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text!r}") from None
    if v < lo:
        raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {v}")
    return v


def positive_int(text: str) -> int:
    """An integer >= 1 (counts: steps, seeds, episodes, batch sizes)."""
    return _int(text, 1)


def nonneg_int(text: str) -> int:
    """An integer >= 0 (indices, warm-up counts, optional limits where 0 means none)."""
    return _int(text, 0)


def _float(text: str, positive: bool) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    ok = math.isfinite(v) and (v > 0 if positive else v >= 0)
    if not ok:
        raise argparse.ArgumentTypeError(f"must be a finite number {'> 0' if positive else '>= 0'}, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0 (rates, durations, learning rates)."""
    return _float(text, True)


def nonneg_float(text: str) -> float:
    """A finite number >= 0 (noise levels, start times)."""
    return _float(text, False)


def probability(text: str) -> float:
    """A number in [0, 1]."""
    v = _float(text, False)
    if v > 1:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text!r}")
    return v


def output_file(text: str) -> Path:
    """A path to write a file at: not an existing directory."""
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; pass a file path")
    return p


def output_dir(text: str) -> Path:
    """A path to write a directory at: not an existing file."""
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; pass a directory")
    return p


USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)


def user_errors_exit(prog: str) -> None:
    """For flat scripts: an error a user can cause (bad value, missing or misplaced file) ends the program with
    `prog: error: <message>` and exit status 2 instead of a traceback; anything else still shows its traceback."""
    import sys

    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, USER_ERRORS):
            print(f"{prog}: error: {value}", file=sys.stderr)
            sys.exit(2)
        previous(kind, value, tb)

    sys.excepthook = hook


def refuse_existing_run(out: Path, resume: bool) -> None:
    """A training script's --out: a directory that already holds something is continued only with --resume."""
    if out.exists() and any(out.iterdir()) and not resume:
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
