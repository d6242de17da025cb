"""Argument types and option groups several `prunebench` commands share."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prunebench.contract import ALLOCATIONS, CHANNEL_FIELDS, IMPORTANCES, RUNTIMES


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


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of integers: {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one value, e.g. 1,32")
    return values


def _runtime_list(text: str) -> list[str]:
    values = [part for part in text.replace(" ", "").split(",") if part]
    unknown = [v for v in values if v not in RUNTIMES]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"runtimes are a comma list of {', '.join(RUNTIMES)}; got {text!r}")
    return values


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """ONNX export and the latency suite, the same on `submit` and `eval` (unset = the API's default)."""
    group = parser.add_argument_group("deployment runtimes (ONNX export, latency)")
    group.add_argument("--export", action="store_true", help="export each run to ONNX (checked against PyTorch)")
    group.add_argument("--latency", action="store_true", help="time each run in each runtime")
    group.add_argument("--runtimes", type=_runtime_list, default=None, help=f"comma list of {', '.join(RUNTIMES)}")
    group.add_argument("--latency-batches", dest="latency_batches", type=_int_list, default=None, help="e.g. 1,32")
    group.add_argument("--latency-warmup", dest="latency_warmup", type=int, default=None, help="untimed iterations")
    group.add_argument("--latency-iters", dest="latency_iters", type=int, default=None, help="timed iterations")
    group.add_argument("--threads", type=int, default=None, help="CPU threads for CPU runtimes")


def runtime_fields(args: argparse.Namespace) -> dict[str, Any]:
    """`export` and `latency` JobRequest fields from the command line (any latency option implies --latency)."""
    fields: dict[str, Any] = {}
    if getattr(args, "export", False):
        fields["export"] = {}
    latency = {
        key: getattr(args, attr)
        for key, attr in (
            ("runtimes", "runtimes"),
            ("batch_sizes", "latency_batches"),
            ("warmup", "latency_warmup"),
            ("iterations", "latency_iters"),
            ("threads", "threads"),
        )
        if getattr(args, attr, None) is not None
    }
    if getattr(args, "latency", False) or latency:
        fields["latency"] = latency
    return fields
