"""A busy worker rides out a Redis outage, and a SIGKILLed worker restarted under its name starts at once.

Its own AOF redis-server on its own port (stopped and restarted here) and its own API and one worker
with a fixed PRUNEBENCH_WORKER_NAME. The reaper is made slow on purpose (abandoned after 60 s), so
what these tests see is the worker's own recovery, not another worker's reaper.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prunebench.infra.redis_server import EmbeddedRedis, find_redis_binary
from tests.support.paths import SMALL_JOB
from tests.support.stack import Service, children_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_redis_binary() is None, reason="needs a redis-server binary"),
]

NAME = "outage-worker"
OUTAGE_S = 10.0
# Long enough to still be running when Redis goes away mid-evaluation.
JOB: dict[str, Any] = {**SMALL_JOB, "max_images": 48, "sparsities": [0.2, 0.4], "include_dense": False}
JOB["use_cache"] = False


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Service, EmbeddedRedis]]:
    server = EmbeddedRedis(workdir=tmp_path / "redis", appendonly=True)
    server.start()
    env = {
        "PRUNEBENCH_WORKER_NAME": NAME,
        "PRUNEBENCH_HEARTBEAT_S": "1",
        "PRUNEBENCH_ABANDONED_AFTER_S": "60",
        "PRUNEBENCH_WORKER_REDIS_OUTAGE_S": "60",
    }
    service = Service(server.url, tmp_path, env)
    try:
        service.start_api()
        service.start_worker()
        yield service, server
    finally:
        with contextlib.suppress(Exception):
            service.stop()
        server.stop()


def wait_running(service: Service, job_id: str, attempts: int = 1, timeout_s: float = 90) -> dict[str, Any]:
    """Until the job's `attempts`-th attempt is evaluating (past loading: the horse is busy)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = service.job(job_id)
        if job["status"] == "running" and len(job["attempts"]) == attempts and job["progress"]["stage"] != "loading":
            return job
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never ran attempt {attempts}: {service.job(job_id)}\n{service.tail()}")


def test_a_busy_worker_keeps_its_job_through_a_10_s_redis_outage_and_stores_the_result(
    stack: tuple[Service, EmbeddedRedis],
) -> None:
    service, server = stack
    job = service.submit(**JOB)
    wait_running(service, job["id"])
    assert server.proc is not None
    server.proc.kill()  # SIGKILL: an outage, not a clean shutdown (the AOF has the job)
    server.proc.wait(timeout=10)
    server.proc = None
    time.sleep(OUTAGE_S)
    server.start()  # the same port and folder
    done = service.wait(job["id"], timeout_s=180)
    assert service.worker is not None and service.worker.poll() is None, service.tail()
    assert done["status"] == "succeeded", done
    assert [(a["worker"], a["outcome"]) for a in done["attempts"]] == [(NAME, "succeeded")]
    result = service.http.get(f"/v1/jobs/{job['id']}/result")
    assert result.status_code == 200, result.text
    assert [r["sparsity"] for r in result.json()["runs"]] == pytest.approx([0.2, 0.4], abs=0.02)


def test_a_sigkilled_worker_restarted_under_its_name_starts_at_once_and_reruns_the_job(
    stack: tuple[Service, EmbeddedRedis],
) -> None:
    service, _ = stack
    job = service.submit(**JOB)
    wait_running(service, job["id"])
    assert service.worker is not None
    orphans = children_of(service.worker.pid)  # the horse outlives its SIGKILLed parent
    service.children.kill("worker")
    restarted_at = time.monotonic()
    try:
        # rq itself refuses the name until the dead worker's record expires (65 s after its last heartbeat).
        service._spawn("worker", "worker")
        wait_running(service, job["id"], attempts=2, timeout_s=60)
        took_s = time.monotonic() - restarted_at
        done = service.wait(job["id"], timeout_s=180)
    finally:
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert service.worker.poll() is None, service.tail()
    assert took_s < 45, took_s
    assert done["status"] == "succeeded", done
    outcomes = [(a["worker"], a["outcome"]) for a in done["attempts"]]
    assert outcomes == [(NAME, "abandoned"), (NAME, "succeeded")], outcomes
    assert "restarted" in (done["attempts"][0].get("error") or ""), done["attempts"][0]
