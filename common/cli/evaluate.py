"""`prunebench eval`: prune and evaluate one checkpoint file in this process, no service.

The one CLI command that reaches the engine (torch): it imports prunebench.worker.engine inside
`cmd_eval`, so every other command starts without torch (import-linter holds the rest of the CLI
to that). Exit statuses: 0 ok, 1 the evaluation failed, 2 bad arguments or inputs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from prunebench.cli.arguments import (
    add_channel_options,
    add_finetune_options,
    add_runtime_options,
    channel_fields,
    finetune_fields,
    parse_sparsities,
    runtime_fields,
    say,
)
from prunebench.cli.render import format_result_table, progress_line
from prunebench.contract import PRUNE_METHODS, SCORER_NAMES, JobRequest, Progress
from prunebench.datasets.catalog import CATEGORY_MAPS, DatasetSpec

EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """Arguments or inputs `eval` cannot use; the message is printed as is."""


class StderrReporter:
    """The engine's Reporter for a local run: progress on stderr at most twice a second, never stops."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self._last = 0.0

    def progress(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval_s or progress.stage == "done":
            self._last = now
            say(progress_line({"status": "running", "progress": progress.model_dump()}))

    def should_stop(self) -> bool:
        return False


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        checkpoint = _checkpoint_file(args)
        catalog = _catalog(args)
        dataset = _loaded(_dataset(args, catalog))
        request = _request(args, checkpoint, dataset)
        train_dataset = _named_dataset(getattr(args, "finetune", None), catalog, "training")
        calibration_dataset = _named_dataset(request.calibration.dataset, catalog, "calibration")
    except UsageError as exc:
        say(str(exc))
        return EXIT_USAGE

    # Here, not at module level: only this command may pull in torch.
    from prunebench.config import get_settings
    from prunebench.datasets.digests import DigestMemo
    from prunebench.worker.engine.decode_cache import DecodeCache
    from prunebench.worker.engine.pipeline import run_local
    from prunebench.worker.engine.reporting import one_line

    # The host's decode cache, as a worker would use it: a second run on the same images decodes nothing.
    settings = get_settings()
    cache = DecodeCache(settings.decode_cache_dir, settings.decode_cache_bytes, DigestMemo(settings.digest_memo))
    try:
        result = run_local(
            request,
            checkpoint,
            dataset,
            StderrReporter(),
            args.save_dir,
            decode_cache=cache,
            train_dataset=train_dataset,
            calibration_dataset=calibration_dataset,
        )
    except Exception as exc:
        say(f"evaluation failed: {one_line(exc)}")
        return EXIT_FAILED
    data = result.model_dump(mode="json")
    print(json.dumps(data, indent=2) if args.json else format_result_table(data))
    return 0


def _checkpoint_file(args: argparse.Namespace) -> Path:
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise UsageError(f"no such checkpoint file: {checkpoint}")
    return checkpoint


def _catalog(args: argparse.Namespace) -> dict[str, DatasetSpec]:
    """The deployment's catalog, plus the splits of `--data` (a YOLOv5 data.yaml) under their split names."""
    from prunebench.config import get_settings
    from prunebench.datasets.catalog import CatalogError, load_catalog, yolo_datasets

    settings = get_settings()
    try:
        catalog = load_catalog(settings.datasets, settings.builtin_assets)
        if args.data:
            splits = yolo_datasets(Path(args.data).resolve(), prefix="data")
            catalog.update({name.removeprefix("data-"): spec for name, spec in splits.items()})
    except CatalogError as exc:
        raise UsageError(str(exc)) from exc
    return catalog


def _loaded(dataset: DatasetSpec) -> DatasetSpec:
    """``dataset`` with its annotations read and validated now, before any inference."""
    from prunebench.datasets.catalog import CatalogError

    try:
        dataset.info()
    except CatalogError as exc:
        raise UsageError(str(exc)) from exc
    return dataset


def _named_dataset(name: str | None, catalog: dict[str, DatasetSpec], role: str) -> DatasetSpec | None:
    """The catalog dataset the job names for ``role`` (training, calibration), or None when it names none."""
    if name is None:
        return None
    if name not in catalog:
        raise UsageError(f"unknown {role} dataset {name!r}")
    return _loaded(catalog[name])


def _dataset(args: argparse.Namespace, catalog: dict[str, DatasetSpec]) -> DatasetSpec:
    """A folder of images with a COCO instances JSON (--images/--annotations), a split of --data, or a
    catalog name."""
    if args.data:
        if args.split not in catalog:
            raise UsageError(f"{args.data} has no split {args.split!r}")
        return catalog[args.split]
    if args.images or args.annotations:
        if not (args.images and args.annotations):
            raise UsageError("--images and --annotations go together")
        return DatasetSpec(
            name=Path(args.images).name or "local",
            images_dir=Path(args.images).resolve(),
            annotations=Path(args.annotations).resolve(),
            category_map=args.category_map,
        )
    if args.dataset not in catalog:
        raise UsageError(f"unknown dataset {args.dataset!r}")
    return catalog[args.dataset]


def _request(args: argparse.Namespace, checkpoint: Path, dataset: DatasetSpec) -> JobRequest:
    """The JobRequest a service job with these options would carry (validated the same way)."""
    from pydantic import ValidationError

    fields: dict[str, Any] = {
        "checkpoint": checkpoint.name,
        "dataset": dataset.name,
        "method": args.method,
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "device": args.device,
        "max_images": args.max_images,
        "conf_thres": args.conf_thres,
        "iou_thres": args.iou_thres,
        "max_det": args.max_det,
        "scorer": args.scorer,
        "include_dense": not args.no_dense,
        "save_models": args.save_dir is not None,
        **channel_fields(args),
        **runtime_fields(args),
    }
    try:
        fields.update(finetune_fields(args))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.sparsity is not None:
        fields["sparsity"] = args.sparsity
    else:
        fields["sparsities"] = args.sparsities
    try:
        return JobRequest.model_validate(fields)
    except ValidationError as exc:
        raise UsageError(f"invalid job: {exc}") from exc


def add_eval_command(sub: Any) -> None:
    ev = sub.add_parser("eval", help="prune and evaluate one checkpoint in this process (no service)")
    ev.add_argument("--checkpoint", required=True, help="checkpoint file")
    where = ev.add_mutually_exclusive_group()
    where.add_argument("--dataset", default="shapes-val", help="dataset name from the catalog")
    where.add_argument("--images", help="folder of images (with --annotations)")
    where.add_argument("--data", help="a YOLOv5 data.yaml: evaluate its --split; its splits are dataset names too")
    ev.add_argument("--split", default="val", help="the --data split to evaluate (default val)")
    ev.add_argument("--annotations", help="COCO instances JSON (with --images)")
    ev.add_argument(
        "--category-map",
        choices=CATEGORY_MAPS,
        default="auto",
        help="how model classes map to category ids (auto: by name when the names match; see README)",
    )
    points = ev.add_mutually_exclusive_group()
    points.add_argument("--sparsity", type=float)
    points.add_argument("--sparsities", type=parse_sparsities, default=[0.2, 0.3], help="e.g. 0.2,0.3,0.5")
    ev.add_argument("--no-dense", action="store_true", help="skip the dense baseline")
    ev.add_argument("--method", default="l1_unstructured", choices=PRUNE_METHODS)
    add_channel_options(ev)
    add_runtime_options(ev)
    add_finetune_options(ev)
    ev.add_argument("--img-size", type=int, default=640)
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--max-images", type=int, default=None)
    ev.add_argument(
        "--conf-thres", type=float, default=0.001, help="NMS confidence threshold (above 0.001: mAP not comparable)"
    )
    ev.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold (default 0.6, as upstream val.py)")
    ev.add_argument("--max-det", type=int, default=300, help="most detections per image (default 300)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--scorer", choices=SCORER_NAMES, default="faster_coco_eval", help="COCOeval implementation")
    ev.add_argument("--save-dir", type=Path, default=None, help="keep each pruned model here")
    ev.add_argument("--json", action="store_true", help="print the JobResult JSON")
    ev.set_defaults(func=cmd_eval)
