"""Argument types and option groups several `prunebench` commands share."""

from __future__ import annotations

import argparse
import sys


def parse_sparsities(text: str) -> list[float]:
    """`"0, 0.3,0.5"` -> `[0.0, 0.3, 0.5]`: fractions of zeroed weights, each in [0, 1).

    Raises argparse.ArgumentTypeError (argparse prints it as a usage error, exit status 2) for a
    non-number, a value outside [0, 1), or an empty list.
    """
    values = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {part!r}") from None
        if not 0.0 <= value < 1.0:
            raise argparse.ArgumentTypeError(f"sparsity must be in [0, 1): {part}")
        values.append(value)
    if not values:
        raise argparse.ArgumentTypeError("give at least one sparsity, e.g. 0,0.3,0.5")
    return values


def say(message: str) -> None:
    """A progress or error line on stderr (stdout is kept for the result)."""
    print(message, file=sys.stderr, flush=True)
