"""Per-point state of a fanned-out sweep: who runs which point, its progress, its result or its error.

A sweep's points run as rq child jobs on any free worker (``prunebench.worker.entry``): the job's own
work-horse (the parent) and the children all *claim* points here, run what they claimed, and store
each point's RunResult; the parent assembles the job's result once every point has one. Torch-free.

Keys, under the deployment prefix ``{p}`` and the job id (removed with the job; none expires):

- ``{p}:job:{id}:point:claims``    hash: index -> JSON {worker, at}; HSETNX makes a claim exclusive
- ``{p}:job:{id}:point:progress``  hash: index -> JSON {fraction, at, worker}; ``at`` is the heartbeat
- ``{p}:job:{id}:point:results``   hash: index -> RunResult JSON (kept across a job retry)
- ``{p}:job:{id}:point:errors``    hash: index -> one-line error of a deterministic failure
- ``{p}:job:{id}:point:starts``    hash: index -> how many times the point was started (attempts)
- ``{p}:job:{id}:point:ran_by``    hash: index -> the worker that stored its result

A point whose claimant stops heart-beating (its work-horse died) is released by the parent and run
again; a retried job (``POST /v1/jobs/{id}/retry``) keeps its stored point results and reruns only the
points that have none.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis

from prunebench.infra.redis_values import text
from prunebench.jobs.keys import Keys


@dataclass(frozen=True)
class PointProgress:
    fraction: float  # 0..1 of this point
    at: float  # unix time of the last report
    worker: str


class PointStore:
    """The points of one job."""

    def __init__(self, connection: redis.Redis, prefix: str, job_id: str) -> None:
        self.redis = connection
        self.keys = Keys(prefix)
        self.job_id = job_id

    def key(self, field: str) -> str:
        return self.keys.point(self.job_id, field)

    # -- claims --------------------------------------------------------------------------------------

    def claim(self, index: int, worker: str) -> bool:
        """Take point ``index`` for ``worker`` unless someone has it or it is done; True when taken."""
        if self.redis.hexists(self.key("results"), index):
            return False
        claimed = bool(self.redis.hsetnx(self.key("claims"), index, json.dumps({"worker": worker, "at": time.time()})))
        if claimed:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(self.key("starts"), index, 1)
                pipe.hset(
                    self.key("progress"), index, json.dumps({"fraction": 0.0, "at": time.time(), "worker": worker})
                )
                pipe.execute()
        return claimed

    def release(self, index: int) -> None:
        """Give a point back (its runner stopped or died): anyone may claim it again."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.key("claims"), index)
            pipe.hdel(self.key("progress"), index)
            pipe.execute()

    def claimed(self) -> set[int]:
        return {int(k) for k in self.redis.hkeys(self.key("claims"))}

    # -- progress --------------------------------------------------------------------------------------

    def report(self, index: int, fraction: float, worker: str) -> None:
        record = {"fraction": min(max(fraction, 0.0), 1.0), "at": time.time(), "worker": worker}
        self.redis.hset(self.key("progress"), index, json.dumps(record))

    def progress(self) -> dict[int, PointProgress]:
        raw = self.redis.hgetall(self.key("progress"))
        return {int(k): PointProgress(**json.loads(v)) for k, v in raw.items()}

    def stale(self, silent_s: float, now: float | None = None) -> list[int]:
        """Claimed, unfinished points whose runner has not reported for ``silent_s`` seconds."""
        now = time.time() if now is None else now
        done = self.done()
        return [k for k, p in self.progress().items() if k not in done and now - p.at > silent_s]

    # -- outcomes ------------------------------------------------------------------------------------------

    def save_result(self, index: int, run_json: str, worker: str) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key("results"), index, run_json)
            pipe.hset(self.key("ran_by"), index, worker)
            pipe.hdel(self.key("claims"), index)
            pipe.hdel(self.key("progress"), index)
            pipe.execute()

    def fail(self, index: int, error: str) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key("errors"), index, error)
            pipe.hdel(self.key("claims"), index)
            pipe.hdel(self.key("progress"), index)
            pipe.execute()

    def done(self) -> set[int]:
        return {int(k) for k in self.redis.hkeys(self.key("results"))}

    def results(self) -> dict[int, str]:
        return {int(k): text(v) for k, v in self.redis.hgetall(self.key("results")).items()}

    def errors(self) -> dict[int, str]:
        return {int(k): text(v) for k, v in self.redis.hgetall(self.key("errors")).items()}

    def ran_by(self) -> dict[int, str]:
        return {int(k): text(v) for k, v in self.redis.hgetall(self.key("ran_by")).items()}

    def starts(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.redis.hgetall(self.key("starts")).items()}

    def reset_for_attempt(self) -> None:
        """A new attempt of the job: stored results stay, claims and errors of the last attempt go."""
        self.redis.delete(self.key("claims"), self.key("progress"), self.key("errors"))

    def delete(self) -> None:
        self.redis.delete(*self.keys.points(self.job_id))
