"""Putting jobs back on the queue: user retries, and jobs abandoned by a dead worker.

Torch-free: the API (retry) and the worker parents (the reaper) both use it.

Status model (README, "Attempts and retries"). A job's `attempts` list is its history; every attempt
ends with one outcome:

- `succeeded`, `failed` (deterministic error; never retried automatically), `canceled`
- `crashed`: the work-horse died (SIGKILL, OOM killer) and the worker parent saw it
- `abandoned`: the whole worker died (host lost, parent SIGKILLed); another worker's reaper noticed
  that the worker stopped heart-beating for `abandoned_after_s`

After `crashed` or `abandoned` the job goes `running -> queued` (the attempt records why) and runs
again on whichever worker is free, at most PRUNEBENCH_JOB_RETRIES times; after that it is `failed`
with the last attempt's reason. A client polling sees running -> queued -> running -> succeeded,
never a terminal status that later changes, and never `queued` without a closed attempt saying why.

A user may retry a `failed` or `canceled` job (POST /v1/jobs/{id}/retry): it goes back to `queued`
with its history kept, and gets a fresh automatic-retry budget.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime

import redis
from redis.client import Pipeline
from rq.registry import CanceledJobRegistry, FailedJobRegistry, StartedJobRegistry
from rq.worker import Worker

from prunebench.contract import JobResource, JobStatus, Progress
from prunebench.jobs.store import JobNotFound, JobStore, TransitionRefused, utcnow

log = logging.getLogger("prunebench.jobs.requeue")

RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELED)
UNPLANNED = ("crashed", "abandoned")
"""Attempt outcomes that count against PRUNEBENCH_JOB_RETRIES."""


def _attempts_json(job: JobResource, outcome: str | None = None, error: str | None = None) -> str:
    attempts = list(job.attempts)
    if outcome is not None and attempts and attempts[-1].outcome is None:
        attempts[-1] = attempts[-1].model_copy(update={"ended_at": utcnow(), "outcome": outcome, "error": error})
    return json.dumps([a.model_dump(mode="json") for a in attempts])


def _drop_rq_bookkeeping(store: JobStore, pipe: Pipeline, job_id: str, started_entries: list[bytes]) -> None:
    """Remove the job from rq's registries so neither rq's own clean-up nor a stale entry acts on it."""
    queue = store.queue
    # A job canceled while queued may still sit in rq's list (the worker would skip it): never twice.
    pipe.lrem(queue.key, 0, job_id)
    for registry in (FailedJobRegistry, CanceledJobRegistry):
        pipe.zrem(registry(queue=queue).key, job_id)
    if started_entries:
        pipe.zrem(StartedJobRegistry(queue=queue).key, *started_entries)


def _started_entries(store: JobStore, job_id: str) -> list[bytes]:
    """`job_id:execution_id` members of rq's started registry for this job."""
    key = StartedJobRegistry(queue=store.queue).key
    return [m for m in store.redis.zrange(key, 0, -1) if m.decode().split(":", 1)[0] == job_id]


def retry_job(store: JobStore, job_id: str) -> JobResource:
    """failed|canceled -> queued, re-enqueued in the same MULTI. Raises TransitionRefused otherwise."""
    started = _started_entries(store, job_id)

    def change(job: JobResource) -> dict[str, str]:
        return {
            "status": JobStatus.QUEUED.value,
            "finished_at": "",
            "error": "",
            "progress": Progress(stage="queued", message="retried by request").model_dump_json(),
        }

    def extra(pipe: Pipeline) -> None:
        _drop_rq_bookkeeping(store, pipe, job_id, started)
        store.enqueue(job_id, pipeline=pipe)

    return store._transition(job_id, RETRYABLE, change, extra=extra)


# -- abandoned jobs ---------------------------------------------------------------------------------


def worker_last_seen(connection: redis.Redis, worker_name: str) -> datetime | None:
    """The worker's last heartbeat, or None when its rq record is gone (expired or never there)."""
    raw = connection.hget(Worker.redis_worker_namespace_prefix + worker_name, "last_heartbeat")
    if raw is None:
        return None
    text = raw.decode()
    try:
        # rq writes '%Y-%m-%dT%H:%M:%S.%fZ' in UTC.
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def requeue_abandoned(store: JobStore, job_id: str, dead_worker: str, reason: str) -> JobResource:
    """running on `dead_worker` -> queued (or failed, when its retries are used up), atomically.

    Refused (TransitionRefused) when the job is no longer running on that worker: someone else
    (another reaper, the worker itself, a cancel) already moved it.
    """
    started = _started_entries(store, job_id)
    requeued: list[bool] = []

    def change(job: JobResource) -> dict[str, str]:
        if job.worker != dead_worker:
            raise TransitionRefused(job_id, job.status)
        unplanned = sum(1 for a in job.attempts if a.outcome in UNPLANNED) + 1
        if unplanned > store.settings.job_retries:
            requeued[:] = [False]
            return {
                "status": JobStatus.FAILED.value,
                "finished_at": utcnow().isoformat(),
                "error": f"{reason}; gave up after {unplanned} unplanned ends",
                "attempts": _attempts_json(job, "abandoned", reason),
            }
        requeued[:] = [True]
        return {
            "status": JobStatus.QUEUED.value,
            "attempts": _attempts_json(job, "abandoned", reason),
            "progress": Progress(stage="queued", message="retrying: its worker died").model_dump_json(),
        }

    def extra(pipe: Pipeline) -> None:
        _drop_rq_bookkeeping(store, pipe, job_id, started)
        if requeued and requeued[0]:
            store.enqueue(job_id, pipeline=pipe)

    return store._transition(job_id, [JobStatus.RUNNING], change, extra=extra)


def reap_abandoned(store: JobStore, abandoned_after_s: float) -> list[str]:
    """Requeue (or fail) every running job whose worker has not heart-beaten for `abandoned_after_s`.

    Looks only at rq's started registry of our queue (jobs a worker took), so the cost is one read per
    job in flight. Returns the ids it moved.
    """
    moved: list[str] = []
    key = StartedJobRegistry(queue=store.queue).key
    job_ids = {m.decode().split(":", 1)[0] for m in store.redis.zrange(key, 0, -1)}
    now = utcnow()
    for job_id in sorted(job_ids):
        try:
            job = store.get(job_id)
        except JobNotFound:
            continue
        if job.status != JobStatus.RUNNING or not job.worker:
            continue
        seen = worker_last_seen(store.redis, job.worker)
        silent_s = (now - seen).total_seconds() if seen is not None else None
        if silent_s is not None and silent_s < abandoned_after_s:
            continue
        # A worker record that vanished while the job started moments ago: give it the same grace.
        if silent_s is None and job.started_at and (now - job.started_at).total_seconds() < abandoned_after_s:
            continue
        silent = f"{silent_s:.0f} s" if silent_s is not None else "its record expired"
        reason = f"WorkerLost: worker {job.worker} stopped heart-beating ({silent})"
        try:
            after = requeue_abandoned(store, job_id, job.worker, reason)
        except (TransitionRefused, JobNotFound):
            continue
        log.warning("job %s: %s; now %s", job_id, reason, after.status.value)
        moved.append(job_id)
    return moved


class Reaper(threading.Thread):
    """A daemon thread in each worker parent that runs `reap_abandoned` every `interval_s`.

    A thread rather than rq's maintenance hook: an idle rq worker sits in a blocking dequeue for
    minutes, and a busy one only runs maintenance between jobs, so neither notices a dead peer in
    seconds. Every worker runs one; the WATCH/MULTI in requeue_abandoned lets exactly one of them
    move a given job. It has its own Redis client: nothing it holds is shared with the forked horse.
    """

    def __init__(self, store: JobStore, abandoned_after_s: float, interval_s: float) -> None:
        super().__init__(name="prunebench-reaper", daemon=True)
        self.store = store
        self.abandoned_after_s = abandoned_after_s
        self.interval_s = interval_s
        self.stopped = threading.Event()

    def run(self) -> None:
        # After start-up or a Redis outage every worker's last heartbeat looks old, though the workers
        # are fine (they could not write it). Reap only once Redis has been reachable for a full
        # `abandoned_after_s`, so a live worker has had time to heart-beat again.
        reachable_since: float | None = None
        while not self.stopped.wait(self.interval_s):
            try:
                self.store.redis.ping()
                reachable_since = reachable_since or time.monotonic()
                if time.monotonic() - reachable_since >= self.abandoned_after_s:
                    reap_abandoned(self.store, self.abandoned_after_s)
            except redis.exceptions.RedisError as exc:
                # Redis down: the worker loop reconnects by itself; so do we, next round.
                reachable_since = None
                log.info("reaper: Redis unavailable (%s); retrying", exc)
            except Exception:
                log.exception("reaper: unexpected error; retrying next round")

    def stop(self) -> None:
        self.stopped.set()
