"""Where a sweep's wall time goes: one in-process sweep, timed stage by stage, against its floor.

    .venv/bin/python bench/sweep_stages.py                              # demo model, shapes-val, 0/0.3/0.5/0.7
    .venv/bin/python bench/sweep_stages.py --images DIR --annotations JSON --scorer pycocotools

Stages are timed by wrapping the pipeline's own step functions from the outside (nothing in the
product is instrumented for this): setup (checkpoint load, fuse, decode, ground-truth index),
pruning, measuring (params, GFLOPs, size on disk), preprocess / inference / NMS (from the result's
own per-stage timings), and scoring (COCO rows + COCOeval + upstream's AP). The floor is the pure
model inference (forward passes only); `wall / floor` is the ratio issue 12 targets (<= 1.3).
One run's figures: quote ratios within one run.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prunebench.contract import JobRequest, JobResult
from prunebench.datasets.catalog import BUILTIN_DATASET, BUILTIN_ROOT, DatasetSpec, builtin_datasets
from prunebench.worker.engine import artifacts, evaluate, measure, nms, pipeline, scoring

STEPS = {"_setup": "setup", "_prune": "pruning", "_measure": "measuring", "_model_size": "measuring"}
SCORING = "scoring"


def _timed(totals: dict[str, float], stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[stage] += time.perf_counter() - started

    return wrapper


def instrument(totals: dict[str, float]) -> None:
    """Wrap the pipeline's step functions so each adds its wall time to ``totals[stage]``."""
    for name, stage in STEPS.items():
        setattr(pipeline, name, _timed(totals, stage, getattr(pipeline, name)))
    pipeline.score = _timed(totals, SCORING, pipeline.score)  # type: ignore[attr-defined]


# Issue 12's levers, each revertible to the way the engine worked before it (for before/after tables).


def _nms_per_image(prediction: Any, conf_thres: float, iou_thres: float, max_det: int) -> list[Any]:
    return [nms.nms_image(x, conf_thres, iou_thres, max_det) for x in prediction]


def _gflops_real_forward(model: Any, img_size: int = 640) -> float:
    import torch

    param = next(model.parameters())
    example = torch.zeros(1, 3, img_size, img_size, device=param.device, dtype=param.dtype)
    return measure.count_flops(model, example) / 1e9


def _size_via_file(model: Any, source: Any = None, **kwargs: Any) -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="prunebench-size-") as scratch:
        return artifacts.save_model(model, source, Path(scratch) / "model.pt", **kwargs)


def _load_inline(dataset: Any, batches: list[Any], pin: bool) -> Any:
    for batch in batches:
        yield evaluate.load_batch(dataset, batch, pin)


def _coco_results_scalar(native: Any, image_ids: Any, class_map: Any) -> list[dict[str, Any]]:
    """COCO rows one Python ``round`` per value, as before the vectorised rounding."""
    records = []
    for det, image_id in zip(native, image_ids, strict=True):
        det = det.float().cpu()
        for row, box in zip(det.tolist(), scoring.xyxy_to_coco_xywh(det[:, :4]).tolist(), strict=True):
            if class_map[int(row[5])] >= 0:
                records.append({"image_id": int(image_id), "category_id": int(class_map[int(row[5])]),
                                "bbox": [round(v, 3) for v in box], "score": round(row[4], 5)})  # fmt: skip
    return records


def _match_torch(det: Any, labels: Any, thresholds: Any = scoring.IOU_THRESHOLDS) -> Any:
    """Upstream's matching on torch tensors, per threshold, as before the NumPy version."""
    import numpy as np
    import torch

    correct = np.zeros((det.shape[0], thresholds.numel()), dtype=bool)
    if det.shape[0] == 0 or labels.shape[0] == 0:
        return correct
    a, b = labels[:, 1:5], det[:, :4]
    lt, rb = torch.max(a[:, None, :2], b[None, :, :2]), torch.min(a[:, None, 2:4], b[None, :, 2:4])
    inter = (rb - lt).clamp(0).prod(2)
    iou = inter / ((a[:, 2:4] - a[:, :2]).prod(1)[:, None] + (b[:, 2:4] - b[:, :2]).prod(1)[None, :] - inter + 1e-7)
    same_class = labels[:, 0:1] == det[:, 5]
    for t, threshold in enumerate(thresholds):
        li, di = torch.where((iou >= threshold) & same_class)
        if li.numel() == 0:
            continue
        pairs = np.stack((li.numpy(), di.numpy(), iou[li, di].numpy()), 1)
        if pairs.shape[0] > 1:
            pairs = pairs[pairs[:, 2].argsort()[::-1]]
            pairs = pairs[np.unique(pairs[:, 1], return_index=True)[1]]
            pairs = pairs[np.unique(pairs[:, 0], return_index=True)[1]]
        correct[pairs[:, 1].astype(int), t] = True
    return correct


def revert(lever: str) -> None:
    """Undo one lever: nms (per-image calls), measure (GFLOPs by a real forward per point, size via a
    written file), prefetch (letterbox inline), rows (COCO rows rounded one value at a time, upstream's
    matching in torch). ``scorer`` is reverted with --scorer pycocotools."""
    if lever == "nms":
        evaluate.non_max_suppression = _nms_per_image  # type: ignore[assignment]
    elif lever == "measure":
        measure.gflops = _gflops_real_forward  # type: ignore[assignment]
        pipeline._gflops = lambda job, model: measure.gflops(model, pipeline.GFLOPS_IMG_SIZE)  # type: ignore[assignment]
        artifacts.artifact_size = _size_via_file  # type: ignore[assignment]
    elif lever == "prefetch":
        evaluate._prefetched = _load_inline  # type: ignore[assignment]
    elif lever == "rows":
        scoring.coco_results = _coco_results_scalar  # type: ignore[assignment]
        scoring.match_detections = _match_torch  # type: ignore[assignment]
    else:
        raise SystemExit(f"unknown lever {lever!r}")


def breakdown(result: JobResult, totals: dict[str, float], wall: float) -> dict[str, float]:
    """Seconds per stage over the whole sweep; evaluation's share split by the result's own timings."""
    stages = dict(totals)
    for run in result.runs:
        s, n = run.speed_ms_per_image, run.images
        for key in ("preprocess", "inference", "nms"):
            stages[key] = stages.get(key, 0.0) + getattr(s, key) * n / 1000
    accounted = sum(stages.values())
    stages["other"] = max(0.0, wall - accounted)
    return stages


def dataset_spec(args: argparse.Namespace) -> DatasetSpec:
    if args.images is None:
        return builtin_datasets()[BUILTIN_DATASET]
    return DatasetSpec(name=args.images.name, images_dir=args.images, annotations=args.annotations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=BUILTIN_ROOT / "yolov5n_shapes.pt")
    parser.add_argument("--images", type=Path, default=None, help="images folder (default: bundled shapes-val)")
    parser.add_argument("--annotations", type=Path, default=None, help="COCO instances JSON (with --images)")
    parser.add_argument("--sparsities", default="0.3,0.5,0.7")
    parser.add_argument("--method", default="l1_unstructured")
    parser.add_argument("--img-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", action="store_true")
    parser.add_argument("--scorer", default="faster_coco_eval")
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=["nms", "measure", "prefetch", "rows"],
        help="revert a lever to how the engine worked before issue 12 (repeatable)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the breakdown here")
    args = parser.parse_args()
    for lever in args.without:
        revert(lever)

    request = JobRequest(
        checkpoint=args.checkpoint.name,
        dataset=BUILTIN_DATASET,
        sparsities=[float(s) for s in args.sparsities.split(",")],
        method=args.method,
        img_size=args.img_size,
        batch_size=args.batch_size,
        device=args.device,
        half=args.half,
        scorer=args.scorer,
        use_cache=False,
    )
    totals: dict[str, float] = defaultdict(float)
    instrument(totals)
    started = time.perf_counter()
    result = pipeline.run_local(request, args.checkpoint, dataset_spec(args))
    wall = time.perf_counter() - started
    stages = breakdown(result, totals, wall)

    floor = stages["inference"]
    print(
        f"{result.runs[0].images} images, img {args.img_size}, batch {args.batch_size}, points "
        f"{[r.sparsity_target for r in result.runs]}, scorer {args.scorer}, device {result.environment.device}"
    )
    print("| stage | seconds | share |")
    print("|---|---:|---:|")
    for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"| {stage} | {seconds:.2f} | {100 * seconds / wall:.0f}% |")
    print(f"| **wall** | **{wall:.2f}** | |")
    print(f"floor (inference only) {floor:.2f} s; wall / floor = {wall / floor:.2f}")
    print("mAP:", " ".join(f"{r.sparsity_target:g}:{r.metrics.map:.6f}" for r in result.runs))
    if args.json:
        args.json.write_text(json.dumps({"wall": wall, "stages": stages, "maps": [r.metrics.map for r in result.runs]}))


if __name__ == "__main__":
    main()
