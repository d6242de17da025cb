"""Every Redis key prunebench writes, built here and nowhere else.

One deployment is one prefix (`PRUNEBENCH_REDIS_PREFIX`, `{p}` below); every key of ours starts with
`{p}:`, so a deployment (or a test, or the demo) can be removed with one `SCAN MATCH {p}:*`. rq's own
keys (`rq:queue:...`, `rq:job:...`, registries, workers) are rq's: prunebench.jobs.rq_adapter names
those, from rq's own constants.

| key                               | type   | written by                                  | TTL        |
|-----------------------------------|--------|---------------------------------------------|------------|
| `{p}:job:{id}`                    | hash   | job store (record; status transitions)      | none       |
| `{p}:jobs`                        | zset   | job store (ids by creation time)            | none       |
| `{p}:result:{id}`                 | string | job store (JobResult JSON)                  | none       |
| `{p}:cache:{sha256}`              | string | result cache (cache key -> job id)          | none       |
| `{p}:idem:{owner_h}:{key_h}`      | string | Idempotency-Key claims                      | 24 h       |
| `{p}:metrics:jobs`                | hash   | job events (outcome counters)               | none       |
| `{p}:metrics:duration:{status}`   | hash   | job events (run-time histogram)             | none       |
| `{p}:metrics:stage_seconds`       | hash   | workers (seconds per pipeline stage)        | none       |
| `{p}:webhooks:due`                | zset   | job events (owed callbacks, by due time)    | none       |
| `{p}:webhook:{id}`                | string | webhook deliverer (the exact body bytes)    | until sent |
| `{p}:webhook-attempts:{id}`       | string | webhook deliverer (attempt counter)         | until sent |
| `{p}:job:{id}:point:{field}`      | hash   | fan-out (per-point claims, progress, runs)  | none       |
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """The key names of one deployment, `prefix` being its PRUNEBENCH_REDIS_PREFIX."""

    prefix: str

    @property
    def pattern(self) -> str:
        """A SCAN MATCH pattern covering every key of this deployment."""
        return f"{self.prefix}:*"

    # -- jobs and results -----------------------------------------------------------------------

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def jobs(self) -> str:
        """Sorted set of job ids scored by creation time (seconds since the epoch)."""
        return f"{self.prefix}:jobs"

    def result(self, job_id: str) -> str:
        return f"{self.prefix}:result:{job_id}"

    def cache(self, cache_key: str) -> str:
        return f"{self.prefix}:cache:{cache_key}"

    def idempotency(self, owner: str, key: str) -> str:
        """Hashed, so a client's key (possibly sensitive, any characters) never becomes a key verbatim."""
        owner_h = hashlib.sha256(owner.encode()).hexdigest()[:32]
        key_h = hashlib.sha256(key.encode()).hexdigest()
        return f"{self.prefix}:idem:{owner_h}:{key_h}"

    # -- metrics --------------------------------------------------------------------------------

    @property
    def metrics_jobs(self) -> str:
        return f"{self.prefix}:metrics:jobs"

    def metrics_duration(self, status: str) -> str:
        return f"{self.prefix}:metrics:duration:{status}"

    @property
    def metrics_stages(self) -> str:
        return f"{self.prefix}:metrics:stage_seconds"

    # -- webhooks -------------------------------------------------------------------------------

    @property
    def webhooks_due(self) -> str:
        """Sorted set of job ids owing a webhook delivery, scored by when the next attempt is due."""
        return f"{self.prefix}:webhooks:due"

    def webhook_body(self, job_id: str) -> str:
        """The exact bytes of the owed callback, built at its first attempt and re-sent by retries."""
        return f"{self.prefix}:webhook:{job_id}"

    def webhook_attempts(self, job_id: str) -> str:
        """Attempts made for the owed callback (its bound is per terminal event, not per job)."""
        return f"{self.prefix}:webhook-attempts:{job_id}"

    # -- fan-out ----------------------------------------------------------------------------------

    POINT_FIELDS = ("claims", "progress", "results", "errors", "starts", "ran_by")

    def point(self, job_id: str, field: str) -> str:
        """A hash of a fanned-out job, index -> value (prunebench.jobs.points says what each holds)."""
        if field not in self.POINT_FIELDS:
            raise KeyError(field)
        return f"{self.prefix}:job:{job_id}:point:{field}"

    def points(self, job_id: str) -> list[str]:
        return [self.point(job_id, field) for field in self.POINT_FIELDS]
