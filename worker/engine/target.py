"""Target jobs in the engine: real probes for the search (prunebench.worker.engine.search).

A target job opens like any job (model fused on the device, split decoded once, scorer built once);
then every probe is one sweep point run through the pipeline's own ``_run_point`` on a view of the job
(the same dense model, decoded images and scorer; the screening subset is the first ``screen_images``
images by file name). Probes are cached by (sparsity, subset/full) within the job, so the search and the
sensitivity analysis never evaluate the same point twice. The dense baseline is evaluated on both the
full split and the subset; drops are measured against the dense model on the same images.

The result's ``runs`` are the points evaluated on the whole split (dense first, by sparsity; a sensitivity
schedule last); ``search`` lists every probe, the verified answer and its boundary.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from prunebench.contract import (
    CheckpointInfo,
    JobResult,
    Progress,
    RunResult,
    SearchProbe,
    SearchReport,
    TargetSpec,
)
from prunebench.datasets.catalog import DatasetSpec
from prunebench.worker.engine import pipeline, search
from prunebench.worker.engine.data import DecodedDataset
from prunebench.worker.engine.recovery import calibration
from prunebench.worker.engine.reporting import Reporter

OBJECTIVE_UNITS = {"sparsity": "fraction", "gflops": "GFLOPs", "params": "parameters", "size": "bytes"}
OBJECTIVE_UNITS["latency"] = "ms/image"
SEARCH_DIR = "search"
"""Under the job's artifacts dir: one folder per probe (fine-tuning checkpoints a retried probe resumes)."""


def objective_value(run: RunResult, objective: str) -> float:
    """The objective at ``run``: achieved sparsity (higher = more removed) or GFLOPs, non-zero parameters,
    bytes on disk, ms/image (lower = more removed). Latency is the first measured runtime's ms/image when the
    job asked for ``latency``, else the evaluation's total ms/image (pre-process + inference + NMS)."""
    if objective == "sparsity":
        return run.sparsity
    if objective == "gflops":
        return run.gflops
    if objective == "params":
        return float(run.nonzero_params)
    if objective == "size":
        return float(run.size_bytes or 0)
    measured = [r.ms_per_image for r in run.latency if r.status == "measured" and r.ms_per_image is not None]
    return measured[0] if measured else run.speed_ms_per_image.total


def objective_ratio(value: float, dense: float, objective: str) -> float:
    """What is left of the objective against the dense model (sparsity: the fraction of weights kept)."""
    if objective == "sparsity":
        return (1.0 - value) / (1.0 - dense) if dense < 1.0 else 0.0
    return value / dense if dense else 1.0


def removes_more(value: float, than: float, objective: str) -> bool:
    """Whether an objective value removes strictly more than another (sparsity up, the others down)."""
    return value > than if objective == "sparsity" else value < than


class _ProbeReporter:
    """Rewrites a probe's own progress (one point, 0-100 %) into the search's: probe k of about n."""

    def __init__(self, inner: Reporter, index: int, total: int, message: str, sparsity: float) -> None:
        self.inner, self.index, self.total, self.message, self.sparsity = inner, index, total, message, sparsity

    def progress(self, progress: Progress) -> None:
        within = min(max(progress.percent / 100.0, 0.0), 1.0)
        total = max(self.total, self.index + 1)
        message = f"{self.message}: {progress.message}" if progress.message else self.message
        self.inner.progress(
            progress.model_copy(
                update={
                    "run_index": self.index,
                    "runs_total": total,
                    "percent": min(99.0, 100.0 * (self.index + within) / total),
                    "sparsity": self.sparsity,
                    "message": message,
                }
            )
        )

    def should_stop(self) -> bool:
        return self.inner.should_stop()


class Probes:
    """Runs and caches the job's points: (sparsity, full) -> RunResult; ``schedule`` points by name."""

    def __init__(self, job: pipeline._Job, expected: int) -> None:
        self.job = job
        n = job.request.screen_images
        self.screen: DecodedDataset | None = (
            calibration.subset(job.decoded, n) if n is not None and n < len(job.decoded.images) else None
        )
        self.runs: dict[tuple[Any, bool], RunResult] = {}
        self.order: list[tuple[Any, bool]] = []
        self.expected = expected  # probes the progress bar assumes (it grows if the search needs more)
        self.started = 0  # probes begun (sensitivity probes included: they are not cached points)

    def images(self, full: bool) -> DecodedDataset:
        return self.job.decoded if full or self.screen is None else self.screen

    def view(self, label: str, sparsity: float, full: bool, **changes: Any) -> pipeline._Job:
        """The job seen by one probe: its one point, its images, its progress and its own scratch folder."""
        decoded = self.images(full)
        where = "full split" if decoded is self.job.decoded else "screen"
        self.started += 1
        message = f"probe {self.started}: {label} on the {where} ({len(decoded.images)} images)"
        reporter = _ProbeReporter(self.job.reporter, self.started - 1, self.expected, message, sparsity)
        scratch = self.job.artifacts_dir / SEARCH_DIR / f"{self.started}" if self.job.artifacts_dir else None
        return replace(
            self.job, points=[sparsity], decoded=decoded, reporter=reporter, artifacts_dir=scratch, **changes
        )

    def run(self, sparsity: float, full: bool) -> RunResult:
        """The uniform point at ``sparsity`` (the job's method), evaluated once per (sparsity, images)."""
        full = full or self.screen is None
        key = (round(sparsity, 10), full)
        if key not in self.runs:
            label = "dense baseline" if sparsity == 0.0 else f"sparsity {sparsity:g}"
            self.remember(key, pipeline.run_point(self.view(label, sparsity, full), 0))
        return self.runs[key]

    def run_schedule(self, name: str, layers: dict[str, float], full: bool, nominal: float) -> RunResult:
        """A per-layer schedule's point (``nominal``: its zero fraction, shown as the point's sparsity)."""
        full = full or self.screen is None
        key = (name, full)
        if key not in self.runs:
            view = self.view(name, nominal, full, schedule=dict(layers))
            run = pipeline.run_point(view, 0)
            self.remember(key, run.model_copy(update={"sparsity_target": round(run.sparsity, 6)}))
        return self.runs[key]

    def remember(self, key: tuple[Any, bool], run: RunResult) -> None:
        self.runs[key] = run
        self.order.append(key)

    def full_runs(self) -> list[tuple[tuple[Any, bool], RunResult]]:
        return [(key, self.runs[key]) for key in self.order if key[1]]


def _expected_probes(request: Any) -> int:
    steps = search.grid_steps(request.resolution, request.max_search_sparsity)
    return 2 + 2 * math.ceil(math.log2(max(steps, 2))) + 3


def _metric(run: RunResult, target: TargetSpec) -> float:
    return run.metrics.map if target.metric == "map" else run.metrics.map50


class TargetRun:
    """One target job's search: probes, the outcome, and the result blocks made from them."""

    def __init__(self, job: pipeline._Job) -> None:
        request = job.request
        assert request.target is not None
        self.job, self.request, self.target = job, request, request.target
        self.probes = Probes(job, _expected_probes(request))
        self.dense_full = self.probes.run(0.0, True)
        if self.target.max_relative_drop is not None and _metric(self.dense_full, self.target) <= 0.0:
            raise pipeline.PipelineError(
                f"the dense model's {self.target.metric} is 0 on this split: a relative budget has no reference"
            )
        self.dense_screen = self.probes.run(0.0, False)

    def drop(self, run: RunResult, full: bool) -> float:
        dense = self.dense_full if full or self.probes.screen is None else self.dense_screen
        return self.target.drop(_metric(dense, self.target), _metric(run, self.target))

    def evaluate(self, sparsity: float, full: bool) -> float:
        return self.drop(self.probes.run(sparsity, full), full)

    def search(self) -> search.SearchOutcome:
        return search.search_target(
            self.evaluate,
            self.target.budget,
            self.request.resolution,
            self.request.max_search_sparsity,
            screened=self.probes.screen is not None,
        )

    def objective(self, run: RunResult) -> float:
        return objective_value(run, self.request.objective)

    def ratio(self, run: RunResult) -> float:
        return objective_ratio(self.objective(run), self.objective(self.dense_full), self.request.objective)


def _probe_rows(target_run: TargetRun, run_index: dict[tuple[Any, bool], int]) -> list[SearchProbe]:
    rows = []
    for key in target_run.probes.order:
        if not isinstance(key[0], float) or key[0] == 0.0:
            continue  # the dense baseline is the reference, and schedules are not on the uniform curve
        run = target_run.probes.runs[key]
        full = key[1]
        drop = target_run.drop(run, full)
        rows.append(
            SearchProbe(
                sparsity=key[0],
                achieved_sparsity=run.sparsity,
                split="full" if full else "subset",
                images=run.images,
                map=run.metrics.map,
                map50=run.metrics.map50,
                drop=drop,
                passed=drop <= target_run.target.budget + search.EPS,
                objective=target_run.objective(run),
                objective_ratio=target_run.ratio(run),
                run_index=run_index.get(key),
            )
        )
    return rows


def _note(outcome: search.SearchOutcome, report_budget: str, resolution: float) -> str:
    if not outcome.met_budget:
        return (
            f"no pruned point meets the budget ({report_budget}): the answer is the dense model; the first step "
            f"{resolution:g} already drops {outcome.boundary_drop:.4f}"
        )
    if outcome.boundary is None:
        return f"every step up to the highest allowed ({outcome.answer:g}) meets the budget ({report_budget})"
    return (
        f"sparsity {outcome.answer:g} drops {outcome.answer_drop:.4f} (within {report_budget}); "
        f"{outcome.boundary:g} drops {outcome.boundary_drop:.4f} (over it), both on the whole split"
    )


def search_report(target_run: TargetRun, outcome: search.SearchOutcome, runs: list[RunResult]) -> SearchReport:
    """The result's search block; ``runs`` are the job's full-split runs in result order."""
    position = {id(run): i for i, run in enumerate(runs)}
    index = {key: position[id(run)] for key, run in target_run.probes.full_runs()}
    request, target = target_run.request, target_run.target
    answer_run = index[(round(outcome.answer, 10), True)]
    boundary_run = None if outcome.boundary is None else index[(round(outcome.boundary, 10), True)]
    kind = "absolute" if target.max_map_drop is not None else "relative"
    budget_text = f"{kind} {target.metric} drop <= {target.budget:g}"
    return SearchReport(
        metric=target.metric,
        budget_kind=kind,
        budget=target.budget,
        objective=request.objective,
        objective_unit=OBJECTIVE_UNITS[request.objective],
        resolution=request.resolution,
        max_search_sparsity=request.max_search_sparsity,
        screen_images=len(target_run.probes.screen.images) if target_run.probes.screen is not None else None,
        dense_map=_metric(target_run.dense_full, target),
        probes=_probe_rows(target_run, index),
        answer=outcome.answer,
        answer_drop=outcome.answer_drop,
        answer_objective=target_run.objective(runs[answer_run]),
        answer_run=answer_run,
        met_budget=outcome.met_budget,
        boundary=outcome.boundary,
        boundary_drop=outcome.boundary_drop,
        boundary_run=boundary_run,
        full_evaluations=len(index),
        note=_note(outcome, budget_text, request.resolution),
    )


def _settings(request: Any) -> dict[str, Any]:
    assert request.target is not None
    fields = ("objective", "resolution", "max_search_sparsity", "screen_images", "analysis")
    settings: dict[str, Any] = {"target": request.target.model_dump(), **{f: getattr(request, f) for f in fields}}
    if request.analysis == "sensitivity":
        settings["sensitivity_levels"] = list(request.sensitivity_levels)
        settings["sensitivity_unit"] = request.sensitivity_unit
    return settings


def run_target(
    job: pipeline._Job,
    job_id: str,
    checkpoint_info: CheckpointInfo,
    dataset: DatasetSpec,
    *,
    worker: str | None = None,
) -> JobResult:
    """Search an opened target job, then (``analysis: sensitivity``) build and verify a per-layer schedule."""
    target_run = TargetRun(job)
    outcome = target_run.search()
    sensitivity = None
    if job.request.analysis == "sensitivity":
        from prunebench.worker.engine import sensitivity as analysis

        sensitivity = analysis.Analysis(target_run, outcome)
        sensitivity.run()
    full = [(key, run) for key, run in target_run.probes.full_runs()]
    uniform = sorted((run for key, run in full if isinstance(key[0], float)), key=lambda run: run.sparsity_target)
    runs = uniform + [run for key, run in full if not isinstance(key[0], float)]  # schedules after the curve
    result = pipeline.assemble_result(job.request, job_id, checkpoint_info, dataset, runs, worker=worker)
    result.settings.update(_settings(job.request))
    result.search = search_report(target_run, outcome, runs)
    if sensitivity is not None:
        result.sensitivity = sensitivity.report(runs)
    if job.artifacts_dir is not None:
        shutil.rmtree(Path(job.artifacts_dir) / SEARCH_DIR, ignore_errors=True)
    job.reporter.progress(
        Progress(stage="done", run_index=len(runs), runs_total=len(runs), percent=100.0, message=result.search.note)
    )
    return result
