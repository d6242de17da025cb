"""Benchmark fine-tuning: seconds per epoch and mAP before/after, through the real job pipeline.

Trains on a split of a YOLOv5 ``data.yaml`` (default: the reference shapes data upstream trained the demo
checkpoint on, 1,200 images) and evaluates on the bundled ``shapes-val`` (COCO JSON, pycocotools), with
``run_local`` (load, prune, evaluate, fine-tune, evaluate again). At sparsity 0 the dense model itself is
fine-tuned (``finetune.dense``): the control that says what training alone does to the demo's mAP.

    .venv/bin/python bench/finetune_bench.py --epochs 10 --img 320 --batch 16
    .venv/bin/python bench/finetune_bench.py --method channel --sparsity 0.3 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing

from prunebench.contract import JobRequest  # noqa: E402
from prunebench.datasets.catalog import load_catalog, yolo_datasets  # noqa: E402
from prunebench.worker.engine.pipeline import run_local  # noqa: E402

DEMO = ROOT / "common" / "assets" / "demo" / "yolov5n_shapes.pt"
REFERENCE_DATA = Path("/work/shared/reference/shapes.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REFERENCE_DATA, help="YOLOv5 data.yaml to train on")
    parser.add_argument("--split", default="train")
    parser.add_argument("--checkpoint", type=Path, default=DEMO)
    parser.add_argument("--eval-dataset", default="shapes-val", help="a builtin catalog dataset")
    parser.add_argument("--method", default="l1_unstructured")
    parser.add_argument("--sparsity", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--img", type=int, default=320, help="training and evaluation image size")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the result JSON here")
    args = parser.parse_args()

    train = yolo_datasets(args.data, prefix="bench")[f"bench-{args.split}"]
    evaluation = load_catalog(None)[args.eval_dataset]
    request = JobRequest(
        checkpoint=args.checkpoint.name,
        dataset=evaluation.name,
        sparsity=args.sparsity,
        method=args.method,
        include_dense=False,
        img_size=args.img,
        batch_size=32,
        device="cpu",
        finetune={
            "dataset": train.name,
            "epochs": args.epochs,
            "img_size": args.img,
            "batch_size": args.batch,
            "max_images": args.max_images,
            "dense": args.sparsity == 0.0,
        },
    )
    started = time.perf_counter()
    result = run_local(request, args.checkpoint, evaluation, train_dataset=train)
    wall = time.perf_counter() - started
    run = result.runs[0]
    recovery = run.recovery
    assert recovery is not None

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads default")
    print(f"# train {train.name} ({args.data}), eval {evaluation.name}, {args.method} {args.sparsity}")
    print(f"{'epoch':>5} {'box':>8} {'obj':>8} {'cls':>8} {'total':>8} {'seconds':>8}")
    for point in recovery.train_loss:
        print(
            f"{point.epoch:>5} {point.box:8.4f} {point.obj:8.4f} {point.cls:8.4f} {point.total:8.4f} "
            f"{point.seconds or 0:8.1f}"
        )
    epochs = max(len(recovery.train_loss), 1)
    per_epoch = sorted(p.seconds or 0.0 for p in recovery.train_loss)
    print(f"seconds/epoch: median {per_epoch[len(per_epoch) // 2]:.1f}, min {per_epoch[0]:.1f}")
    print(f"mAP@.5:.95 {recovery.map_before:.4f} -> {recovery.map_after:.4f}   "
          f"mAP@.5 {recovery.map50_before:.4f} -> {recovery.map50_after:.4f}")  # fmt: skip
    print(f"recovery {recovery.seconds:.1f} s ({recovery.seconds / epochs:.1f} s/epoch incl. one evaluation), "
          f"job {wall:.1f} s, sparsity {run.sparsity:.4f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result.model_dump(mode="json"), indent=1))


if __name__ == "__main__":
    main()
