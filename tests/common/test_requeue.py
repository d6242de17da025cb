"""Retry and abandoned-job requeue against a real Redis and rq's real registries.

The end-to-end proof (a SIGKILLed worker process) is tests/integration/test_faults.py; these pin the
transitions: which statuses move, what the attempt history says, that rq's queue and registries agree.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rq.worker import Worker

from prunebench.config import Settings
from prunebench.contract import JobRequest, JobStatus
from prunebench.jobs import rq_adapter
from prunebench.jobs.requeue import reap_abandoned
from prunebench.jobs.store import JobStore, TransitionRefused, connect

REQUEST = JobRequest(checkpoint="yolov5n_shapes.pt", dataset="shapes-val", sparsity=0.2)


@pytest.fixture
def store(settings: Settings) -> Iterator[JobStore]:
    connection = connect(settings)
    yield JobStore(connection, settings)  # job_retries=1
    connection.close()


def take(store: JobStore, job_id: str, worker: str) -> None:
    """What a worker does when it starts a job: dequeue it (rq), record it in the started registry, mark it."""
    assert store.queue.pop_job_id() == job_id
    rq_adapter.record_started(store.queue, job_id, f"exec-{worker}")
    store.mark_running(job_id, worker)


def started_ids(store: JobStore) -> set[str]:
    return rq_adapter.started_job_ids(store.queue)


def test_a_job_of_a_vanished_worker_is_requeued_then_failed_when_retries_run_out(store: JobStore) -> None:
    job = store.create(REQUEST, "alice")
    take(store, job.id, "ghost-1")
    assert reap_abandoned(store, abandoned_after_s=0) == [job.id]

    requeued = store.get(job.id)
    assert requeued.status == JobStatus.QUEUED and requeued.finished_at is None
    assert [a.outcome for a in requeued.attempts] == ["abandoned"]
    assert "WorkerLost" in (requeued.attempts[0].error or "") and requeued.attempts[0].ended_at
    assert store.queue.job_ids == [job.id] and job.id not in started_ids(store)
    assert reap_abandoned(store, abandoned_after_s=0) == []  # a queued job is nobody's to reap

    take(store, job.id, "ghost-2")
    assert reap_abandoned(store, abandoned_after_s=0) == [job.id]
    failed = store.get(job.id)
    assert failed.status == JobStatus.FAILED and "WorkerLost" in (failed.error or "")
    assert [a.outcome for a in failed.attempts] == ["abandoned", "abandoned"]
    assert store.queue.job_ids == []


def test_a_heart_beating_worker_keeps_its_job(store: JobStore) -> None:
    worker = Worker([store.queue], name="alive-1", connection=store.redis)
    worker.register_birth()
    try:
        worker.heartbeat()
        job = store.create(REQUEST, "alice")
        take(store, job.id, "alive-1")
        assert reap_abandoned(store, abandoned_after_s=30) == []
        assert store.get(job.id).status == JobStatus.RUNNING
        # Only the worker that ran the attempt can be declared dead for it.
        with pytest.raises(TransitionRefused):
            store.requeue_abandoned(job.id, "some-other-worker", "test")
    finally:
        worker.register_death()


def test_retry_requeues_failed_and_canceled_jobs_only(store: JobStore) -> None:
    job = store.create(REQUEST, "alice")
    with pytest.raises(TransitionRefused):
        store.retry(job.id)  # queued
    take(store, job.id, "w1")
    with pytest.raises(TransitionRefused):
        store.retry(job.id)  # running
    store.finish_failed(job.id, "ValueError: boom")

    again = store.retry(job.id)
    assert again.status == JobStatus.QUEUED and again.error is None and again.finished_at is None
    assert [a.outcome for a in again.attempts] == ["failed"]
    assert store.queue.job_ids == [job.id] and job.id not in started_ids(store)

    store.cancel(job.id)
    assert store.retry(job.id).status == JobStatus.QUEUED
    assert store.queue.job_ids.count(job.id) == 1


def test_silence_must_span_several_heartbeats() -> None:
    # Otherwise a live but briefly slow worker would have its job taken away and run twice.
    with pytest.raises(ValueError, match="twice"):
        Settings(heartbeat_s=10, abandoned_after_s=15)
    assert Settings(heartbeat_s=1, abandoned_after_s=4).abandoned_after_s == 4
