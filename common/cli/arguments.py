"""Argument types and option groups several `prunebench` commands share."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prunebench.contract import ALLOCATIONS, IMPORTANCES, RECOVERY_STEPS, RUNTIMES, SEARCH_OBJECTIVES


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
    group.add_argument(
        "--recovery",
        type=_recovery_list,
        default=None,
        help=f"training-free recovery after pruning, comma list of {', '.join(RECOVERY_STEPS)}",
    )
    group.add_argument(
        "--calibration-dataset",
        dest="calibration_dataset",
        default=None,
        help="dataset for bn_recalibration and taylor (default: the evaluated one)",
    )
    group.add_argument(
        "--calibration-images", dest="calibration_images", type=int, default=None, help="its first N images (256)"
    )


def _names_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """`"a,b"` -> `["a", "b"]`, each one of ``allowed``; argparse.ArgumentTypeError otherwise."""
    values = [part for part in text.replace(" ", "").split(",") if part]
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"{what} are a comma list of {', '.join(allowed)}; got {text!r}")
    return values


def _recovery_list(text: str) -> list[str]:
    return _names_list(text, RECOVERY_STEPS, "recovery steps")


def channel_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The channel options given on the command line, as JobRequest fields."""
    names = ("importance", "allocation", "max_layer_sparsity", "round_to", "recovery")
    fields = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    calibration = {
        key: getattr(args, attr)
        for key, attr in (("dataset", "calibration_dataset"), ("images", "calibration_images"))
        if getattr(args, attr, None) is not None
    }
    if calibration:
        fields["calibration"] = calibration
    return fields


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of integers: {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one value, e.g. 1,32")
    return values


def _runtime_list(text: str) -> list[str]:
    return _names_list(text, RUNTIMES, "runtimes")


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


def add_finetune_options(parser: argparse.ArgumentParser) -> None:
    """Fine-tuning options, the same on `submit` and `eval`: `--finetune DATASET` turns it on."""
    group = parser.add_argument_group("fine-tuning (with --finetune)")
    group.add_argument(
        "--finetune", metavar="DATASET", default=None, help="fine-tune each pruned model on this training dataset"
    )
    group.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default 10)")
    group.add_argument("--train-img-size", dest="train_img_size", type=int, default=None, help="default 640")
    group.add_argument("--train-batch-size", dest="train_batch_size", type=int, default=None, help="default 16")
    group.add_argument("--train-max-images", dest="train_max_images", type=int, default=None)
    group.add_argument("--lr0", type=float, default=None, help="initial learning rate (default 0.01)")
    group.add_argument("--lrf", type=float, default=None, help="final lr as a fraction of lr0 (default 0.01)")
    group.add_argument("--cos-lr", dest="cos_lr", action="store_true", default=None, help="cosine lr decay")
    group.add_argument("--warmup-epochs", dest="warmup_epochs", type=float, default=None, help="default 3")
    group.add_argument("--no-ema", dest="ema", action="store_false", default=None, help="no EMA of the weights")
    group.add_argument("--no-mosaic", dest="mosaic", action="store_false", default=None, help="no mosaic")
    group.add_argument("--seed", type=int, default=None, help="shuffling and augmentation seed (default 0)")
    group.add_argument(
        "--finetune-dense",
        dest="finetune_dense",
        action="store_true",
        default=None,
        help="fine-tune the dense point too",
    )


# command-line option -> FinetuneSettings field
_FINETUNE_OPTIONS = {
    "epochs": "epochs",
    "train_img_size": "img_size",
    "train_batch_size": "batch_size",
    "train_max_images": "max_images",
    "lr0": "lr0",
    "lrf": "lrf",
    "cos_lr": "cos_lr",
    "warmup_epochs": "warmup_epochs",
    "ema": "ema",
    "mosaic": "mosaic",
    "seed": "seed",
    "finetune_dense": "dense",
}


def finetune_fields(args: argparse.Namespace) -> dict[str, Any]:
    """`{"finetune": {...}}` from the command line, or `{}` without `--finetune` (other options then
    raise ValueError: they would silently do nothing)."""
    given = {field: getattr(args, option) for option, field in _FINETUNE_OPTIONS.items()}
    given = {k: v for k, v in given.items() if v is not None}
    dataset = getattr(args, "finetune", None)
    if dataset is None:
        if given:
            raise ValueError(f"fine-tuning options need --finetune DATASET (given: {', '.join(sorted(given))})")
        return {}
    return {"finetune": {"dataset": dataset, **given}}


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """Target search (instead of --sparsities): a budget, and how the search runs (unset = the API's default)."""
    group = parser.add_argument_group("target search (instead of --sparsities)")
    group.add_argument("--max-map-drop", dest="max_map_drop", type=float, default=None, help="e.g. 0.01")
    group.add_argument("--max-relative-drop", dest="max_relative_drop", type=float, default=None, help="e.g. 0.05")
    group.add_argument("--target-metric", dest="target_metric", choices=["map", "map50"], default=None)
    group.add_argument("--objective", choices=SEARCH_OBJECTIVES, default=None, help="default sparsity")
    group.add_argument("--resolution", type=float, default=None, help="sparsity step (default 0.01)")
    group.add_argument("--max-search-sparsity", dest="max_search_sparsity", type=float, default=None)
    group.add_argument("--screen-images", dest="screen_images", type=int, default=None, help="screen on N images")
    group.add_argument("--sensitivity", action="store_true", help="per-layer sensitivity and a schedule")
    group.add_argument("--sensitivity-unit", dest="sensitivity_unit", choices=["layer", "block"], default=None)


def target_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The target-search JobRequest fields from the command line ({} without a budget: options then raise
    ValueError, since they would silently do nothing)."""
    names = ("objective", "resolution", "max_search_sparsity", "screen_images", "sensitivity_unit")
    fields: dict[str, Any] = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if getattr(args, "sensitivity", False):
        fields["analysis"] = "sensitivity"
    budget = {
        key: getattr(args, key) for key in ("max_map_drop", "max_relative_drop") if getattr(args, key, None) is not None
    }
    if getattr(args, "target_metric", None) is not None:
        budget["metric"] = args.target_metric
    if not budget:
        if fields:
            raise ValueError(f"target options need --max-map-drop or --max-relative-drop (given: {', '.join(fields)})")
        return {}
    return {"target": budget, **fields}
