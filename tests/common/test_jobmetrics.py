"""Job metrics in Redis: counted once per transition, exported by the API's collector (real Redis)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from prunebench.config import Settings
from prunebench.contract import JobRequest, Progress
from prunebench.jobs import metrics as jobmetrics
from prunebench.jobs.keys import Keys
from prunebench.jobs.store import JobStore, TransitionRefused, connect, utcnow
from prunebench.service.app import create_app
from prunebench.service.metrics import RedisCollector

REQUEST = JobRequest(checkpoint="c", dataset="d", sparsity=0.2)


def _samples(collector: RedisCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for family in collector.collect() for s in family.samples
    }


def test_outcomes_are_counted_once_each(settings: Settings) -> None:
    connection = connect(settings)
    store = JobStore(connection, settings)
    collector = RedisCollector(connection, settings)
    queued = store.create(REQUEST, "o")
    running = store.create(REQUEST, "o")
    store.mark_running(running.id, "w")
    store.cancel(queued.id)
    store.finish_failed(running.id, "Boom")
    with pytest.raises(TransitionRefused):
        store.cancel(running.id)  # refused: already failed, so nothing more is counted

    found = _samples(collector)
    assert found[("prunebench_redis_up", ())] == 1.0
    assert found[("prunebench_jobs_submitted_total", ())] == 2
    assert found[("prunebench_jobs_finished_total", (("status", "canceled"),))] == 1
    assert found[("prunebench_jobs_finished_total", (("status", "failed"),))] == 1
    assert found[("prunebench_jobs_finished_total", (("status", "succeeded"),))] == 0
    # Only the job that ran has a run time; the one canceled while queued does not.
    assert found[("prunebench_job_duration_seconds_count", (("status", "failed"),))] == 1
    assert found[("prunebench_job_duration_seconds_count", (("status", "canceled"),))] == 0
    # No worker here, and the API route (not JobStore) drops canceled jobs from rq: both still queued.
    assert found[("prunebench_queue_depth", ())] == 2
    assert found[("prunebench_workers", ())] == 0
    connection.close()


def test_duration_buckets_are_cumulative(settings: Settings) -> None:
    connection = connect(settings)
    finished = utcnow()
    with connection.pipeline() as pipe:
        jobmetrics.record_outcome(
            pipe, Keys(settings.redis_prefix), "succeeded", finished - timedelta(seconds=40), finished
        )
        pipe.execute()
    raw = connection.hgetall(Keys(settings.redis_prefix).metrics_duration("succeeded"))
    fields = {k.decode(): float(v) for k, v in raw.items()}
    assert "le:30" not in fields and fields["le:60"] == 1 and fields["le:21600"] == 1 and fields["le:+Inf"] == 1
    assert abs(fields["sum"] - 40) < 1e-6
    connection.close()


def test_stage_clock_adds_seconds_per_stage(settings: Settings) -> None:
    connection = connect(settings)

    class Inner:
        def __init__(self) -> None:
            self.seen: list[str] = []

        def progress(self, progress: Progress) -> None:
            self.seen.append(progress.stage)

        def should_stop(self) -> bool:
            return False

    inner = Inner()
    clock = jobmetrics.StageClock(inner, connection, Keys(settings.redis_prefix))
    clock.progress(Progress(stage="loading"))
    time.sleep(0.05)
    clock.progress(Progress(stage="evaluating"))
    clock.progress(Progress(stage="evaluating", images_done=1))
    time.sleep(0.02)
    clock.close()
    stages = {k.decode(): float(v) for k, v in connection.hgetall(Keys(settings.redis_prefix).metrics_stages).items()}
    assert set(stages) == {"loading", "evaluating"}
    assert stages["loading"] >= 0.05 and stages["evaluating"] >= 0.02
    assert inner.seen == ["loading", "evaluating", "evaluating"] and not clock.should_stop()
    connection.close()


def test_metrics_endpoint_and_cors(settings: Settings) -> None:
    configured = settings.model_copy(update={"cors_origins": "https://dash.example.com"})
    with TestClient(create_app(configured)) as client:
        client.get("/healthz")
        client.get("/v1/jobs/unknown-id")
        response = client.get("/metrics")
        assert response.status_code == 200
        names = {s.name for f in text_string_to_metric_families(response.text) for s in f.samples}
        assert {"prunebench_http_requests_total", "prunebench_queue_depth", "prunebench_workers"} <= names
        assert 'route="/v1/jobs/{job_id}"' in response.text and "unknown-id" not in response.text

        preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "Authorization"}
        allowed = client.options("/v1/jobs", headers={"Origin": "https://dash.example.com", **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://dash.example.com"
        denied = client.options("/v1/jobs", headers={"Origin": "https://other.example.com", **preflight})
        assert denied.status_code == 400 and "access-control-allow-origin" not in denied.headers

    with TestClient(create_app(settings)) as client:  # no origins configured: no CORS at all
        plain = client.get("/healthz", headers={"Origin": "https://dash.example.com"})
        assert "access-control-allow-origin" not in plain.headers
