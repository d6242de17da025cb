"""What crosses Redis between the API and the workers is JSON: a planted pickle never runs."""

from __future__ import annotations

import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from prunebench.config import Settings
from prunebench.contract import JobRequest
from prunebench.jobs import rq_adapter
from prunebench.jobs.store import JobStore, connect
from prunebench.worker.runner import build_worker


def test_api_queue_and_worker_all_use_the_json_serializer(settings: Settings) -> None:
    connection = connect(settings)
    try:
        store = JobStore(connection, settings)
        worker = build_worker(settings, name=f"{settings.queue_name}-wire")
        for serializer in (store.queue.serializer, worker.serializer, *(q.serializer for q in worker.queues)):
            assert serializer is JSONSerializer or isinstance(serializer, JSONSerializer), serializer
    finally:
        connection.close()


class _Boom:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_payload_planted_in_redis_is_refused_not_run(settings: Settings, tmp_path: Path) -> None:
    connection = connect(settings)
    try:
        store = JobStore(connection, settings)
        job = store.create(JobRequest(checkpoint="yolov5n_shapes.pt", dataset="shapes-val", sparsity=0.2), "alice")
        marker = tmp_path / "pwned"
        # Someone with write access to Redis swaps the job's payload for a pickle.
        connection.hset(rq_adapter.job_key(job.id), "data", zlib.compress(pickle.dumps(_Boom(marker))))
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do; running it would not
            Job.fetch(job.id, connection=connection, serializer=JSONSerializer).args  # noqa: B018
        assert not marker.exists()
    finally:
        connection.close()
