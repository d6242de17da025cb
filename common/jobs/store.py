"""Job records, results and the rq queue in Redis: the one place both the API and the workers write.

Torch-free (the API imports it). Layout, every key under `settings.redis_prefix` (`{p}`):

- `{p}:job:{id}`   hash: request, status, progress, created_at, started_at, finished_at, error,
                   attempts, owner, worker, checkpoint_id (JSON or plain strings)
- `{p}:jobs`       sorted set of job ids scored by creation time (newest-first listing)
- `{p}:result:{id}` the JobResult JSON. No TTL, ever: results are the product. A copy is also written
                   atomically to `store_dir/results/{id}.json`, which is read back if Redis lost it.

Every status change goes through `_transition`, a WATCH/MULTI transaction that only applies when the
current status is one of the allowed ones. That is what makes cancel-vs-finish races safe: a worker
finishing a job the user just canceled finds the status `canceled` and writes nothing; a result is
stored in the same MULTI as the `succeeded` status, so nobody ever sees one without the other.

The rq job carries only our job id, serialised with rq's JSONSerializer: whoever can write to Redis
can enqueue data, but never a pickle a worker would execute.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import redis
from redis.client import Pipeline
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from prunebench.config import Settings
from prunebench.contract import Attempt, JobRequest, JobResource, JobResult, JobStatus, Progress
from prunebench.jobs import events as job_events

RUN_JOB = "prunebench.worker.entry.run_job"
"""The rq entry point, named by path: the API never imports the worker package."""

RQ_KEEP_S = 30 * 24 * 3600
"""How long rq keeps its own job bookkeeping. Ours lives in our hash and result keys, without TTL."""

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


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


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def connect(settings: Settings) -> redis.Redis:
    """A Redis client for prunebench and rq (bytes responses: rq needs them undecoded)."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=3,
        socket_timeout=10,
        health_check_interval=30,
        retry_on_timeout=True,
    )


class JobStore:
    """Job records, results and the queue for one deployment (one prefix, one queue)."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.redis = connection
        self.settings = settings
        self.prefix = settings.redis_prefix
        self.queue = Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)

    # -- keys ---------------------------------------------------------------------------------------

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:jobs"

    def result_key(self, job_id: str) -> str:
        return f"{self.prefix}:result:{job_id}"

    def result_file(self, job_id: str) -> Path:
        return self.settings.results_dir / f"{job_id}.json"

    # -- records ------------------------------------------------------------------------------------

    def _decode(self, job_id: str, raw: dict[bytes, bytes]) -> JobResource:
        fields = {k.decode(): v.decode() for k, v in raw.items()}
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
        raw = self.redis.hgetall(self.job_key(job_id))
        if not raw:
            raise JobNotFound(job_id)
        return self._decode(job_id, raw)

    def checkpoint_id(self, job_id: str) -> str | None:
        """The checkpoint id resolved when the job was submitted (the request may name it by name)."""
        return _text(self.redis.hget(self.job_key(job_id), "checkpoint_id"))

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
            pipe.hset(self.job_key(job_id), mapping=record)
            pipe.zadd(self.index_key, {job_id: created.timestamp()})
            job_events.on_created(pipe, self.prefix)
            self.enqueue(job_id, pipeline=pipe)
            pipe.execute()
        return self.get(job_id)

    def enqueue(self, job_id: str, pipeline: Pipeline | None = None) -> None:
        retries = self.settings.job_retries
        self.queue.enqueue(
            RUN_JOB,
            job_id,
            job_id=job_id,
            job_timeout=self.settings.job_timeout_s,
            result_ttl=RQ_KEEP_S,
            failure_ttl=RQ_KEEP_S,
            # rq retries only what escapes run_job: a killed work-horse. Engine errors are caught there.
            retry=Retry(max=retries) if retries > 0 else None,
            description=f"prunebench job {job_id}",
            pipeline=pipeline,
        )

    def list(
        self, status: JobStatus | None = None, owner: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[JobResource], int]:
        """One page of jobs, newest first, and the total matching count.

        Without filters the page comes straight from the sorted set. With a status or owner filter the
        index is scanned in chunks (a few fields per job, pipelined): fine for the thousands of jobs a
        deployment keeps; a per-status index would be the next step beyond that.
        """
        if status is None and owner is None:
            total = int(self.redis.zcard(self.index_key))
            ids = [_text(i) or "" for i in self.redis.zrevrange(self.index_key, offset, offset + limit - 1)]
            return self._many(ids), total
        matching: list[str] = []
        start, chunk = 0, 500
        while True:
            ids = [_text(i) or "" for i in self.redis.zrevrange(self.index_key, start, start + chunk - 1)]
            if not ids:
                break
            with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hmget(self.job_key(job_id), ["status", "owner"])
                rows = pipe.execute()
            for job_id, (st, ow) in zip(ids, rows, strict=True):
                if status is not None and _text(st) != status.value:
                    continue
                if owner is not None and _text(ow) != owner:
                    continue
                matching.append(job_id)
            start += chunk
        return self._many(matching[offset : offset + limit]), len(matching)

    def _many(self, ids: Iterable[str]) -> list[JobResource]:
        ids = list(ids)
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.job_key(job_id))
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
        key = self.job_key(job_id)

        def attempt(pipe: Pipeline) -> None:
            raw = pipe.hgetall(key)
            if not raw:
                raise JobNotFound(job_id)
            current = self._decode(job_id, raw)
            if current.status not in allowed:
                raise TransitionRefused(job_id, current.status)
            fields = change(current)
            pipe.multi()
            pipe.hset(key, mapping=fields)
            # Metrics and owed webhooks commit with the status (prunebench.jobs.events).
            job_events.on_transition(pipe, self.prefix, current, fields)
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
        value = _text(self.redis.hget(self.job_key(job_id), "status"))
        return JobStatus(value) if value else None

    def _close_attempt(self, job: JobResource, outcome: str, error: str | None = None) -> str:
        attempts = list(job.attempts)
        if attempts and attempts[-1].outcome is None:
            attempts[-1] = attempts[-1].model_copy(update={"ended_at": utcnow(), "outcome": outcome, "error": error})
        return json.dumps([a.model_dump(mode="json") for a in attempts])

    def finish_succeeded(self, job_id: str, result: JobResult) -> JobResource:
        """running -> succeeded with its result, in one MULTI. Refused when the job was canceled meanwhile."""
        payload = result.model_dump_json()

        def change(job: JobResource) -> dict[str, str]:
            progress = job.progress.model_copy(update={"stage": "done", "percent": 100.0})
            return {
                "status": JobStatus.SUCCEEDED.value,
                "finished_at": utcnow().isoformat(),
                "progress": progress.model_dump_json(),
                "attempts": self._close_attempt(job, "cached" if result.cached else "succeeded"),
                "cached": "1" if result.cached else "0",
            }

        job = self._transition(
            job_id, [JobStatus.RUNNING], change, extra=lambda pipe: pipe.set(self.result_key(job_id), payload)
        )
        # The file copy follows the commit: a refused transition must not leave a result behind.
        write_atomic(self.result_file(job_id), payload.encode())
        return job

    def finish_failed(self, job_id: str, error: str, from_statuses: Iterable[JobStatus] = ACTIVE) -> JobResource:
        def change(job: JobResource) -> dict[str, str]:
            return {
                "status": JobStatus.FAILED.value,
                "finished_at": utcnow().isoformat(),
                "error": error,
                "attempts": self._close_attempt(job, "failed", error),
            }

        return self._transition(job_id, from_statuses, change)

    def requeue_after_crash(self, job_id: str, reason: str) -> JobResource:
        """running -> queued when rq is about to retry a job whose work-horse died."""

        def change(job: JobResource) -> dict[str, str]:
            return {
                "status": JobStatus.QUEUED.value,
                "attempts": self._close_attempt(job, "crashed", reason),
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
                "attempts": self._close_attempt(job, "canceled"),
            }

        job = self._transition(job_id, ACTIVE, change)
        return job, before[0]

    # -- results ------------------------------------------------------------------------------------

    def get_result(self, job_id: str) -> JobResult | None:
        raw = self.redis.get(self.result_key(job_id))
        if raw is None:
            path = self.result_file(job_id)
            if not path.is_file():
                return None
            raw = path.read_bytes()
        return JobResult.model_validate_json(raw)

    def delete(self, job_id: str) -> None:
        """Remove a job's record and result (tests and admin clean-up; the API never deletes)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.job_key(job_id), self.result_key(job_id))
            pipe.zrem(self.index_key, job_id)
            pipe.execute()
        self.result_file(job_id).unlink(missing_ok=True)
