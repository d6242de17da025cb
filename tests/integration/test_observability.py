"""/metrics, structured logs, CORS and webhooks against the real stack (the `service` fixture, tests/support/stack.py).

The session stack is started with CORS origins, a callback allow-list (127.0.0.1:port), a webhook secret
and a short webhook back-off (see conftest); the receiver is a real http.server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from prunebench.config import Settings
from prunebench.contract import JobRequest
from prunebench.infra.redis_server import free_port
from prunebench.jobs.store import JobStore, connect
from prunebench.service.webhooks import SIGNATURE_HEADER, verify
from tests.support.paths import ROOT, SMALL_JOB
from tests.support.stack import Service, drop_prefix, unique_prefix
from tests.support.webhook_receiver import allowed_port, webhook_receiver

pytestmark = pytest.mark.slow

TINY: dict[str, Any] = {**SMALL_JOB, "max_images": 8, "sparsities": [0.2], "use_cache": False}
LONG: dict[str, Any] = {**TINY, "img_size": 640, "max_images": None, "sparsities": [0.1, 0.3, 0.5, 0.7, 0.9]}


def samples(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = service.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


# -- /metrics ---------------------------------------------------------------------------------------


def test_metrics_count_jobs_stages_and_requests(service: Service) -> None:
    before = samples(service)
    assert value(before, "prunebench_redis_up") == 1.0
    assert value(before, "prunebench_workers") >= 1
    job = service.submit(**TINY)
    assert service.wait(job["id"])["status"] == "succeeded"
    service.job(job["id"])

    after = samples(service)
    assert value(after, "prunebench_jobs_submitted_total") == value(before, "prunebench_jobs_submitted_total") + 1
    succeeded = ("prunebench_jobs_finished_total", {"status": "succeeded"})
    assert value(after, succeeded[0], **succeeded[1]) == value(before, succeeded[0], **succeeded[1]) + 1
    runs = value(after, "prunebench_job_duration_seconds_count", status="succeeded")
    assert runs == value(before, "prunebench_job_duration_seconds_count", status="succeeded") + 1
    assert value(after, "prunebench_job_duration_seconds_bucket", status="succeeded", le="+Inf") == runs
    assert value(after, "prunebench_job_duration_seconds_sum", status="succeeded") > 0
    assert value(after, "prunebench_stage_seconds_total", stage="evaluating") > value(
        before, "prunebench_stage_seconds_total", stage="evaluating"
    )
    assert value(after, "prunebench_queue_depth") >= 0
    # Route templates, never concrete ids, label the HTTP metrics.
    by_template = value(after, "prunebench_http_requests_total", method="GET", route="/v1/jobs/{job_id}", status="200")
    assert by_template >= 2
    assert not any(job["id"] in str(labels) for _, labels in after)
    assert value(after, "prunebench_http_request_duration_seconds_count", method="POST", route="/v1/jobs") >= 1


def test_metrics_need_no_key_and_count_a_canceled_job(service: Service) -> None:
    before = samples(service)
    job = service.submit(**LONG)
    assert httpx.get(f"{service.url}/metrics").status_code == 200  # no Authorization header
    assert service.http.delete(f"/v1/jobs/{job['id']}").status_code in (200, 202)
    after = samples(service)
    canceled = value(after, "prunebench_jobs_finished_total", status="canceled")
    assert canceled == value(before, "prunebench_jobs_finished_total", status="canceled") + 1


# -- CORS -------------------------------------------------------------------------------------------


def test_cors_preflight_allowed_and_denied(service: Service) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = service.http.options("/v1/jobs", headers={"Origin": "https://dash.example.com", **preflight})
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == "https://dash.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

    denied = service.http.options("/v1/jobs", headers={"Origin": "https://evil.example.net", **preflight})
    assert denied.status_code == 400
    assert "access-control-allow-origin" not in denied.headers

    simple = service.http.get("/healthz", headers={"Origin": "https://dash.example.com"})
    assert simple.headers["access-control-allow-origin"] == "https://dash.example.com"
    assert (
        "access-control-allow-origin" not in service.http.get("/healthz", headers={"Origin": "https://x.test"}).headers
    )


# -- webhooks ---------------------------------------------------------------------------------------


def test_webhook_delivered_signed_after_a_retry(service: Service) -> None:
    with webhook_receiver([500], port=allowed_port(service.env["PRUNEBENCH_CALLBACK_HOSTS"])) as receiver:
        job = service.submit(**TINY, callback_url=receiver.url)
        final = service.wait(job["id"])
        assert final["status"] == "succeeded"
        first, second = receiver.wait_for(2, timeout_s=60)
    assert first.answered == 500 and second.answered == 200
    assert first.body == second.body
    secret = service.env["PRUNEBENCH_WEBHOOK_SECRET"]
    assert verify(secret, second.body, second.headers[SIGNATURE_HEADER])
    sent = json.loads(second.body)
    assert sent["id"] == job["id"] and sent["status"] == "succeeded"
    assert sent["result_url"] == f"/v1/jobs/{job['id']}/result"
    assert sent["request"]["callback_url"] == receiver.url

    def recorded() -> list[dict[str, Any]]:
        return list(service.job(job["id"])["deliveries"])

    deadline = time.monotonic() + 10
    while len(recorded()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [(d["attempt"], d["status_code"], d["delivered"]) for d in recorded()] == [(1, 500, False), (2, 200, True)]


def test_webhook_on_cancel_through_the_api(service: Service) -> None:
    with webhook_receiver(port=allowed_port(service.env["PRUNEBENCH_CALLBACK_HOSTS"])) as receiver:
        job = service.submit(**LONG, callback_url=receiver.url)
        assert service.http.delete(f"/v1/jobs/{job['id']}").status_code in (200, 202)
        (hit,) = receiver.wait_for(1, timeout_s=30)
    assert json.loads(hit.body)["status"] == "canceled"
    assert hit.headers["X-Prunebench-Event"] == "job.canceled"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://redis:6379/",
        "ftp://127.0.0.1/x",
        "http://u:p@127.0.0.1/",
        "http://127.0.0.1:6379/",  # another port of the allowed host
    ],
)
def test_disallowed_callback_is_422(service: Service, url: str) -> None:
    response = service.http.post("/v1/jobs", json={**TINY, "callback_url": url})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


# -- structured logs --------------------------------------------------------------------------------


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    for entry in parsed:
        assert {"ts", "level", "logger", "msg"} <= set(entry)
    return parsed


def test_api_logs_are_json_lines_with_the_job_id(service: Service, tmp_path: Path) -> None:
    job = service.submit(**LONG)
    service.http.delete(f"/v1/jobs/{job['id']}")
    port = free_port()
    env = {**service.env, "PRUNEBENCH_LOG_JSON": "1"}
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        api = subprocess.Popen(
            [sys.executable, "-m", "prunebench.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and api.poll() is None, log_path.read_text()
            time.sleep(0.2)
        auth = {"Authorization": f"Bearer {service.api_key}"}
        assert httpx.get(f"http://127.0.0.1:{port}/v1/jobs/{job['id']}", headers=auth).status_code == 200
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=30)
    entries = _json_lines(log_path.read_text())
    tagged = [e for e in entries if e.get("job_id") == job["id"]]
    assert tagged, entries
    assert any(e["logger"] == "uvicorn.access" for e in tagged)


def test_worker_logs_are_json_lines_with_the_job_id(redis_url: str, tmp_path: Path) -> None:
    prefix = unique_prefix()
    settings = Settings(redis_url=redis_url, redis_prefix=prefix, queue_name=prefix, store_dir=tmp_path / "store")
    store = JobStore(connect(settings), settings)
    job = store.create(JobRequest.model_validate({**TINY, "max_images": 4}), "local")
    env = {
        **os.environ,
        "PRUNEBENCH_REDIS_URL": redis_url,
        "PRUNEBENCH_REDIS_PREFIX": prefix,
        "PRUNEBENCH_QUEUE_NAME": prefix,
        "PRUNEBENCH_STORE_DIR": str(tmp_path / "store"),
        "PRUNEBENCH_LOG_JSON": "1",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "prunebench.cli", "worker", "--burst"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert store.get(job.id).status.value == "succeeded"
        assert done.stdout.strip() == ""  # logs go to stderr only
        entries = _json_lines(done.stderr)
        mine = [e for e in entries if e.get("job_id") == job.id]
        assert any(e["logger"] == "prunebench.worker" and "succeeded" in e["msg"] for e in mine), entries
        assert any(e["logger"].startswith("rq") for e in entries)
    finally:
        store.redis.close()
        drop_prefix(redis_url, prefix)
