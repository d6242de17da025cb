"""What pruning buys in deployment runtimes: latency per method x sparsity x runtime, speed-up vs dense.

For each model and each pruning point the script does what a job with ``export`` and ``latency`` does
(``prunebench.worker.engine``): prune the BN-fused float32 model, export it to ONNX and check ONNX Runtime
against PyTorch on real images (the demo's ``shapes-val``), then time it with the latency suite
(``prunebench.worker.engine.latency``): PyTorch eager and ONNX Runtime CPU always; ONNX Runtime CUDA and
TensorRT fp16 (sparse tactics on) when the machine has a GPU, else their rows say why they are not measured.

Models:
* ``demo``: the bundled YOLOv5n checkpoint (trained on the shapes dataset);
* ``yolov5s``: the YOLOv5s architecture with random weights (80 classes). Latency depends on shapes, not
  weight values, so random weights time like trained ones (their accuracy means nothing).

Every point is timed with one protocol: ``--warmup`` untimed then ``--iters`` timed batches at batch 1,
``--warmup-n`` / ``--iters-n`` at batch ``--batch-n`` (fewer: one batch of 32 at 640 px takes seconds on a
small CPU), median and p90, ``--threads`` CPU threads, input ``[B, 3, img, img]``. The dense model is timed
first and again last ("dense (again)"): the two must agree for the run's ratios to mean anything.

    flock /tmp/prunebench-heavy.lock .venv/bin/python bench/runtime_bench.py            # everything
    .venv/bin/python bench/runtime_bench.py --models demo --img 320 --iters-n 2         # a quick look
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing

from prunebench.contract import RUNTIMES, LatencyReport  # noqa: E402
from prunebench.datasets.catalog import load_catalog, resolve_dataset  # noqa: E402
from prunebench.worker.engine import export, measure  # noqa: E402
from prunebench.worker.engine.checkpoints import load_model  # noqa: E402
from prunebench.worker.engine.data import decode_dataset  # noqa: E402
from prunebench.worker.engine.device import device_name  # noqa: E402
from prunebench.worker.engine.latency import Target, measure_latency  # noqa: E402
from prunebench.worker.engine.pruning import ChannelOptions, apply_pruning  # noqa: E402
from prunebench.worker.engine.yolo.configs import get_config  # noqa: E402
from prunebench.worker.engine.yolo.model import DetectionModel  # noqa: E402

DEMO = ROOT / "common" / "assets" / "demo" / "yolov5n_shapes.pt"
DENSE = ("dense", 0.0)
POINTS: list[tuple[str, float]] = [
    DENSE,
    ("l1_unstructured", 0.5),
    ("semi_structured_2_4", 0.5),
    ("channel", 0.2),
    ("channel", 0.3),
    ("channel", 0.5),
]


@dataclass
class Point:
    method: str
    sparsity: float
    gflops: float
    params: int
    nonzero: int
    onnx_bytes: int
    check: float
    rows: list[LatencyReport] = field(default_factory=list)


def load_subject(name: str) -> nn.Module:
    """The subject unfused (BatchNorm present), float32, eval, CPU."""
    if name == "demo":
        return load_model(DEMO).model.float().eval()
    torch.manual_seed(0)
    return DetectionModel(get_config("yolov5s", nc=80)).float().eval()


def pruned(unfused: nn.Module, method: str, sparsity: float, round_to: int = 8) -> nn.Module:
    """As a job prunes: channel on the unfused model then fused (job defaults: l1, uniform, ``round_to``
    8); the weight-zeroing methods on the fused model (upstream's flow)."""
    model = copy.deepcopy(unfused)
    if method == "channel":
        options = ChannelOptions(round_to=round_to)
        return apply_pruning(model, method, sparsity, channel_options=options).model.fuse().eval()
    model.fuse()
    if method == "dense":
        return model
    return apply_pruning(model, method, sparsity).model.eval()


def time_point(
    model: nn.Module, path: Path, method: str, sparsity: float, args: argparse.Namespace
) -> list[LatencyReport]:
    rows: list[LatencyReport] = []
    for batch, warmup, iters in ((1, args.warmup, args.iters), (args.batch_n, args.warmup_n, args.iters_n)):
        target = Target(
            model=model,
            device=torch.device("cpu"),
            half=False,
            onnx=path,
            onnx_fp16=lambda: _fp16(model, path, args.img),
            img_size=args.img,
            method=method,
            sparsity=sparsity,
            warmup=warmup,
            iterations=iters,
            threads=args.threads,
            batches=[batch],
        )
        rows.extend(measure_latency(target, list(RUNTIMES)))
    return rows


def _fp16(model: nn.Module, path: Path, img: int) -> Path:
    fp16 = path.with_suffix(".fp16.onnx")
    if not fp16.is_file():
        export.export_onnx(model, fp16, img, half=True)
    return fp16


def run_subject(name: str, images: torch.Tensor, args: argparse.Namespace, scratch: Path) -> list[Point]:
    base = load_subject(name)
    points: list[Point] = []
    for method, sparsity in [DENSE, *(p for p in POINTS if p != DENSE and _wanted(p, args)), DENSE]:
        model = pruned(base, method, sparsity, args.round_to)
        path = scratch / f"{name}-{method}-{sparsity}.onnx"
        report = export.export_checked(model, path, images)
        params, nonzero = measure.count_params(model)
        point = Point(
            method="dense (again)" if points and method == "dense" else method,
            sparsity=sparsity,
            gflops=measure.gflops(model, args.img),
            params=params,
            nonzero=nonzero,
            onnx_bytes=report.size_bytes,
            check=report.max_scaled_diff,
        )
        point.rows = time_point(model, path, method, sparsity, args)
        points.append(point)
        print(f"# {name} {point.method} {sparsity}: done", file=sys.stderr, flush=True)
    return points


def _wanted(point: tuple[str, float], args: argparse.Namespace) -> bool:
    return not args.points or f"{point[0]}:{point[1]:g}" in args.points


def _median(point: Point, runtime: str, batch: int) -> float | None:
    return next((r.median_ms for r in point.rows if r.runtime == runtime and r.batch == batch), None)


def _fmt(value: float | None, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if value is not None else "–"


def print_table(name: str, points: list[Point], args: argparse.Namespace) -> None:
    dense = points[0]
    n = args.batch_n
    print(f"\n### {name} at {args.img} px ({args.threads} CPU threads)\n")
    print(
        f"| method | sparsity | GFLOPs | non-zero params | ONNX MB | runtime | b1 median ms | b1 p90 ms "
        f"| b{n} median ms | b{n} ms/img | speed-up b1 | speed-up b{n} |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for point in points:
        for runtime in ("torch", "onnxruntime_cpu"):
            one = next(r for r in point.rows if r.runtime == runtime and r.batch == 1)
            many = next(r for r in point.rows if r.runtime == runtime and r.batch == n)
            base1, basen = _median(dense, runtime, 1), _median(dense, runtime, n)
            up1 = base1 / one.median_ms if base1 and one.median_ms else None
            upn = basen / many.median_ms if basen and many.median_ms else None
            print(
                f"| {point.method} | {point.sparsity:g} | {point.gflops:.2f} | {point.nonzero:,} "
                f"| {point.onnx_bytes / 1e6:.2f} | {runtime} | {_fmt(one.median_ms)} | {_fmt(one.p90_ms)} "
                f"| {_fmt(many.median_ms)} | {_fmt(many.ms_per_image)} | {_fmt(up1, 2)}× | {_fmt(upn, 2)}× |"
            )
    skipped = {r.runtime: r.reason for p in points for r in p.rows if r.status != "measured"}
    for runtime, reason in skipped.items():
        print(f"\n{runtime}: not measured: {reason}")
    worst = max(p.check for p in points)
    print(f"\nEvery export checked: max |onnxruntime - torch| / max(1, |torch|) = {worst:.2g} (tolerance 1e-4).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["demo", "yolov5s"], choices=["demo", "yolov5s"])
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--batch-n", type=int, default=32)
    parser.add_argument("--warmup-n", type=int, default=1)
    parser.add_argument("--iters-n", type=int, default=5)
    parser.add_argument("--round-to", type=int, default=8, help="channel: kept widths are multiples of this")
    parser.add_argument(
        "--points", nargs="*", default=[], help="only these METHOD:SPARSITY points besides dense (e.g. channel:0.3)"
    )
    args = parser.parse_args()

    spec = resolve_dataset(load_catalog(None, include_builtin=True), "shapes-val")
    images = export.check_images(decode_dataset(spec, args.img, max_images=2), 2, args.img)
    started = time.time()
    cpu = device_name(torch.device("cpu"))
    print(f"# machine: {cpu}, {platform.machine()}, torch {torch.__version__}, threads {args.threads}")
    print(
        f"# protocol: b1 warmup {args.warmup} + {args.iters} timed; b{args.batch_n} warmup {args.warmup_n} + "
        f"{args.iters_n} timed; median / p90 of whole-batch wall time; channel round_to {args.round_to}"
    )
    with tempfile.TemporaryDirectory(prefix="prunebench-runtime-bench-") as scratch:
        for name in args.models:
            print_table(name, run_subject(name, images, args, Path(scratch)), args)
    print(f"\n# {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
