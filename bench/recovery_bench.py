"""Benchmark what recovery buys after channel pruning: importance x recovery x sparsity on the demo model.

Each (importance, recovery) pair is one job through the real pipeline (``run_local``: load, prune the
unfused model, recover, fuse, evaluate on ``shapes-val`` with pycocotools' protocol); every point reports
its mAP before and after recovery (the run's ``recovery`` block). Calibration images (BN recalibration,
taylor's gradients) come from the bundled ``shapes-train-mini`` split, never from the evaluated images.
With ``--finetune-epochs`` each sparsity is also fine-tuned on the reference ``shapes-train`` (1,200
images, when ``--train-data`` exists) for each listed epoch count. With ``--latency`` the first job (first
importance and recovery) also times every point in PyTorch eager and ONNX Runtime CPU at the job's
img_size (uniform allocation prunes every layer by the same ratio, so the widths, hence the latency, do
not depend on the importance or recovery).

    .venv/bin/python bench/recovery_bench.py --latency
    .venv/bin/python bench/recovery_bench.py --importances l1 --recoveries none --finetune-epochs 5 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing

from prunebench.contract import JobRequest, JobResult  # noqa: E402
from prunebench.datasets.catalog import load_catalog, yolo_datasets  # noqa: E402
from prunebench.worker.engine.pipeline import run_local  # noqa: E402

DEMO = ROOT / "common" / "assets" / "demo" / "yolov5n_shapes.pt"
REFERENCE_DATA = ROOT.parent / "shared" / "reference" / "shapes.yaml"
RECOVERIES = {
    "none": [],
    "bias_compensation": ["bias_compensation"],
    "bn_recalibration": ["bn_recalibration"],
    "both": ["bias_compensation", "bn_recalibration"],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEMO)
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.2, 0.3, 0.5])
    parser.add_argument("--importances", nargs="+", default=["l1", "l2", "bn_scale", "lamp", "taylor"])
    parser.add_argument("--recoveries", nargs="+", choices=list(RECOVERIES), default=list(RECOVERIES))
    parser.add_argument("--img", type=int, default=320, help="evaluation (and fine-tuning) image size")
    parser.add_argument("--round-to", type=int, default=8, help="channel: kept widths are multiples of this")
    parser.add_argument("--calibration-images", type=int, default=240)
    parser.add_argument("--latency", action="store_true", help="time each point (torch, onnxruntime_cpu)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=10, help="timed latency iterations per batch size")
    parser.add_argument("--finetune-epochs", nargs="*", type=int, default=[])
    parser.add_argument("--train-data", type=Path, default=REFERENCE_DATA, help="YOLOv5 data.yaml to train on")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="write every job's result JSON here")
    return parser.parse_args()


def job(args: argparse.Namespace, importance: str, recovery: list[str], **extra: Any) -> JobRequest:
    return JobRequest(
        checkpoint=args.checkpoint.name,
        dataset="shapes-val",
        sparsities=args.sparsities,
        method="channel",
        importance=importance,
        round_to=args.round_to,
        recovery=recovery,
        calibration={"dataset": "shapes-train-mini", "images": args.calibration_images},
        img_size=args.img,
        batch_size=32,
        device="cpu",
        scorer="pycocotools",
        **extra,
    )


def latency_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "runtimes": ["torch", "onnxruntime_cpu"],
        "batch_sizes": [1, 32],
        "warmup": 3,
        "iterations": args.iterations,
        "threads": args.threads,
    }


def rows_of(label: str, importance: str, result: JobResult) -> list[dict[str, Any]]:
    rows = []
    for run in result.runs:
        recovery = run.recovery
        rows.append(
            {
                "importance": importance,
                "recovery": label,
                "sparsity": run.sparsity_target,
                "gflops": run.gflops,
                "params": run.params,
                "map_before": recovery.map_before if recovery else run.metrics.map,
                "map": run.metrics.map,
                "map50": run.metrics.map50,
                "seconds": recovery.seconds if recovery else 0.0,
                "latency": {f"{r.runtime}@{r.batch}": r.median_ms for r in run.latency if r.median_ms is not None},
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]], dense: dict[str, Any]) -> None:
    print(f"\ndense: mAP@.5:.95 {dense['map']:.4f}, mAP@.5 {dense['map50']:.4f}, {dense['gflops']:.2f} GFLOPs")
    print("| sparsity | importance | recovery | GFLOPs | params | mAP before | mAP after | % of dense | mAP@.5 | s |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r["sparsity"], r["importance"], r["recovery"])):
        share = 100 * r["map"] / dense["map"] if dense["map"] else 0.0
        print(
            f"| {r['sparsity']:.1f} | {r['importance']} | {r['recovery']} | {r['gflops']:.2f} | {r['params']:,} "
            f"| {r['map_before']:.4f} | {r['map']:.4f} | {share:.1f}% | {r['map50']:.4f} | {r['seconds']:.1f} |"
        )


def print_latency(rows: list[dict[str, Any]], dense_latency: dict[str, float]) -> None:
    keys = sorted(dense_latency)
    header = [f"{k} ms" for k in keys] + [f"{k} speed-up" for k in keys]
    print("\n| sparsity | GFLOPs | " + " | ".join(header) + " |")
    print("|---:|---:|" + "---:|" * (2 * len(keys)))
    dense_cells = [f"{dense_latency[k]:.1f}" for k in keys] + ["1.00x" for _ in keys]
    print("| 0 (dense) | - | " + " | ".join(dense_cells) + " |")
    for r in rows:
        if not r["latency"]:
            continue
        ms = [r["latency"].get(k) for k in keys]
        speed = [f"{dense_latency[k] / m:.2f}x" if m else "-" for k, m in zip(keys, ms, strict=True)]
        print(f"| {r['sparsity']:.1f} | {r['gflops']:.2f} | " + " | ".join(f"{m:.1f}" if m else "-" for m in ms)
              + " | " + " | ".join(speed) + " |")  # fmt: skip


def main() -> None:
    args = parse_args()
    catalog = load_catalog(None)
    evaluation, calibration = catalog["shapes-val"], catalog["shapes-train-mini"]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.checkpoint.name} on "
          f"shapes-val at {args.img}px; calibration shapes-train-mini ({args.calibration_images} images)")  # fmt: skip
    rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    dense: dict[str, Any] = {}
    dense_latency: dict[str, float] = {}
    started = time.perf_counter()
    for importance in args.importances:
        for label in args.recoveries:
            timed = args.latency and importance == args.importances[0] and label == args.recoveries[0]
            extra = {"latency": latency_settings(args)} if timed else {}
            request = job(args, importance, RECOVERIES[label], include_dense=not dense, **extra)
            result = run_local(request, args.checkpoint, evaluation, calibration_dataset=calibration)
            results.append(result.model_dump(mode="json"))
            if not dense:
                base = result.runs[0]
                dense = {"map": base.metrics.map, "map50": base.metrics.map50, "gflops": base.gflops}
                dense_latency = {f"{r.runtime}@{r.batch}": r.median_ms for r in base.latency if r.median_ms}
                result.runs = result.runs[1:]
            rows.extend(rows_of(label, importance, result))
            print(f"  {importance} / {label}: {time.perf_counter() - started:.0f} s", flush=True)
    if args.finetune_epochs and args.train_data.is_file():
        train = yolo_datasets(args.train_data, prefix="bench")["bench-train"]
        for epochs in args.finetune_epochs:
            finetune = {"dataset": train.name, "epochs": epochs, "img_size": args.img, "batch_size": args.train_batch}
            request = job(args, args.importances[0], [], include_dense=False, finetune=finetune)
            result = run_local(request, args.checkpoint, evaluation, train_dataset=train)
            results.append(result.model_dump(mode="json"))
            rows.extend(rows_of(f"finetune {epochs} ep", args.importances[0], result))
            print(f"  finetune {epochs}: {time.perf_counter() - started:.0f} s", flush=True)
    print_table(rows, dense)
    if dense_latency:
        print_latency([r for r in rows if r["latency"]], dense_latency)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
