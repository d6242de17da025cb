"""Target search on the demo: "how far can we prune within a mAP budget?", answered and checked.

Runs one target job through the real job pipeline (``prunebench.worker.engine.pipeline.run_local``): the
bundled demo YOLOv5n on the bundled ``shapes-val`` split, searching the sparsity for the most pruned point whose
mAP@.5:.95 drop on the whole split stays within ``--budget``, then (unless ``--no-sensitivity``) the per-layer
sensitivity analysis and its greedy schedule. Prints markdown for bench/RESULTS.md: every probe, the answer
and its boundary (with the two checks the issue asks for), the schedule against the uniform answer, and the
per-layer sensitivity heat map.

    .venv/bin/python bench/target_bench.py            # img 320, global_magnitude, budget 0.02, blocks at 0.3/0.6/0.9
    .venv/bin/python bench/target_bench.py --budget 0.01 --screen-images 0 --no-sensitivity
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing

from prunebench.contract import JobRequest, JobResult, Progress  # noqa: E402
from prunebench.datasets.catalog import load_catalog, resolve_dataset  # noqa: E402
from prunebench.worker.engine.pipeline import run_local  # noqa: E402

DEMO = ROOT / "common" / "assets" / "demo" / "yolov5n_shapes.pt"
SHADES = " ░▒▓█"


class EchoReporter:
    """Prints each probe's start on stderr (one line per probe), never stops the job."""

    def __init__(self) -> None:
        self.last: str | None = None

    def progress(self, progress: Progress) -> None:
        key = (progress.message or "").split(":")[0]
        if progress.stage == "pruning" and key != self.last:
            self.last = key
            print(f"  {progress.message}", file=sys.stderr, flush=True)

    def should_stop(self) -> bool:
        return False


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--img", type=int, default=320)
    p.add_argument("--method", default="global_magnitude", choices=["global_magnitude", "l1_unstructured"])
    p.add_argument("--budget", type=float, default=0.02, help="max absolute mAP@.5:.95 drop")
    p.add_argument("--resolution", type=float, default=0.01)
    p.add_argument("--screen-images", type=int, default=24, help="0: no screening (every probe on the full split)")
    p.add_argument("--objective", default="sparsity", choices=["sparsity", "gflops", "params", "size", "latency"])
    p.add_argument("--levels", type=float, nargs="+", default=[0.3, 0.6, 0.9])
    p.add_argument("--unit", choices=["layer", "block"], default="block", help="sensitivity unit (block = model.N)")
    p.add_argument("--no-sensitivity", action="store_true")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", type=Path, help="also write the JobResult here")
    return p.parse_args()


def probes_table(result: JobResult) -> list[str]:
    search = result.search
    assert search is not None
    lines = [
        f"| # | sparsity | split | images | mAP@.5:.95 | drop | within {search.budget:g} | {search.objective} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(search.probes, 1):
        mark = ""
        if p.split == "full" and p.sparsity == search.answer:
            mark = " **answer**"
        elif p.split == "full" and p.sparsity == search.boundary:
            mark = " **boundary**"
        lines.append(
            f"| {i} | {p.sparsity:g}{mark} | {p.split} | {p.images} | {p.map:.4f} | {p.drop:+.4f} | "
            f"{'yes' if p.passed else 'no'} | {p.objective:.6g} |"
        )
    return lines


def checks(result: JobResult) -> list[str]:
    search = result.search
    assert search is not None
    lines = [
        f"- dense mAP@.5:.95 {search.dense_map:.4f}; {search.note}.",
        f"- answer's verified drop <= {search.budget:g}: **{'yes' if search.answer_drop <= search.budget else 'NO'}**"
        f" ({search.answer_drop:.4f} at sparsity {search.answer:g})",
    ]
    if search.boundary is not None and search.boundary_drop is not None:
        over = search.boundary_drop > search.budget
        lines.append(
            f"- boundary (answer + {search.resolution:g} = {search.boundary:g}) exceeds it: "
            f"**{'yes' if over else 'NO'}** ({search.boundary_drop:.4f})"
        )
    lines.append(
        f"- {len(search.probes)} probes, {search.full_evaluations} distinct points on the whole split "
        f"(dense included), screening on {search.screen_images or 'no'} images"
    )
    return lines


def sensitivity_section(result: JobResult) -> list[str]:
    report = result.sensitivity
    if report is None:
        return []
    lines = ["", f"**Schedule vs uniform**: {report.note}."]
    if report.schedule_run is not None:
        run = result.runs[report.schedule_run]
        lines.append(
            f"Schedule: zero fraction {run.sparsity:.4f}, non-zero params {run.nonzero_params:,}, "
            f"mAP@.5:.95 {run.metrics.map:.4f} (drop {report.schedule_drop:.4f}) on the whole split."
        )
        pruned = {k: v for k, v in report.schedule.items() if v > 0}
        lines.append(f"Layers it prunes ({len(pruned)} of {len(report.schedule)}): `{json.dumps(pruned)}`")
    worst = max((max(layer.drops) for layer in report.layers), default=0.0) or 1.0
    levels = " | ".join(f"{level:g}" for level in report.levels)
    lines += [
        "",
        f"Per-{result.settings.get('sensitivity_unit', 'layer')} sensitivity (mAP@.5:.95 drop with only it pruned, "
        f"{report.images} screening images; "
        f"shade = drop / worst drop {worst:.3f}):",
        "",
        f"| layer | weights | {levels} | heat |",
        "|---|---|" + "---|" * len(report.levels) + "---|",
    ]
    for layer in report.layers:
        cells = " | ".join(f"{d:+.4f}" for d in layer.drops)
        heat = "".join(SHADES[min(len(SHADES) - 1, max(0, round(d / worst * (len(SHADES) - 1))))] for d in layer.drops)
        lines.append(f"| {layer.name} | {layer.params:,} | {cells} | `{heat}` |")
    return lines


def main() -> None:
    args = parse_args()
    spec = resolve_dataset(load_catalog(None), "shapes-val")
    request = JobRequest(
        checkpoint=DEMO.name,
        dataset="shapes-val",
        img_size=args.img,
        batch_size=args.batch_size,
        device="cpu",
        method=args.method,
        target={"max_map_drop": args.budget},
        resolution=args.resolution,
        screen_images=args.screen_images or None,
        objective=args.objective,
        analysis=None if args.no_sensitivity else "sensitivity",
        sensitivity_levels=args.levels,
        sensitivity_unit=args.unit,
    )
    started = time.perf_counter()
    result = run_local(request, DEMO, spec, reporter=EchoReporter())
    seconds = time.perf_counter() - started
    if args.json:
        args.json.write_text(result.model_dump_json(indent=1))
    search = result.search
    assert search is not None
    print(
        f"demo YOLOv5n on shapes-val ({result.runs[0].images} images) @ {args.img}px, {args.method}, "
        f"budget: mAP@.5:.95 drop <= {args.budget:g}, resolution {args.resolution:g}, objective {args.objective}; "
        f"{seconds:.0f} s in all\n"
    )
    print("\n".join(checks(result)))
    print()
    print("\n".join(probes_table(result)))
    print("\n".join(sensitivity_section(result)))


if __name__ == "__main__":
    main()
