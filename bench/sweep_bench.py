"""Time a sweep job end to end through the engine and print a table.

    .venv/bin/python bench/sweep_bench.py                       # demo model + data, 0/0.2/0.3, img 320
    .venv/bin/python bench/sweep_bench.py --img-size 640 --batch-size 32 --device cuda --half

Per sweep point: per-stage ms/image (preprocess, inference, NMS) as the result JSON reports them,
images/s, and the point's wall seconds (prune + measure + evaluate + score). The job's total wall
time includes loading the checkpoint and decoding the dataset once. Figures are one run's; quote
ratios from a single run, machines are noisy.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from prunebench.contract import JobRequest, Progress
from prunebench.datasets.catalog import BUILTIN_DATASET, BUILTIN_ROOT, builtin_datasets
from prunebench.worker.engine.pipeline import run_local


class StageClock:
    """Reporter that remembers when each stage was first entered (for load/decode time)."""

    def __init__(self) -> None:
        self.first_seen: dict[str, float] = {}

    def progress(self, progress: Progress) -> None:
        self.first_seen.setdefault(progress.stage, time.perf_counter())

    def should_stop(self) -> bool:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=BUILTIN_ROOT / "yolov5n_shapes.pt")
    parser.add_argument("--sparsities", default="0.2,0.3")
    parser.add_argument("--method", default="l1_unstructured")
    parser.add_argument("--img-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--half", action="store_true", help="fp16 inference (CUDA only)")
    args = parser.parse_args()

    request = JobRequest(
        checkpoint=args.checkpoint.name,
        dataset=BUILTIN_DATASET,
        sparsities=[float(s) for s in args.sparsities.split(",")],
        method=args.method,
        img_size=args.img_size,
        batch_size=args.batch_size,
        device=args.device,
        half=args.half,
        use_cache=False,
    )
    clock = StageClock()
    started = time.perf_counter()
    result = run_local(request, args.checkpoint, builtin_datasets()[BUILTIN_DATASET], clock)
    total = time.perf_counter() - started
    first_point = clock.first_seen.get("pruning", started)

    env = result.environment
    print(f"device: {env.device} ({env.device_name}); torch {env.torch}; cuda {env.cuda}; {platform.machine()}")
    print(
        f"checkpoint {args.checkpoint.name}, {result.runs[0].images} images, img {args.img_size}, "
        f"batch {args.batch_size}, method {args.method}, half {result.settings.get('half')}"
    )
    print()
    print("| sparsity | preprocess ms/img | inference ms/img | NMS ms/img | total ms/img | images/s | point s | mAP |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in result.runs:
        s = run.speed_ms_per_image
        print(
            f"| {run.sparsity_target:.2f} | {s.preprocess:.2f} | {s.inference:.2f} | {s.nms:.2f} | {s.total:.2f} "
            f"| {run.images_per_second:.1f} | {run.seconds:.2f} | {run.metrics.map:.4f} |"
        )
    print()
    print(f"load + decode once: {first_point - started:.2f} s; whole sweep: {total:.2f} s")


if __name__ == "__main__":
    main()
