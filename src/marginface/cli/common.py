"""What the command families share: a progress bar driven by the library's callbacks, argparse types, how a
check lists what it found."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from tqdm import tqdm


class Progress:
    """A tqdm bar driven by (done, total) callbacks from the library."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.description, unit="img", file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also on errors, so the error line is not glued to a half-drawn bar


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (NaN would switch a comparison off silently)."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def about(path: object, problem: object) -> str:
    """'PATH: problem', without saying PATH twice when the problem's message already starts with it."""
    message = str(problem)
    return message if message.startswith(f"{path}: ") else f"{path}: {message}"


def list_findings(findings: Sequence[object], heading: str, ok: str) -> bool:
    """Print `ok` when `findings` is empty, else `heading` and each finding indented; whether there were any."""
    if not findings:
        print(ok)
        return False
    print(heading)
    for finding in findings:
        print(f"  {finding}")
    return True
