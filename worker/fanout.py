"""Fan-out: a sweep's points run in parallel on every free worker, as rq child jobs.

Runs inside work-horses only (it opens the engine). The flow of one job with n > 1 points:

1. The job's own work-horse (the **parent**) enqueues one child rq job per point but the first
   (``prunebench.worker.entry.run_point(job_id, k)``), then works through the points itself, dense
   baseline first: it *claims* a point (``prunebench.jobs.points``, an exclusive HSETNX), runs it,
   stores its RunResult, and claims the next unclaimed one.
2. Every other free worker dequeues a child, claims that point (or finds it taken or done and
   returns at once), runs it and stores its RunResult. Each process opens the job once (model on
   its device, decoded split from the host's decode cache, scorer).
3. When nothing is left to claim, the parent waits for the points others run, writing the job's
   progress (points done + fractions of those running). A point whose runner stops heart-beating
   for ``PRUNEBENCH_ABANDONED_AFTER_S`` (its horse was killed) is released and run again by whoever
   claims it first: a retry of that point alone. A deterministic failure of any point fails the job,
   naming the point; ``POST /v1/jobs/{id}/retry`` then reruns only the points without a result.
4. Once every point has a result, the parent assembles the job's result (deltas against the dense
   point) exactly as a single-process sweep would.

Cancel: the API marks the job canceled; the parent and every child see it at their next batch and stop.
With one worker, the parent ends up running every point itself (the children find them claimed).
With N workers and N points, the sweep takes about one point's time plus one job opening.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prunebench.config import Settings
from prunebench.contract import CheckpointInfo, JobRequest, JobResult, JobStatus, Progress, RunResult
from prunebench.datasets.catalog import DatasetSpec
from prunebench.jobs.points import PointStore
from prunebench.jobs.store import JobStore
from prunebench.worker.engine.reporting import JobCanceled

log = logging.getLogger("prunebench.worker")

WAIT_S = 0.5
"""How often the parent looks at the points others run."""


class PointFailed(RuntimeError):
    """A point failed deterministically on some worker; the message names it and says why."""


class PointReporter:
    """The engine's Reporter while it runs one point; its progress record is the point's heartbeat.

    ``on_progress`` (the parent's) also gets the point's Progress; ``should_stop`` is the job's status.
    Used as a context manager it also beats on a timer (every ``beat_s``, the last fraction again):
    a point in a long stage that reports nothing (scoring a large split, export, an epoch) is alive
    as long as its process is, so only a dead runner goes silent for ``PRUNEBENCH_ABANDONED_AFTER_S``.
    """

    def __init__(
        self,
        store: JobStore,
        points: PointStore,
        job_id: str,
        index: int,
        worker: str,
        should_stop: Callable[[], bool],
        on_progress: Callable[[Progress], None] | None = None,
        beat_s: float = 1.0,
    ) -> None:
        self.store, self.points, self.job_id = store, points, job_id
        self.index, self.worker = index, worker
        self._should_stop = should_stop
        self._on_progress = on_progress
        self._beat_s = beat_s
        self._fraction = 0.0
        self._stopped = threading.Event()
        self._beater: threading.Thread | None = None

    def __enter__(self) -> PointReporter:
        self.points.report(self.index, self._fraction, self.worker)
        self._beater = threading.Thread(target=self._beat, name=f"point-{self.index}-heartbeat", daemon=True)
        self._beater.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        if self._beater is not None:
            self._beater.join()

    def _beat(self) -> None:
        while not self._stopped.wait(self._beat_s):
            try:
                self.points.report(self.index, self._fraction, self.worker)
            except Exception:  # a Redis hiccup: the next beat (or progress report) tries again
                log.debug("job %s: point %d heartbeat failed", self.job_id, self.index, exc_info=True)

    def progress(self, progress: Progress) -> None:
        runs = max(progress.runs_total, 1)
        # The engine reports percent of the whole sweep; this point's own share is what is left of it.
        fraction = progress.percent * runs / 100.0 - progress.run_index if progress.stage != "done" else 1.0
        self._fraction = fraction
        self.points.report(self.index, fraction, self.worker)
        if self._on_progress is not None:
            self._on_progress(progress)

    def should_stop(self) -> bool:
        return self._should_stop()


def _open(request: JobRequest, path: Path, dataset: DatasetSpec, reporter: Any, settings: Settings, job_id: str) -> Any:
    from prunebench.datasets.digests import DigestMemo
    from prunebench.worker.engine.decode_cache import DecodeCache
    from prunebench.worker.engine.pipeline import open_job

    cache = DecodeCache(settings.decode_cache_dir, settings.decode_cache_bytes, DigestMemo(settings.digest_memo))
    from prunebench.datasets.catalog import load_catalog, resolve_dataset

    # Every process that runs points trains and calibrates them, so each opens those splits itself.
    catalog = load_catalog(settings.datasets, include_builtin=settings.builtin_assets)
    train = request.finetune.dataset if request.finetune is not None else None
    train_dataset = resolve_dataset(catalog, train) if train is not None else None
    calibration = request.calibration.dataset
    calibration_dataset = resolve_dataset(catalog, calibration) if calibration is not None else None
    artifacts = Path(settings.artifacts_dir) / job_id
    return open_job(request, path, dataset, reporter, artifacts, cache, train_dataset, calibration_dataset)


def run_claimed(
    store: JobStore,
    settings: Settings,
    job_id: str,
    request: JobRequest,
    path: Path,
    dataset: DatasetSpec,
    worker: str,
    should_stop: Callable[[], bool],
    first: int,
    on_progress: Callable[[Progress], None] | None = None,
    *,
    only_one: bool = False,
) -> int:
    """Claim and run points, ``first`` first, until none is left to claim (or one ran, with ``only_one``).

    Returns how many ran here. A child passes ``only_one``: it runs the point it was enqueued for, or
    one left over, and frees its worker for the next child.
    """
    from prunebench.worker.engine.pipeline import run_point

    points = PointStore(store.redis, settings.redis_prefix, job_id)
    total = len(request.sweep())
    order = [first] + [k for k in range(total) if k != first]
    opened = None
    ran = 0
    for index in order:
        if should_stop():
            raise JobCanceled()
        if not points.claim(index, worker):
            continue
        reporter = PointReporter(
            store, points, job_id, index, worker, should_stop, on_progress, beat_s=settings.heartbeat_s
        )
        try:
            with reporter:
                if opened is None:
                    opened = _open(request, path, dataset, reporter, settings, job_id)
                opened.reporter = reporter
                run = run_point(opened, index)
        except JobCanceled:
            points.release(index)
            raise
        except Exception as exc:
            from prunebench.worker.entry import one_line

            log.exception("job %s: point %d failed", job_id, index)
            points.fail(index, one_line(exc))
            raise
        points.save_result(index, run.model_dump_json(), worker)
        ran += 1
        if only_one:
            break
    return ran


def _job_progress(points: PointStore, total: int, current: Progress | None) -> Progress:
    """The job's progress: points done plus the fractions of those running; stage and image counts
    from the point this process is running (``current``), if any."""
    done = points.done()
    running = {k: p for k, p in points.progress().items() if k not in done}
    fraction = len(done) + sum(p.fraction for p in running.values())
    base = current or Progress(stage="evaluating")
    return base.model_copy(
        update={
            "stage": base.stage if len(done) < total else "done",
            "run_index": len(done),
            "runs_total": total,
            "percent": min(100.0, 100.0 * fraction / max(total, 1)),
            "message": f"{len(done)}/{total} points done, {len(running)} running",
        }
    )


def run_fanned_out(
    store: JobStore,
    settings: Settings,
    job_id: str,
    request: JobRequest,
    info: CheckpointInfo,
    path: Path,
    dataset: DatasetSpec,
    reporter: Any,
    worker: str,
) -> JobResult:
    """The parent's side (see the module docstring): enqueue, run, wait, assemble."""
    from prunebench.worker.engine.pipeline import assemble_result, drop_training_state

    points = PointStore(store.redis, settings.redis_prefix, job_id)
    points.reset_for_attempt()  # a retried job keeps its stored points and reruns the rest
    total = len(request.sweep())
    todo = [k for k in range(total) if k not in points.done()]
    for index in todo[1:]:
        store.enqueue_point(job_id, index)

    last: list[Progress | None] = [None]

    def publish(current: Progress | None = None) -> None:
        if current is not None:
            last[0] = current
        reporter.progress(_job_progress(points, total, last[0]))

    while True:
        if todo:
            run_claimed(store, settings, job_id, request, path, dataset, worker, reporter.should_stop, todo[0], publish)
        done = points.done()
        if len(done) == total:
            break
        errors = points.errors()
        if errors:
            index = min(errors)
            raise PointFailed(f"point {index} (sparsity {request.sweep()[index]:g}): {errors[index]}")
        if reporter.should_stop():
            raise JobCanceled()
        for index in points.stale(settings.abandoned_after_s):
            log.warning("job %s: point %d's runner went silent; running it again", job_id, index)
            points.release(index)
        publish()
        todo = [k for k in range(total) if k not in done and k not in points.claimed()]
        if not todo:
            time.sleep(WAIT_S)

    stored = points.results()
    runs = [RunResult.model_validate_json(stored[k]) for k in range(total)]
    drop_training_state(Path(settings.artifacts_dir) / job_id)
    return assemble_result(request, job_id, info, dataset, runs, worker=worker)


def child_should_stop(store: JobStore, job_id: str) -> Callable[[], bool]:
    """A child stops once its job is no longer running (canceled, failed, gone), checked at most twice a second."""
    last = [0.0, False]

    def check() -> bool:
        now = time.monotonic()
        if now - last[0] >= 0.5:
            last[0], last[1] = now, store.status(job_id) != JobStatus.RUNNING
        return bool(last[1])

    return check
