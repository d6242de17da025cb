"""What happens, besides the status write, when a job is created or reaches a terminal status.

JobStore calls these inside the MULTI that writes the status, so the side effects commit with it or
not at all: the outcome counters of `/metrics` (prunebench.jobs.metrics) and, for a job submitted with
a `callback_url`, the webhook delivery it owes (prunebench.service.webhooks delivers it later). Every
terminal transition -- a worker finishing or failing a job, a worker parent recording a crashed
work-horse, an API replica canceling -- goes through JobStore._transition, so none is missed.
"""

from __future__ import annotations

import time
from datetime import datetime

from redis.client import Pipeline

from prunebench.contract import JobResource, JobStatus
from prunebench.jobs import metrics as jobmetrics
from prunebench.jobs.keys import Keys


def on_created(pipe: Pipeline, keys: Keys) -> None:
    jobmetrics.record_submitted(pipe, keys)


def on_transition(pipe: Pipeline, keys: Keys, before: JobResource, fields: dict[str, str]) -> None:
    """Side effects of a transition from `before` that writes `fields`; only terminal ones have any."""
    status = fields.get("status")
    if status is None or status == before.status.value or not JobStatus(status).is_terminal:
        return
    finished = datetime.fromisoformat(fields["finished_at"]) if fields.get("finished_at") else None
    started = before.started_at if before.status == JobStatus.RUNNING else None
    if finished is not None:
        jobmetrics.record_outcome(pipe, keys, status, started, finished)
    if before.request.callback_url:
        # A job retried after an earlier end (POST /v1/jobs/{id}/retry) ends again: a new event, so
        # a fresh body and attempt budget, due now (superseding a retry of the old one still owed).
        pipe.delete(keys.webhook_body(before.id), keys.webhook_attempts(before.id))
        pipe.zadd(keys.webhooks_due, {before.id: time.time()})
