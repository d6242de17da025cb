"""Argument types and option groups several `prunebench` commands share."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prunebench.contract import ALLOCATIONS, CHANNEL_FIELDS, IMPORTANCES


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


def add_channel_options(parser: argparse.ArgumentParser) -> None:
    """The `channel` method's options, the same on `submit` and `eval` (unset = the API's default)."""
    group = parser.add_argument_group("channel pruning (method channel)")
    group.add_argument("--importance", choices=IMPORTANCES, default=None, help="channel ranking (default l1)")
    group.add_argument("--allocation", choices=ALLOCATIONS, default=None, help="uniform (default) or global")
    group.add_argument(
        "--max-layer-sparsity",
        dest="max_layer_sparsity",
        type=float,
        default=None,
        help="global allocation: most of one layer's channels removed (default 0.9)",
    )
    group.add_argument(
        "--round-to", dest="round_to", type=int, default=None, help="kept channels: multiples of this (default 8)"
    )


def channel_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The channel options given on the command line, as JobRequest fields."""
    return {name: getattr(args, name) for name in CHANNEL_FIELDS if getattr(args, name, None) is not None}
