"""Job records, results and the rq queue in Redis: the one place both the API and the workers write.

Torch-free (the API imports it). Layout, every key under `settings.redis_prefix` (`{p}`):

- `{p}:job:{id}`   hash: request, status, progress, created_at, started_at, finished_at, error,
                   attempts, owner, worker, checkpoint_id, cached, deliveries (JSON or plain strings)
- `{p}:jobs`       sorted set of job ids scored by creation time (newest-first listing)
- `{p}:result:{id}` the JobResult JSON. No TTL, ever: results are the product. A copy is also written
                   atomically to `store_dir/results/{id}.json`, which is read back if Redis lost it.

Every status change goes through `_transition`, a WATCH/MULTI transaction that only applies when the
current status is one of the allowed ones. That is what makes cancel-vs-finish races safe: a worker
finishing a job the user just canceled finds the status `canceled` and writes nothing; a result is
stored in the same MULTI as the `succeeded` status, so nobody ever sees one without the other.

Key names come from prunebench.jobs.keys; what is done with rq's queue and registries goes through
prunebench.jobs.rq_adapter. Nothing outside this class changes a job's status.

Status model (README, "Attempts and retries"). A job's `attempts` list is its history; every attempt
ends with one outcome (`AttemptOutcome` in the contract):

- `succeeded`, `cached`, `failed` (deterministic error; never retried automatically), `canceled`
- `crashed`: the work-horse died (SIGKILL, OOM killer) and the worker parent saw it
- `abandoned`: the whole worker died (host lost, parent SIGKILLed); another worker's reaper noticed
  that the worker stopped heart-beating for `abandoned_after_s` (prunebench.jobs.requeue)

After `crashed` or `abandoned` the job goes `running -> queued` (the attempt records why) and runs
again on whichever worker is free, at most PRUNEBENCH_JOB_RETRIES times; after that it is `failed`
with the last attempt's reason. A client polling sees running -> queued -> running -> succeeded,
never a terminal status that later changes, and never `queued` without a closed attempt saying why.
A user may retry a `failed` or `canceled` job (`retry`): it goes back to `queued` with its history
kept, and gets a fresh automatic-retry budget.
"""

from __future__ import annotations

import builtins
import json
import math
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.client import Pipeline
from redis.retry import Retry

from prunebench.config import Settings
from prunebench.contract import Attempt, AttemptOutcome, JobRequest, JobResource, JobResult, JobStatus, Progress
from prunebench.infra.files import write_atomic
from prunebench.infra.redis_values import optional_text, text
from prunebench.jobs import events as job_events
from prunebench.jobs import rq_adapter
from prunebench.jobs.keys import Keys

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELED)
"""What a user may retry."""
UNPLANNED: tuple[AttemptOutcome, ...] = ("crashed", "abandoned")
"""Attempt outcomes that count against PRUNEBENCH_JOB_RETRIES."""


class JobNotFound(KeyError):
    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class TransitionRefused(RuntimeError):
    """The job was not in a status that allows the change (e.g. finishing a canceled job)."""

    def __init__(self, job_id: str, current: JobStatus | None) -> None:
        super().__init__(f"job {job_id} is {current.value if current else 'missing'}")
        self.job_id = job_id
        self.current = current


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return uuid.uuid4().hex


def _text(value: Any) -> str | None:
    return optional_text(value)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _close_attempt(job: JobResource, outcome: AttemptOutcome, error: str | None = None) -> str:
    """The job's attempts as JSON, its open (last) attempt closed with `outcome`."""
    attempts = list(job.attempts)
    if attempts and attempts[-1].outcome is None:
        attempts[-1] = attempts[-1].model_copy(update={"ended_at": utcnow(), "outcome": outcome, "error": error})
    return json.dumps([a.model_dump(mode="json") for a in attempts])


OUTAGE_BACKOFF_CAP_S = 2.0
"""Longest pause between two reconnection attempts of a worker riding out a Redis outage."""


def outage_retry(ride_out_s: float) -> Retry:
    """redis-py's retry policy for a client that waits out an outage of at least `ride_out_s` seconds.

    Exponential back-off 0.2, 0.4, 0.8, 1.6 s, then every OUTAGE_BACKOFF_CAP_S (ExponentialBackoff
    from redis-py); enough attempts that the pauses alone add up to `ride_out_s`. Every command
    (and every reconnection) retries on ConnectionError/TimeoutError, then raises the last error.
    """
    first = sum(min(OUTAGE_BACKOFF_CAP_S, 0.1 * 2**n) for n in range(1, 5))
    retries = 4 + max(0, math.ceil((ride_out_s - first) / OUTAGE_BACKOFF_CAP_S))
    return Retry(ExponentialBackoff(cap=OUTAGE_BACKOFF_CAP_S, base=0.1), retries)


def connect(settings: Settings, ride_out_s: float = 0.0) -> redis.Redis:
    """A Redis client for prunebench and rq (bytes responses: rq needs them undecoded).

    The API's client fails fast (redis-py's default few retries) so a request during an outage gets
    its 503 at once. A worker's client (`ride_out_s` = PRUNEBENCH_WORKER_REDIS_OUTAGE_S) blocks each
    command until Redis answers again, for up to about `ride_out_s`: rq's work loop, a work-horse's
    progress writes and the final result all wait out an outage instead of failing the job.
    """
    extra: dict[str, Any] = {}
    if ride_out_s > 0:
        extra = {"retry": outage_retry(ride_out_s), "retry_on_error": [redis.exceptions.ConnectionError]}
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=3,
        socket_timeout=10,
        health_check_interval=30,
        retry_on_timeout=True,
        **extra,
    )


def connect_worker(settings: Settings) -> redis.Redis:
    """The client of a worker parent and its work-horses: rides out Redis outages (see `connect`)."""
    return connect(settings, ride_out_s=settings.worker_redis_outage_s)


class JobStore:
    """Job records, results and the queue for one deployment (one prefix, one queue)."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.redis = connection
        self.settings = settings
        self.prefix = settings.redis_prefix
        self.keys = Keys(settings.redis_prefix)
        self.queue = rq_adapter.make_queue(connection, settings.queue_name)

    def result_file(self, job_id: str) -> Path:
        return self.settings.results_dir / f"{job_id}.json"

    # -- records ------------------------------------------------------------------------------------

    def _decode(self, job_id: str, raw: dict[Any, Any]) -> JobResource:
        fields = {text(k): text(v) for k, v in raw.items()}
        status = JobStatus(fields["status"])
        return JobResource(
            id=job_id,
            status=status,
            owner=fields.get("owner") or None,
            request=JobRequest.model_validate_json(fields["request"]),
            progress=Progress.model_validate_json(fields["progress"]) if fields.get("progress") else Progress(),
            created_at=datetime.fromisoformat(fields["created_at"]),
            started_at=_time(fields.get("started_at")),
            finished_at=_time(fields.get("finished_at")),
            error=fields.get("error") or None,
            worker=fields.get("worker") or None,
            attempts=[Attempt.model_validate(a) for a in json.loads(fields.get("attempts") or "[]")],
            result_url=f"/v1/jobs/{job_id}/result" if status == JobStatus.SUCCEEDED else None,
            deliveries=json.loads(fields.get("deliveries") or "[]"),
            cached=fields.get("cached") == "1",
        )

    def get(self, job_id: str) -> JobResource:
        raw = self.redis.hgetall(self.keys.job(job_id))
        if not raw:
            raise JobNotFound(job_id)
        return self._decode(job_id, raw)

    def checkpoint_id(self, job_id: str) -> str | None:
        """The checkpoint id resolved when the job was submitted (the request may name it by name)."""
        return _text(self.redis.hget(self.keys.job(job_id), "checkpoint_id"))

    def create(
        self, request: JobRequest, owner: str, checkpoint_id: str | None = None, job_id: str | None = None
    ) -> JobResource:
        """Store a queued job and enqueue it for the workers, in one MULTI (never one without the other).

        `job_id` is given when the id was reserved beforehand (an Idempotency-Key claim names it).
        """
        job_id = job_id or new_job_id()
        created = utcnow()
        record = {
            "request": request.model_dump_json(),
            "status": JobStatus.QUEUED.value,
            "progress": Progress().model_dump_json(),
            "created_at": created.isoformat(),
            "attempts": "[]",
            "owner": owner,
            "checkpoint_id": checkpoint_id or "",
        }
        with self.redis.pipeline(transaction=True) as pipe:
            # Explicit MULTI: rq's enqueue joins a caller's pipeline only once it is in MULTI mode.
            pipe.multi()
            pipe.hset(self.keys.job(job_id), mapping=dict[Any, Any](record))
            pipe.zadd(self.keys.jobs, {job_id: created.timestamp()})
            job_events.on_created(pipe, self.keys)
            self.enqueue(job_id, pipeline=pipe)
            pipe.execute()
        return self.get(job_id)

    def enqueue(self, job_id: str, pipeline: Pipeline | None = None) -> None:
        rq_adapter.enqueue(
            self.queue,
            job_id,
            timeout_s=self.settings.job_timeout_s,
            retries=self.settings.job_retries,
            pipeline=pipeline,
        )

    def enqueue_point(self, job_id: str, index: int) -> None:
        """A child rq job running sweep point ``index`` of ``job_id`` on any free worker.

        Not retried by rq: a child whose horse dies leaves its point claimed but silent, and the
        parent releases it to be run again (prunebench.jobs.points).
        """
        rq_adapter.enqueue_point(self.queue, job_id, index, timeout_s=self.settings.job_timeout_s)

    def list(
        self, status: JobStatus | None = None, owner: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[JobResource], int]:
        """One page of jobs, newest first, and the total matching count.

        Without filters the page comes straight from the sorted set. With a status or owner filter the
        index is scanned in chunks (a few fields per job, pipelined): fine for the thousands of jobs a
        deployment keeps; a per-status index would be the next step beyond that.
        """
        if status is None and owner is None:
            total = int(self.redis.zcard(self.keys.jobs))
            ids = [_text(i) or "" for i in self.redis.zrevrange(self.keys.jobs, offset, offset + limit - 1)]
            return self._many(ids), total
        matching: list[str] = []
        start, chunk = 0, 500
        while True:
            ids = [_text(i) or "" for i in self.redis.zrevrange(self.keys.jobs, start, start + chunk - 1)]
            if not ids:
                break
            with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hmget(self.keys.job(job_id), ["status", "owner"])
                rows = pipe.execute()
            for job_id, (st, ow) in zip(ids, rows, strict=True):
                if status is not None and _text(st) != status.value:
                    continue
                if owner is not None and _text(ow) != owner:
                    continue
                matching.append(job_id)
            start += chunk
        return self._many(matching[offset : offset + limit]), len(matching)

    def _many(self, ids: Iterable[str]) -> builtins.list[JobResource]:
        ids = list(ids)
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.keys.job(job_id))
            rows = pipe.execute()
        return [self._decode(job_id, raw) for job_id, raw in zip(ids, rows, strict=True) if raw]

    # -- transitions --------------------------------------------------------------------------------

    def _transition(
        self,
        job_id: str,
        allowed: Iterable[JobStatus],
        change: Callable[[JobResource], dict[str, str]],
        extra: Callable[[Pipeline], None] | None = None,
    ) -> JobResource:
        """Apply `change(current)` (fields to set) only if the status is in `allowed`, atomically.

        WATCH/MULTI: if anyone writes the record between our read and EXEC, redis-py retries the whole
        function on the fresh record. `extra` adds more writes to the same MULTI (the result key).
        """
        allowed = set(allowed)
        key = self.keys.job(job_id)

        def attempt(pipe: Pipeline) -> None:
            raw = pipe.hgetall(key)
            if not raw:
                raise JobNotFound(job_id)
            current = self._decode(job_id, raw)
            if current.status not in allowed:
                raise TransitionRefused(job_id, current.status)
            fields = change(current)
            pipe.multi()
            pipe.hset(key, mapping=dict[Any, Any](fields))
            # Metrics and owed webhooks commit with the status (prunebench.jobs.events).
            job_events.on_transition(pipe, self.keys, current, fields)
            if extra is not None:
                extra(pipe)

        self.redis.transaction(attempt, key)
        return self.get(job_id)

    def mark_running(self, job_id: str, worker: str) -> JobResource:
        """queued (or running, when rq retries after a crash) -> running, opening a new attempt."""

        def change(job: JobResource) -> dict[str, str]:
            now = utcnow()
            attempts = list(job.attempts)
            if attempts and attempts[-1].outcome is None:
                # The previous attempt's work-horse died without closing it.
                attempts[-1] = attempts[-1].model_copy(update={"ended_at": now, "outcome": "crashed"})
            attempts.append(Attempt(number=len(attempts) + 1, worker=worker, started_at=now))
            return {
                "status": JobStatus.RUNNING.value,
                "started_at": now.isoformat(),
                "worker": worker,
                "attempts": json.dumps([a.model_dump(mode="json") for a in attempts]),
                "progress": Progress(stage="loading").model_dump_json(),
                "error": "",
            }

        return self._transition(job_id, ACTIVE, change)

    def update_progress(self, job_id: str, progress: Progress) -> bool:
        """Record progress of a running job; False (nothing written) once it is no longer running."""
        try:
            self._transition(job_id, [JobStatus.RUNNING], lambda _job: {"progress": progress.model_dump_json()})
        except (TransitionRefused, JobNotFound):
            return False
        return True

    def status(self, job_id: str) -> JobStatus | None:
        value = _text(self.redis.hget(self.keys.job(job_id), "status"))
        return JobStatus(value) if value else None

    def running_on(self, job_id: str, worker: str, started_at: datetime | None = None) -> bool:
        """True while the record says `running` on `worker` (one read; a work-horse checks it often).

        With `started_at` (when this attempt started), also that no later attempt has begun: a worker
        restarted under the same name may run the job again while the dead one's horse still works.
        """
        status, current, started = self.redis.hmget(self.keys.job(job_id), ["status", "worker", "started_at"])
        same_attempt = started_at is None or _time(_text(started)) == started_at
        return _text(status) == JobStatus.RUNNING.value and (_text(current) or "") == worker and same_attempt

    def finish_succeeded(self, job_id: str, result: JobResult) -> JobResource:
        """running -> succeeded with its result, in one MULTI. Refused when the job was canceled meanwhile."""
        payload = result.model_dump_json()

        def change(job: JobResource) -> dict[str, str]:
            progress = job.progress.model_copy(update={"stage": "done", "percent": 100.0})
            return {
                "status": JobStatus.SUCCEEDED.value,
                "finished_at": utcnow().isoformat(),
                "progress": progress.model_dump_json(),
                "attempts": _close_attempt(job, "cached" if result.cached else "succeeded"),
                "cached": "1" if result.cached else "0",
            }

        def store_result(pipe: Pipeline) -> None:
            pipe.set(self.keys.result(job_id), payload)

        job = self._transition(job_id, [JobStatus.RUNNING], change, extra=store_result)
        # The file copy follows the commit: a refused transition must not leave a result behind.
        write_atomic(self.result_file(job_id), payload.encode())
        return job

    def finish_failed(self, job_id: str, error: str, from_statuses: Iterable[JobStatus] = ACTIVE) -> JobResource:
        def change(job: JobResource) -> dict[str, str]:
            return {
                "status": JobStatus.FAILED.value,
                "finished_at": utcnow().isoformat(),
                "error": error,
                "attempts": _close_attempt(job, "failed", error),
            }

        return self._transition(job_id, from_statuses, change)

    def requeue_after_crash(self, job_id: str, reason: str) -> JobResource:
        """running -> queued when rq is about to retry a job whose work-horse died."""

        def change(job: JobResource) -> dict[str, str]:
            return {
                "status": JobStatus.QUEUED.value,
                "attempts": _close_attempt(job, "crashed", reason),
                "progress": Progress(stage="queued", message="retrying after a worker crash").model_dump_json(),
            }

        return self._transition(job_id, [JobStatus.RUNNING], change)

    def cancel(self, job_id: str) -> tuple[JobResource, JobStatus]:
        """queued|running -> canceled; returns the record and the status it had before."""
        before: list[JobStatus] = []

        def change(job: JobResource) -> dict[str, str]:
            before[:] = [job.status]
            return {
                "status": JobStatus.CANCELED.value,
                "finished_at": utcnow().isoformat(),
                "attempts": _close_attempt(job, "canceled"),
            }

        job = self._transition(job_id, ACTIVE, change)
        return job, before[0]

    def retry(self, job_id: str) -> JobResource:
        """failed|canceled -> queued, re-enqueued in the same MULTI. Raises TransitionRefused otherwise."""
        started = rq_adapter.started_entries(self.queue, job_id)

        def change(job: JobResource) -> dict[str, str]:
            return {
                "status": JobStatus.QUEUED.value,
                "finished_at": "",
                "error": "",
                "progress": Progress(stage="queued", message="retried by request").model_dump_json(),
            }

        def extra(pipe: Pipeline) -> None:
            rq_adapter.drop_bookkeeping(pipe, self.queue, job_id, started)
            self.enqueue(job_id, pipeline=pipe)

        return self._transition(job_id, RETRYABLE, change, extra=extra)

    def requeue_abandoned(self, job_id: str, dead_worker: str, reason: str) -> JobResource:
        """running on `dead_worker` -> queued (or failed, when its retries are used up), atomically.

        Refused (TransitionRefused) when the job is no longer running on that worker: someone else
        (another reaper, the worker itself, a cancel) already moved it.
        """
        started = rq_adapter.started_entries(self.queue, job_id)
        requeued: list[bool] = []

        def change(job: JobResource) -> dict[str, str]:
            if job.worker != dead_worker:
                raise TransitionRefused(job_id, job.status)
            unplanned = sum(1 for a in job.attempts if a.outcome in UNPLANNED) + 1
            if unplanned > self.settings.job_retries:
                requeued[:] = [False]
                return {
                    "status": JobStatus.FAILED.value,
                    "finished_at": utcnow().isoformat(),
                    "error": f"{reason}; gave up after {unplanned} unplanned ends",
                    "attempts": _close_attempt(job, "abandoned", reason),
                }
            requeued[:] = [True]
            return {
                "status": JobStatus.QUEUED.value,
                "attempts": _close_attempt(job, "abandoned", reason),
                "progress": Progress(stage="queued", message="retrying: its worker died").model_dump_json(),
            }

        def extra(pipe: Pipeline) -> None:
            rq_adapter.drop_bookkeeping(pipe, self.queue, job_id, started)
            if requeued and requeued[0]:
                self.enqueue(job_id, pipeline=pipe)

        return self._transition(job_id, [JobStatus.RUNNING], change, extra=extra)

    # -- webhook deliveries -------------------------------------------------------------------------

    def append_delivery(self, job_id: str, entry: dict[str, Any]) -> None:
        """Add one webhook delivery attempt to the job's `deliveries` (not a status change)."""
        key = self.keys.job(job_id)

        def append(pipe: Pipeline) -> None:
            raw = pipe.hget(key, "deliveries")
            deliveries = json.loads(raw) if raw else []
            deliveries.append(entry)
            pipe.multi()
            pipe.hset(key, "deliveries", json.dumps(deliveries))

        self.redis.transaction(append, key)

    # -- results ------------------------------------------------------------------------------------

    def get_result(self, job_id: str) -> JobResult | None:
        raw = self.redis.get(self.keys.result(job_id))
        if raw is None:
            path = self.result_file(job_id)
            if not path.is_file():
                return None
            raw = path.read_bytes()
        return JobResult.model_validate_json(raw)

    def delete(self, job_id: str) -> None:
        """Remove a job's record, result and per-point state (tests and admin clean-up; the API never deletes)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.job(job_id), self.keys.result(job_id), *self.keys.points(job_id))
            pipe.zrem(self.keys.jobs, job_id)
            pipe.execute()
        self.result_file(job_id).unlink(missing_ok=True)
