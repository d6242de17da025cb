"""Benchmark the pruning methods: size, compute and latency per method x sparsity (and optionally mAP).

Two models:

* the bundled demo YOLOv5n (shapes dataset); ``--map`` also evaluates it on the bundled ``shapes-val``
  through the real job pipeline (``prunebench.worker.engine.pipeline.run_local``), which takes a while on CPU;
* a YOLOv5s-architecture model with random weights (speed and size only: its accuracy means nothing).

Every model is BN-fused before pruning, as the job pipeline does. Latency is the median over ``--iters`` timed
forward passes after ``--warmup`` untimed ones, at each ``--batch-sizes`` entry (fp32 on CPU, fp16 on CUDA).
Unstructured sparsity only zeros weights: dense kernels do the same work, so expect no speed-up from it.

    .venv/bin/python bench/pruning_bench.py                      # defaults: modest on a small CPU
    .venv/bin/python bench/pruning_bench.py --map --sparsities 0 0.3 0.5 0.7
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing

from prunebench.worker.engine import artifacts, measure  # noqa: E402
from prunebench.worker.engine.pruning import METHODS, apply_pruning  # noqa: E402

DEMO = ROOT / "common" / "assets" / "demo" / "yolov5n_shapes.pt"


@dataclass
class Row:
    method: str
    sparsity: float
    achieved: float
    params: int
    nonzero: int
    gflops: float
    size_bytes: int
    latency_ms: dict[int, float]
    map50_95: float | None = None
    map50: float | None = None


@dataclass
class Subject:
    title: str
    model: nn.Module  # fused, float32, eval, CPU
    yaml: dict
    names: list[str]
    stride: list[float]


def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


@torch.inference_mode()
def latency_ms(model: nn.Module, batch: int, img: int, device: torch.device, warmup: int, iters: int) -> float:
    """Median milliseconds per image of a forward pass at ``batch`` x 3 x img x img (median: robust to
    the odd slow pass on a shared machine)."""
    half = device.type == "cuda"
    net = copy.deepcopy(model).to(device).eval()
    net = net.half() if half else net
    x = torch.rand(batch, 3, img, img, device=device, dtype=torch.float16 if half else torch.float32)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        net(x)
    sync()
    times: list[float] = []
    for _ in range(max(iters, 1)):
        start = time.perf_counter()
        net(x)
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0 / batch


def _size(subject: Subject, model: nn.Module) -> int:
    with tempfile.TemporaryDirectory(prefix="pb-bench-") as scratch:
        return artifacts.save_model(
            model, path=Path(scratch) / "m.pt", yaml=subject.yaml, names=subject.names, stride=subject.stride
        )


def measure_point(subject: Subject, method: str, sparsity: float, args: argparse.Namespace) -> Row:
    model = copy.deepcopy(subject.model)
    achieved = 0.0
    if sparsity > 0:
        outcome = apply_pruning(model, method, sparsity, args.exclude)
        model, achieved = outcome.model, outcome.achieved
    params, nonzero = measure.count_params(model)
    device = _device(args.device)
    return Row(
        method=method if sparsity > 0 else "dense",
        sparsity=sparsity,
        achieved=achieved,
        params=params,
        nonzero=nonzero,
        gflops=measure.gflops(model, args.img),
        size_bytes=_size(subject, model),
        latency_ms={b: latency_ms(model, b, args.img, device, args.warmup, args.iters) for b in args.batch_sizes},
    )


def attach_map(rows: list[Row], args: argparse.Namespace) -> None:
    """Fill mAP columns of the demo rows from the job pipeline (one job per method)."""
    try:
        from prunebench.contract import JobRequest
        from prunebench.datasets.catalog import builtin_datasets
        from prunebench.worker.engine.pipeline import run_local
    except ImportError as exc:  # the pipeline is optional for this benchmark
        print(f"(mAP skipped: {exc})", file=sys.stderr)
        return
    dataset = next(iter(builtin_datasets().values()))
    for method in args.methods:
        request = JobRequest(
            checkpoint=DEMO.name,
            dataset=dataset.name,
            sparsities=sorted(set(args.sparsities)),
            method=method,
            exclude=args.exclude,
            img_size=args.map_img,
            batch_size=args.map_batch,
            device=args.device,
            max_images=args.max_images,
            include_dense=True,
        )
        result = run_local(request, DEMO, dataset)
        for run in result.runs:
            for row in rows:
                same = (row.method == method) if run.sparsity_target > 0 else (row.method == "dense")
                if same and row.sparsity == run.sparsity_target:
                    row.map50_95, row.map50 = run.metrics.map, run.metrics.map50


def load_demo() -> Subject:
    from prunebench.worker.engine.checkpoints import load_model

    loaded = load_model(DEMO)
    return Subject("demo YOLOv5n (shapes)", loaded.model.fuse().eval(), loaded.yaml, loaded.names, loaded.stride)


def build_yolov5s() -> Subject:
    from prunebench.worker.engine.yolo.configs import get_config
    from prunebench.worker.engine.yolo.model import build_model

    torch.manual_seed(0)
    model = build_model(get_config("yolov5s")).fuse().eval()
    return Subject("YOLOv5s architecture, random init", model, model.yaml, model.names, model.stride.tolist())


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(subject: Subject, rows: list[Row], args: argparse.Namespace, with_map: bool) -> str:
    batches = list(args.batch_sizes)
    head = ["method", "sparsity", "achieved", "params", "nonzero", "GFLOPs", "size MB"]
    head += [f"ms/img b{b}" for b in batches] + [f"img/s b{batches[-1]}"]
    head += ["mAP50-95", "mAP50"] if with_map else []
    lines = [f"### {subject.title} @ {args.img}px", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        cells = [r.method, f"{r.sparsity:.2f}", f"{r.achieved:.3f}", f"{r.params:,}", f"{r.nonzero:,}"]
        cells += [f"{r.gflops:.2f}", f"{r.size_bytes / 1e6:.2f}"]
        cells += [f"{r.latency_ms[b]:.1f}" for b in batches] + [f"{1000.0 / r.latency_ms[batches[-1]]:.1f}"]
        cells += [_fmt(r.map50_95, ".3f"), _fmt(r.map50, ".3f")] if with_map else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_subject(subject: Subject, args: argparse.Namespace, with_map: bool) -> str:
    rows = [measure_point(subject, "dense", 0.0, args)]
    for method in args.methods:
        rows += [measure_point(subject, method, s, args) for s in args.sparsities if s > 0]
    if with_map:
        attach_map(rows, args)
    return table(subject, rows, args, with_map)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.0, 0.3, 0.5])
    p.add_argument("--exclude", nargs="*", default=[], help="fnmatch patterns of Conv2d layers to keep dense")
    p.add_argument("--img", type=int, default=640, help="input size for GFLOPs and latency")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=None, help="timed passes (default 2 on CPU, 20 on CUDA)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (1 is steadiest on a busy machine)")
    p.add_argument("--no-demo", action="store_true", help="skip the demo YOLOv5n")
    p.add_argument("--no-yolov5s", action="store_true", help="skip the random-init YOLOv5s")
    p.add_argument("--map", action="store_true", help="also evaluate demo mAP via the job pipeline (slow)")
    p.add_argument("--map-img", type=int, default=320, help="eval size for mAP (the demo trained at 320)")
    p.add_argument("--map-batch", type=int, default=32)
    p.add_argument("--max-images", type=int, default=None)
    args = p.parse_args(argv)
    if args.iters is None:
        args.iters = 20 if _device(args.device).type == "cuda" else 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}; warmup {args.warmup}, iters {args.iters}\n")
    subjects: list[tuple[Callable[[], Subject], bool]] = []
    if not args.no_demo:
        subjects.append((load_demo, args.map))
    if not args.no_yolov5s:
        subjects.append((build_yolov5s, False))
    for make, with_map in subjects:
        started = time.perf_counter()
        print(run_subject(make(), args, with_map))
        print(f"\n({time.perf_counter() - started:.0f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
