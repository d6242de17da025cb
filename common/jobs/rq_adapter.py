"""Everything prunebench does with rq beyond `Worker.work()`: the one module that knows rq's insides.

Routes, the job store, the reaper, `/readyz`, `/metrics`, the demo's clean-up and the tests call these
functions instead of reaching for rq's registries, key names, commands or worker records, so an rq
upgrade that moves them is fixed here. Torch-free (the API imports it).

rq's data is bookkeeping: our job record (prunebench.jobs.store) is the truth about a job's status.
The rq job carries only our job id, serialised with rq's JSONSerializer: whoever can write to Redis
can enqueue data, but never a pickle a worker would execute.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

import redis
from redis.client import Pipeline
from rq import Queue, Retry, Worker, get_current_job
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import CanceledJobRegistry, FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from prunebench.infra.identity import worker_name
from prunebench.infra.redis_values import text

log = logging.getLogger("prunebench.jobs.rq")

RUN_JOB = "prunebench.worker.entry.run_job"
"""The rq entry point, named by path: the API never imports the worker package."""
RUN_POINT = "prunebench.worker.entry.run_point"
"""The rq entry point of one sweep point of a fanned-out job (prunebench.worker.fanout)."""

RQ_KEEP_S = 30 * 24 * 3600
"""How long rq keeps its own job bookkeeping. Ours lives in our hash and result keys, without TTL."""

SERIALIZER = JSONSerializer


# -- names ------------------------------------------------------------------------------------------


def queue_key(queue_name: str) -> str:
    """rq's list of job ids waiting in `queue_name`."""
    return Queue.redis_queue_namespace_prefix + queue_name


def job_key(job_id: str) -> str:
    """rq's hash for one job (its `data` field holds the serialised call)."""
    return Job.redis_job_namespace_prefix + job_id


def worker_key(worker_name: str) -> str:
    """rq's hash for one worker (birth, heartbeat, current job)."""
    return Worker.redis_worker_namespace_prefix + worker_name


def current_worker_name() -> str:
    """The worker running the current rq job (inside a work-horse), else this process's `host:pid`."""
    job = get_current_job()
    if job is not None and job.worker_name:
        return str(job.worker_name)
    return worker_name()


# -- the queue --------------------------------------------------------------------------------------


def make_queue(connection: redis.Redis, queue_name: str) -> Queue:
    return Queue(queue_name, connection=connection, serializer=SERIALIZER)


def enqueue(queue: Queue, job_id: str, *, timeout_s: int, retries: int, pipeline: Pipeline | None = None) -> None:
    """Put `run_job(job_id)` on the queue, as rq job `job_id`; inside `pipeline`'s MULTI when given.

    rq retries (at most `retries` times) only what escapes run_job: a killed work-horse. Engine errors
    are caught there and recorded as `failed`.
    """
    queue.enqueue(
        RUN_JOB,
        job_id,
        job_id=job_id,
        job_timeout=timeout_s,
        result_ttl=RQ_KEEP_S,
        failure_ttl=RQ_KEEP_S,
        retry=Retry(max=retries) if retries > 0 else None,
        description=f"prunebench job {job_id}",
        pipeline=pipeline,
    )


def enqueue_point(queue: Queue, job_id: str, index: int, *, timeout_s: int) -> None:
    """Put `run_point(job_id, index)` on the queue as its own rq job (id `{job_id}-point{index}-{hex}`).

    Not retried by rq: a child whose horse dies leaves its point claimed but silent, and the job's
    parent releases it to run again (prunebench.jobs.points).
    """
    queue.enqueue(
        RUN_POINT,
        job_id,
        index,
        job_id=f"{job_id}-point{index}-{uuid.uuid4().hex[:8]}",
        job_timeout=timeout_s,
        result_ttl=RQ_KEEP_S,
        failure_ttl=RQ_KEEP_S,
        description=f"prunebench job {job_id} point {index}",
    )


def waiting_ids(queue: Queue) -> list[str]:
    """Job ids waiting in the queue, oldest first."""
    return list(queue.job_ids)


def started_entries(queue: Queue, job_id: str) -> list[str]:
    """`job_id:execution_id` members of rq's started registry for this job."""
    key = StartedJobRegistry(queue=queue).key
    entries = [text(m) for m in queue.connection.zrange(key, 0, -1)]
    return [m for m in entries if m.split(":", 1)[0] == job_id]


def started_job_ids(queue: Queue) -> set[str]:
    """Ids of the jobs rq's started registry holds: those a worker took and has not finished."""
    key = StartedJobRegistry(queue=queue).key
    return {text(m).split(":", 1)[0] for m in queue.connection.zrange(key, 0, -1)}


def record_started(queue: Queue, job_id: str, execution_id: str, expires_at: float = 9e12) -> None:
    """Enter a job in rq's started registry as rq's worker does when it starts it (tests use this)."""
    queue.connection.zadd(StartedJobRegistry(queue=queue).key, {f"{job_id}:{execution_id}": expires_at})


def drop_bookkeeping(pipe: Pipeline, queue: Queue, job_id: str, started: list[str]) -> None:
    """Remove the job from rq's queue and registries, so neither rq's clean-up nor a stale entry acts on it.

    `started` is what `started_entries` read before the transaction (a MULTI cannot read).
    """
    # A job canceled while queued may still sit in rq's list (the worker would skip it): never twice.
    pipe.lrem(queue.key, 0, job_id)
    for registry in (FailedJobRegistry, CanceledJobRegistry):
        pipe.zrem(registry(queue=queue).key, job_id)
    if started:
        pipe.zrem(StartedJobRegistry(queue=queue).key, *started)


def stop_job(connection: redis.Redis, job_id: str) -> bool:
    """Ask the worker running `job_id` to kill its work-horse (rq's stop-job command, via pub/sub).

    False when no worker runs it (between dequeue and start, or already ended): the engine's
    should_stop() check covers that case.
    """
    try:
        send_stop_job_command(connection, job_id, serializer=SERIALIZER)
    except (InvalidJobOperation, NoSuchJobError) as exc:
        log.info("job %s: stop command not sent: %s", job_id, exc)
        return False
    return True


def drop_from_queue(connection: redis.Redis, job_id: str) -> bool:
    """Take a waiting job off rq's queue (rq's cancel). False when it was already dequeued."""
    try:
        Job.fetch(job_id, connection=connection, serializer=SERIALIZER).cancel()
    except (InvalidJobOperation, NoSuchJobError) as exc:
        # Already dequeued: run_job reads our record first and returns at once for a canceled job.
        log.info("job %s: not removed from the rq queue: %s", job_id, exc)
        return False
    return True


def forget_queue(connection: redis.Redis, queue_name: str, job_ids: list[str]) -> None:
    """Delete rq's keys for a queue and its jobs (the demo leaves a shared Redis as it found it)."""
    patterns = [f"rq:*{queue_name}*", *(f"rq:*{job_id}*" for job_id in job_ids)]
    for pattern in patterns:
        keys = list(connection.scan_iter(match=pattern, count=500))
        if keys:
            connection.delete(*keys)
    connection.srem(Queue.redis_queues_keys, queue_key(queue_name))


def known_queue_keys(connection: redis.Redis) -> set[str]:
    """rq's set of queues it knows (the keys of their lists)."""
    return {text(m) for m in connection.smembers(Queue.redis_queues_keys)}


# -- workers ----------------------------------------------------------------------------------------


def live_workers(connection: redis.Redis, queue_name: str) -> int:
    """rq workers registered (and not expired) that consume `queue_name`."""
    return sum(1 for w in Worker.all(connection=connection) if queue_name in w.queue_names())


def _rq_time(raw: bytes | str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        # rq writes '%Y-%m-%dT%H:%M:%S.%fZ' in UTC.
        return datetime.fromisoformat(text(raw).replace("Z", "+00:00"))
    except ValueError:
        return None


def worker_last_seen(connection: redis.Redis, worker_name: str) -> datetime | None:
    """The worker's last heartbeat, or None when its rq record is gone (expired or never there)."""
    return _rq_time(connection.hget(worker_key(worker_name), "last_heartbeat"))


@dataclass(frozen=True)
class WorkerRecord:
    """What rq's record of a registered (not yet dead) worker says about the process behind it."""

    name: str
    hostname: str | None
    pid: int | None
    last_heartbeat: datetime | None


def registered_worker(connection: redis.Redis, worker_name: str) -> WorkerRecord | None:
    """rq's record of a worker named `worker_name` that has not registered its death, or None.

    rq refuses to start a worker under a name whose record is in this state ("There exists an active
    worker named ... already") until the record expires, minutes after a SIGKILLed worker's last
    heartbeat.
    """
    fields = {text(k): text(v) for k, v in connection.hgetall(worker_key(worker_name)).items()}
    if not fields or "death" in fields:
        return None
    pid = fields.get("pid", "")
    return WorkerRecord(
        worker_name, fields.get("hostname") or None, int(pid) if pid.isdigit() else None,
        _rq_time(fields.get("last_heartbeat")),
    )  # fmt: skip


def retire_worker(connection: redis.Redis, worker_name: str) -> None:
    """Register the death of a worker that died without doing so (rq's own `register_death`).

    Takes it out of rq's worker sets and marks its record dead, so a new worker may take the name.
    Only for a worker known to be dead: its jobs are the caller's to requeue.
    """
    stale = Worker.find_by_key(worker_key(worker_name), connection=connection, serializer=SERIALIZER)
    if stale is not None:
        stale.register_death()


def queue_counts(queue: Queue) -> tuple[int, int, int]:
    """(waiting, running, live workers) of one queue, for /metrics."""
    return queue.count, queue.started_job_registry.count, Worker.count(queue=queue)
