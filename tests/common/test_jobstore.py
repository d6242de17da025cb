"""Job record transitions against a real Redis (session redis-server, a unique prefix per test)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from prunebench.checkpoints.store import BUILTIN_CHECKPOINT, CheckpointStore
from prunebench.config import Settings
from prunebench.contract import Environment, JobRequest, JobResult, JobStatus, Progress
from prunebench.datasets.catalog import builtin_datasets
from prunebench.jobs.rq_adapter import RUN_JOB, job_key
from prunebench.jobs.store import JobNotFound, JobStore, TransitionRefused, connect

REQUEST = JobRequest(checkpoint="yolov5n_shapes.pt", dataset="shapes-val", sparsities=[0.2, 0.3])


@pytest.fixture
def store(settings: Settings) -> Iterator[JobStore]:
    connection = connect(settings)
    yield JobStore(connection, settings)
    connection.close()


def result_for(job_id: str) -> JobResult:
    info, _ = CheckpointStore(Settings()).resolve(BUILTIN_CHECKPOINT.name)

    return JobResult(
        job_id=job_id,
        checkpoint=info,
        dataset=builtin_datasets()["shapes-val"].info(),
        settings={},
        environment=Environment(device="cpu", device_name="cpu", torch="x", cuda=None, worker="w", prunebench="0"),
        runs=[],
        created_at=datetime.now(UTC),
    )


def test_create_stores_a_queued_record_and_a_json_rq_job(store: JobStore) -> None:
    job = store.create(REQUEST, "local", checkpoint_id="abc")
    assert job.status == JobStatus.QUEUED and job.owner == "local" and job.request == REQUEST
    assert store.checkpoint_id(job.id) == "abc"
    rq_job = Job.fetch(job.id, connection=store.redis, serializer=JSONSerializer)
    assert rq_job.func_name == RUN_JOB and list(rq_job.args) == [job.id]
    assert rq_job.timeout == store.settings.job_timeout_s and rq_job.retries_left == 1
    # The payload is JSON, not a pickle: nothing in Redis can make a worker run code.
    raw = store.redis.hget(job_key(job.id), "data")
    assert raw is not None and not raw.startswith(b"\x80")
    assert store.queue.job_ids == [job.id]


def test_lifecycle_running_progress_succeeded(store: JobStore) -> None:
    job = store.create(REQUEST, "local")
    running = store.mark_running(job.id, "w1")
    assert running.status == JobStatus.RUNNING and running.worker == "w1" and running.started_at
    assert [a.number for a in running.attempts] == [1]
    assert store.update_progress(job.id, Progress(stage="evaluating", images_done=3, images_total=10))
    assert store.get(job.id).progress.images_done == 3
    assert store.get_result(job.id) is None

    done = store.finish_succeeded(job.id, result_for(job.id))
    assert done.status == JobStatus.SUCCEEDED and done.finished_at and done.attempts[-1].outcome == "succeeded"
    assert done.result_url == f"/v1/jobs/{job.id}/result"
    assert store.get_result(job.id) == result_for(job.id).model_copy(
        update={"created_at": store.get_result(job.id).created_at}
    )  # type: ignore[union-attr]
    assert store.redis.ttl(store.keys.result(job.id)) == -1
    assert store.result_file(job.id).is_file()
    # Terminal: no more progress, no cancel, no second finish.
    assert not store.update_progress(job.id, Progress(stage="evaluating"))
    with pytest.raises(TransitionRefused):
        store.cancel(job.id)
    with pytest.raises(TransitionRefused):
        store.finish_failed(job.id, "late")


def test_cancel_wins_over_a_late_finish(store: JobStore) -> None:
    job = store.create(REQUEST, "local")
    store.mark_running(job.id, "w1")
    canceled, before = store.cancel(job.id)
    assert before == JobStatus.RUNNING and canceled.status == JobStatus.CANCELED
    assert canceled.attempts[-1].outcome == "canceled"
    with pytest.raises(TransitionRefused) as refused:
        store.finish_succeeded(job.id, result_for(job.id))
    assert refused.value.current == JobStatus.CANCELED
    # Nothing half-stored: no result in Redis, none on disk.
    assert store.redis.get(store.keys.result(job.id)) is None
    assert not store.result_file(job.id).exists()
    assert store.get_result(job.id) is None
    assert not store.update_progress(job.id, Progress(stage="evaluating"))
    with pytest.raises(TransitionRefused):
        store.mark_running(job.id, "w2")


def test_cancel_queued_and_failed(store: JobStore) -> None:
    queued = store.create(REQUEST, "local")
    job, before = store.cancel(queued.id)
    assert before == JobStatus.QUEUED and job.status == JobStatus.CANCELED and job.attempts == []

    other = store.create(REQUEST, "local")
    store.mark_running(other.id, "w1")
    failed = store.finish_failed(other.id, "ValueError: boom")
    assert failed.status == JobStatus.FAILED and failed.error == "ValueError: boom"
    assert failed.attempts[-1].outcome == "failed" and failed.attempts[-1].error == "ValueError: boom"


def test_crash_retry_opens_a_new_attempt(store: JobStore) -> None:
    job = store.create(REQUEST, "local")
    store.mark_running(job.id, "w1")
    requeued = store.requeue_after_crash(job.id, "WorkerCrashed: signal 9")
    assert requeued.status == JobStatus.QUEUED and requeued.attempts[0].outcome == "crashed"
    again = store.mark_running(job.id, "w2")
    assert [(a.number, a.worker, a.outcome) for a in again.attempts] == [(1, "w1", "crashed"), (2, "w2", None)]
    # A horse that died without the handler running: the next attempt closes the open one.
    third = store.mark_running(job.id, "w3")
    assert [a.outcome for a in third.attempts] == ["crashed", "crashed", None]


def test_list_is_newest_first_paginated_and_filtered(store: JobStore) -> None:
    ids = [store.create(REQUEST, "alice" if i % 2 else "bob").id for i in range(5)]
    store.mark_running(ids[0], "w")
    page, total = store.list(limit=2, offset=1)
    assert total == 5 and [j.id for j in page] == [ids[3], ids[2]]
    running, total = store.list(status=JobStatus.RUNNING)
    assert total == 1 and running[0].id == ids[0]
    alices, total = store.list(owner="alice", limit=1)
    assert total == 2 and alices[0].id == ids[3]


def test_unknown_job(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        store.get("nope")
    with pytest.raises(JobNotFound):
        store.cancel("nope")
    assert store.status("nope") is None


def test_result_file_is_read_back_when_redis_lost_it(store: JobStore) -> None:
    job = store.create(REQUEST, "local")
    store.mark_running(job.id, "w1")
    store.finish_succeeded(job.id, result_for(job.id))
    store.redis.delete(store.keys.result(job.id))
    assert store.get_result(job.id) is not None


def test_redis_down_is_a_connection_error(tmp_path: object) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(redis.exceptions.ConnectionError):
        JobStore(connect(settings), settings).get("x")
