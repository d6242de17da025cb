"""Jobs abandoned by a dead worker: the reaper that notices them and hands them back to the job store.

Torch-free: every worker parent runs a `Reaper`. The transitions themselves (`requeue_abandoned`,
the user's `retry`, the status model) are the job store's (prunebench.jobs.store); rq's started
registry and worker heartbeats are read through prunebench.jobs.rq_adapter.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from prunebench.contract import JobStatus
from prunebench.jobs import rq_adapter
from prunebench.jobs.store import JobNotFound, JobStore, TransitionRefused, utcnow

log = logging.getLogger("prunebench.jobs.requeue")


def reap_abandoned(store: JobStore, abandoned_after_s: float) -> list[str]:
    """Requeue (or fail) every running job whose worker has not heart-beaten for `abandoned_after_s`.

    Looks only at rq's started registry of our queue (jobs a worker took), so the cost is one read per
    job in flight. Returns the ids it moved.
    """
    moved: list[str] = []
    now = utcnow()
    for job_id in sorted(rq_adapter.started_job_ids(store.queue)):
        try:
            job = store.get(job_id)
        except JobNotFound:
            continue
        if job.status != JobStatus.RUNNING or not job.worker:
            continue
        seen = rq_adapter.worker_last_seen(store.redis, job.worker)
        silent_s = (now - seen).total_seconds() if seen is not None else None
        if silent_s is not None and silent_s < abandoned_after_s:
            continue
        # A worker record that vanished while the job started moments ago: give it the same grace.
        if silent_s is None and job.started_at and (now - job.started_at).total_seconds() < abandoned_after_s:
            continue
        silent = f"{silent_s:.0f} s" if silent_s is not None else "its record expired"
        reason = f"WorkerLost: worker {job.worker} stopped heart-beating ({silent})"
        try:
            after = store.requeue_abandoned(job_id, job.worker, reason)
        except (TransitionRefused, JobNotFound):
            continue
        log.warning("job %s: %s; now %s", job_id, reason, after.status.value)
        moved.append(job_id)
    return moved


def requeue_jobs_of(store: JobStore, worker: str, reason: str) -> list[str]:
    """Requeue (or fail, within PRUNEBENCH_JOB_RETRIES) every job still `running` on `worker`.

    For a worker starting under the name of a dead one: no job can be running under its name yet,
    and once it heart-beats the reaper would take the dead one's jobs for its own. Returns the ids.
    """
    moved: list[str] = []
    for job_id in sorted(rq_adapter.started_job_ids(store.queue)):
        try:
            job = store.get(job_id)
            if job.status != JobStatus.RUNNING or job.worker != worker:
                continue
            after = store.requeue_abandoned(job_id, worker, reason)
        except (TransitionRefused, JobNotFound):
            continue
        log.warning("job %s: %s; now %s", job_id, reason, after.status.value)
        moved.append(job_id)
    return moved


class Reaper(threading.Thread):
    """A daemon thread in each worker parent that runs `reap_abandoned` every `interval_s`.

    A thread rather than rq's maintenance hook: an idle rq worker sits in a blocking dequeue for
    minutes, and a busy one only runs maintenance between jobs, so neither notices a dead peer in
    seconds. Every worker runs one; the WATCH/MULTI in JobStore.requeue_abandoned lets exactly one of them
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
