"""Job metrics kept in Redis, so that every process's observations add up in one place.

Why Redis and not prometheus-client's in-process metrics: a job's outcome is decided in whichever
process makes the terminal transition (a worker's work-horse, a worker parent after a crash, any API
replica for a cancel), and work-horses are forked per job and exit right after. In-process counters
would die with them. So they write here, inside the same MULTI as the status change (an outcome is
counted exactly once, even when a transition is retried on a WATCH conflict), and the API's
`/metrics` Collector (prunebench.service.metrics) reads these keys at scrape time.

Keys (named in prunebench.jobs.keys); none has a TTL (counters must be monotonic):

- `Keys.metrics_jobs`              hash: submitted / succeeded / failed / canceled -> count
- `Keys.metrics_duration(status)`  hash: `le:{bound}` cumulative bucket counts, `le:+Inf`, `count`,
                                   `sum` (seconds from started_at to finished_at of jobs that ran)
- `Keys.metrics_stages`            hash: stage -> seconds workers spent in it (summed over jobs)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from datetime import datetime

import redis
from redis.client import Pipeline

from prunebench.contract import JOB_STATUSES, TERMINAL_STATUSES, Progress
from prunebench.jobs.keys import Keys

OUTCOMES: tuple[str, ...] = tuple(s for s in JOB_STATUSES if s in TERMINAL_STATUSES)
"""The terminal statuses, in the contract's order: succeeded, failed, canceled."""

DURATION_BUCKETS_S: Sequence[float] = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 21600)
"""Job run time buckets: demo jobs take seconds, full COCO sweeps hours (the timeout is 6 h)."""


def bucket_field(bound: float) -> str:
    return f"le:{bound:g}"


def record_submitted(pipe: Pipeline | redis.Redis, keys: Keys) -> None:
    pipe.hincrby(keys.metrics_jobs, "submitted", 1)


def record_outcome(
    pipe: Pipeline | redis.Redis, keys: Keys, status: str, started_at: datetime | None, finished_at: datetime
) -> None:
    """Count a terminal status and, for a job that ran, observe its run time in the histogram."""
    pipe.hincrby(keys.metrics_jobs, status, 1)
    if started_at is None:
        return  # canceled while queued: it never ran, so it has no run time
    seconds = max(0.0, (finished_at - started_at).total_seconds())
    key = keys.metrics_duration(status)
    for bound in DURATION_BUCKETS_S:
        if seconds <= bound:
            pipe.hincrby(key, bucket_field(bound), 1)
    pipe.hincrby(key, "le:+Inf", 1)
    pipe.hincrby(key, "count", 1)
    pipe.hincrbyfloat(key, "sum", seconds)


class StageClock:
    """Wraps a worker's Reporter and adds the wall time of each pipeline stage to Redis.

    A stage lasts from the first progress report naming it to the first naming another (or `close`).
    Seconds are written when a stage ends: one HINCRBYFLOAT per stage change, never per batch.
    """

    def __init__(self, inner: object, connection: redis.Redis, keys: Keys) -> None:
        self.inner = inner
        self.redis = connection
        self.keys = keys
        self._stage: str | None = None
        self._since = 0.0

    def progress(self, progress: Progress) -> None:
        if progress.stage != self._stage:
            self._end_stage()
            self._stage, self._since = progress.stage, time.monotonic()
        self.inner.progress(progress)  # type: ignore[attr-defined]

    def should_stop(self) -> bool:
        return bool(self.inner.should_stop())  # type: ignore[attr-defined]

    def close(self) -> None:
        self._end_stage()
        self._stage = None

    def _end_stage(self) -> None:
        if self._stage is None:
            return
        # A lost metric must never fail a job.
        with contextlib.suppress(redis.exceptions.RedisError):
            self.redis.hincrbyfloat(self.keys.metrics_stages, self._stage, time.monotonic() - self._since)
