"""The rq entry point: `prunebench.worker.entry.run_job(job_id)`, run inside rq's work-horse.

Thin on purpose: it turns our job record into a pipeline call and the pipeline's outcome into a
status. Only a dying work-horse (killed, OOM-killed) escapes as a failure rq may retry; every error
the engine raises is deterministic (bad checkpoint, bad dataset, a bug) and is recorded as `failed`
here, without a retry that would fail the same way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from prunebench.checkpoints.store import CheckpointStore, UnknownCheckpoint
from prunebench.config import Settings, get_settings
from prunebench.contract import CheckpointInfo, JobResource, JobResult, JobStatus, Progress
from prunebench.datasets.catalog import DatasetSpec, UnknownDataset, load_catalog, resolve_dataset
from prunebench.datasets.digests import DigestMemo
from prunebench.infra.logging_setup import tagged_with_job
from prunebench.jobs import rq_adapter
from prunebench.jobs.metrics import StageClock
from prunebench.jobs.result_cache import ResultCache, cache_key, cacheable
from prunebench.jobs.store import JobNotFound, JobStore, TransitionRefused, connect_worker
from prunebench.worker.engine.reporting import JobCanceled, one_line

log = logging.getLogger("prunebench.worker")

PROGRESS_INTERVAL_S = 0.5
"""At most this often a progress write; stage changes are always written."""
STOP_CHECK_INTERVAL_S = 0.5
"""At most this often a status read for should_stop(): cancel latency vs Redis load."""


class CheckpointChanged(RuntimeError):
    """The named checkpoint's bytes differ from those the job was submitted against."""


class RedisReporter:
    """The engine's Reporter for a queued job: progress into the job record, cancel from its status."""

    def __init__(
        self, store: JobStore, job_id: str, worker: str | None = None, started_at: datetime | None = None
    ) -> None:
        self.store = store
        self.job_id = job_id
        # This attempt's worker and start. If the record names another one (or a later start, by a
        # worker restarted under the same name), this worker was declared dead (a SIGKILLed parent
        # leaves its horse running) and the job was requeued: this horse is an orphan and must stop
        # rather than write progress or a result over the new attempt.
        self.worker = worker
        self.started_at = started_at
        self._last_write = 0.0
        self._last_stage: str | None = None
        self._last_check = 0.0
        self._canceled = False

    def progress(self, progress: Progress) -> None:
        now = time.monotonic()
        if progress.stage == self._last_stage and now - self._last_write < PROGRESS_INTERVAL_S:
            return
        self._last_write, self._last_stage = now, progress.stage
        if self.worker is not None and not self.store.running_on(self.job_id, self.worker, self.started_at):
            # Requeued, failed, or run elsewhere meanwhile: this horse is an orphan.
            self._canceled = True
            return
        if not self.store.update_progress(self.job_id, progress) and self.store.status(self.job_id) in (
            JobStatus.CANCELED,
            None,
        ):
            self._canceled = True

    def should_stop(self) -> bool:
        if self._canceled:
            return True
        now = time.monotonic()
        if now - self._last_check >= STOP_CHECK_INTERVAL_S:
            self._last_check = now
            self._canceled = self.store.status(self.job_id) in (JobStatus.CANCELED, None) or (
                self.worker is not None and not self.store.running_on(self.job_id, self.worker, self.started_at)
            )
        return self._canceled


def _publish_artifacts(job_id: str, result: JobResult) -> None:
    """Point saved models at their download URLs (the pipeline wrote artifacts_dir/run-{k}.pt and .onnx)."""
    for k, run in enumerate(result.runs):
        if run.model_artifact:
            run.model_artifact = f"/v1/jobs/{job_id}/runs/{k}/model"
        if run.onnx is not None and run.onnx.artifact:
            run.onnx.artifact = f"/v1/jobs/{job_id}/runs/{k}/onnx"


def _cached_result(
    store: JobStore, cache: ResultCache, key: str, job_id: str, checkpoint: CheckpointInfo
) -> JobResult | None:
    """The stored result of an identical earlier job, re-issued under this job's id.

    The checkpoint is this job's view of it: the earlier job may be another owner's, under its name.
    """
    source = cache.lookup(key)
    earlier = store.get_result(source) if source else None
    if earlier is None:
        return None
    return earlier.model_copy(update={"job_id": job_id, "cached": True, "cache_key": key, "checkpoint": checkpoint})


@tagged_with_job
def run_job(job_id: str, settings: Settings | None = None) -> str:
    """Run one job to a terminal status; returns that status (rq stores it as the rq job's result).

    The steps: start an attempt, resolve the job's inputs, answer from the result cache or run the
    pipeline, store the result. Every deterministic error ends the job `failed` with a one-line reason.
    """
    settings = settings or get_settings()
    store = JobStore(connect_worker(settings), settings)
    started = _start_attempt(store, job_id)
    if isinstance(started, str):
        return started
    job = started
    # Per-stage seconds for /metrics (prunebench.jobs.metrics), written as each stage ends.
    reporter = StageClock(RedisReporter(store, job_id, job.worker, job.started_at), store.redis, store.keys)
    try:
        inputs = _resolve_inputs(store, settings, job)
        cache = ResultCache(store.redis, store.keys)
        memo = DigestMemo(settings.digest_memo)
        key = cache_key(
            job.request, inputs.checkpoint.id, inputs.dataset, memo, inputs.train_dataset, inputs.calibration_dataset
        )
        cached = _cached_result(store, cache, key, job_id, inputs.checkpoint) if cacheable(job.request) else None
        if cached is not None:
            store.finish_succeeded(job_id, cached)
            log.info("job %s: succeeded from the cache", job_id)
            return JobStatus.SUCCEEDED.value
        result = _run_pipeline(settings, job, inputs, reporter, memo)
        result.cache_key = key
        store.finish_succeeded(job_id, result)
        if cacheable(job.request):
            cache.remember(key, job_id)
        log.info("job %s: succeeded", job_id)
        return JobStatus.SUCCEEDED.value
    except JobCanceled:
        log.info("job %s: stopped, canceled", job_id)
        return JobStatus.CANCELED.value
    except TransitionRefused as exc:
        # Finished, but canceled meanwhile: the cancel wins and the result is dropped.
        log.info("job %s: finished after it was canceled; result dropped", job_id)
        return exc.current.value if exc.current else "missing"
    except (UnknownCheckpoint, UnknownDataset) as exc:
        return _fail(store, job_id, f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}")
    except Exception as exc:
        log.exception("job %s: failed", job_id)
        return _fail(store, job_id, one_line(exc))
    finally:
        reporter.close()


def _start_attempt(store: JobStore, job_id: str) -> JobResource | str:
    """Mark the job running on this worker; or the status to return at once when there is nothing to run."""
    try:
        job = store.get(job_id)
    except JobNotFound:
        log.warning("job %s: no record (deleted?); nothing to do", job_id)
        return "missing"
    if job.status.is_terminal:
        # Canceled while queued (or a stale retry of a finished job): nothing to run.
        return job.status.value
    try:
        job = store.mark_running(job_id, rq_adapter.current_worker_name())
    except TransitionRefused as exc:
        return exc.current.value if exc.current else "missing"
    log.info("job %s: attempt %d on %s", job_id, len(job.attempts), job.worker)
    return job


@dataclass(frozen=True)
class _Inputs:
    checkpoint: CheckpointInfo
    checkpoint_path: Path
    dataset: DatasetSpec
    train_dataset: DatasetSpec | None  # what `finetune.dataset` names, when the job fine-tunes
    calibration_dataset: DatasetSpec | None  # what `calibration.dataset` names, if anything


def _resolve_inputs(store: JobStore, settings: Settings, job: JobResource) -> _Inputs:
    """The checkpoint the job was submitted against and its dataset; raises when either is gone or changed."""
    pinned = store.checkpoint_id(job.id)
    # Among uploads sharing a name (several owners may use `det.pt`), take the one submitted.
    same = (lambda candidate: candidate.id == pinned) if pinned else None
    checkpoints = CheckpointStore(settings)
    info, path = checkpoints.resolve(job.request.checkpoint, same)
    if pinned and info.id != pinned:
        # A mounted file replaced after submission: run what was asked for, or nothing.
        raise CheckpointChanged(f"{job.request.checkpoint!r} changed since the job was submitted")
    if info.source == "upload" and job.owner is not None:
        # The result shows the submitter's own view of a shared upload, never another owner's name or time.
        info = checkpoints.owner_view(info, job.owner) or info.model_copy(update={"owner": job.owner})
    catalog = load_catalog(settings.datasets, include_builtin=settings.builtin_assets)
    train = job.request.finetune
    train_dataset = resolve_dataset(catalog, train.dataset) if train is not None else None
    calibration = job.request.calibration.dataset
    calibration_dataset = resolve_dataset(catalog, calibration) if calibration is not None else None
    return _Inputs(info, path, resolve_dataset(catalog, job.request.dataset), train_dataset, calibration_dataset)


def _run_pipeline(
    settings: Settings, job: JobResource, inputs: _Inputs, reporter: StageClock, memo: DigestMemo
) -> JobResult:
    """Prune and evaluate every sparsity point; saved models get their download URLs."""
    # Imported here, not at module level: the engine pulls in torch, and only the work-horse should.
    from prunebench.worker.engine.decode_cache import DecodeCache
    from prunebench.worker.engine.pipeline import run_pipeline

    if settings.fanout and len(job.request.sweep()) > 1:
        from prunebench.worker.fanout import run_fanned_out

        store = JobStore(connect_worker(settings), settings)
        result = run_fanned_out(
            store,
            settings,
            job.id,
            job.request,
            inputs.checkpoint,
            inputs.checkpoint_path,
            inputs.dataset,
            reporter,
            job.worker or "",
        )
    else:
        artifacts = Path(settings.artifacts_dir) / job.id
        decode_cache = DecodeCache(settings.decode_cache_dir, settings.decode_cache_bytes, memo)
        result = run_pipeline(
            job.request,
            job.id,
            inputs.checkpoint,
            inputs.checkpoint_path,
            inputs.dataset,
            reporter,
            artifacts,
            decode_cache=decode_cache,
            train_dataset=inputs.train_dataset,
            calibration_dataset=inputs.calibration_dataset,
        )
    _publish_artifacts(job.id, result)
    return result


@tagged_with_job
def run_point(job_id: str, index: int, settings: Settings | None = None) -> str:
    """A fanned-out job's child: run sweep point ``index`` unless it is taken or done (prunebench.worker.fanout).

    Returns what happened (rq keeps it as the child's result): ``ran``, ``nothing`` (claimed or done
    elsewhere, or the job is no longer running), ``canceled`` or ``failed``. A failure is stored on the
    point; the parent fails the job with it.
    """
    settings = settings or get_settings()
    store = JobStore(connect_worker(settings), settings)
    if store.status(job_id) != JobStatus.RUNNING:
        return "nothing"
    worker = rq_adapter.current_worker_name()
    try:
        job = store.get(job_id)
        inputs = _resolve_inputs(store, settings, job)
        from prunebench.worker.fanout import child_should_stop, run_claimed

        stop = child_should_stop(store, job_id)
        ran = run_claimed(
            store, settings, job_id, job.request, inputs.checkpoint_path, inputs.dataset, worker, stop, index,
            only_one=True,
        )  # fmt: skip
    except JobCanceled:
        return "canceled"
    except Exception:
        return "failed"
    log.info("job %s: point %d %s on %s", job_id, index, "ran" if ran else "was taken", worker)
    return "ran" if ran else "nothing"


def _fail(store: JobStore, job_id: str, error: str) -> str:
    try:
        store.finish_failed(job_id, error, from_statuses=[JobStatus.RUNNING])
    except TransitionRefused as exc:
        return exc.current.value if exc.current else "missing"
    return JobStatus.FAILED.value
