"""Fan-out over real workers: a sweep's points run on every free worker, cancel stops them all, a killed
point runs again alone, and the assembled result equals an in-process sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from prunebench.contract import JobRequest
from prunebench.datasets.catalog import builtin_datasets
from prunebench.jobs.points import PointStore
from prunebench.worker.engine.pipeline import run_local
from tests.support.paths import DEMO_CHECKPOINT, SMALL_JOB
from tests.support.stack import Service, children_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find work-horses"),
]

# 48 images a point: long enough that the second worker's child claims a point before the parent is done.
SWEEP: dict[str, Any] = {**SMALL_JOB, "max_images": 48, "sparsities": [0.2, 0.4, 0.6], "use_cache": False}
# Long enough per point (all 120 images at 320) that both workers are busy when the test acts.
LONG: dict[str, Any] = {**SWEEP, "max_images": None, "img_size": 320, "batch_size": 16}
SILENT_S = 4.0


class TwoWorkers(Service):
    """The API and two worker processes on one Redis (conftest's), each worker named by its pid."""

    def __init__(self, redis_url: str, root: Path) -> None:
        super().__init__(
            redis_url,
            root,
            {"PRUNEBENCH_HEARTBEAT_S": "1", "PRUNEBENCH_ABANDONED_AFTER_S": str(SILENT_S)},
        )
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_workers(self, count: int) -> None:
        for k in range(count):
            self.workers.append(self._spawn(f"worker{k}", "worker"))
        self.wait_ready(workers=count)

    def points(self, job_id: str) -> PointStore:
        return PointStore(redis.Redis.from_url(self.redis_url), self.prefix, job_id)

    def worker_pid(self, worker_name: str) -> int:
        """rq names our workers host:pid:device."""
        return int(worker_name.split(":")[1])

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        super().stop()


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoWorkers]:
    running = TwoWorkers(redis_url, tmp_path_factory.mktemp("fanout"))
    try:
        running.start_api()
        running.start_workers(2)
        yield running
    finally:
        running.stop()


def _wait_running_points(stack: TwoWorkers, job_id: str, count: int, timeout_s: float = 120) -> dict[int, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = {k: p for k, p in stack.points(job_id).progress().items() if p.fraction > 0}
        if len(running) >= count:
            return running
        time.sleep(0.1)
    raise AssertionError(f"{count} points never ran at once: {stack.job(job_id)}\n{stack.tail()}")


def test_points_run_on_both_workers_and_the_result_equals_one_process(stack: TwoWorkers) -> None:
    job = stack.wait(stack.submit(**SWEEP)["id"])
    assert job["status"] == "succeeded", job
    result = stack.http.get(f"/v1/jobs/{job['id']}/result").json()
    assert [r["sparsity_target"] for r in result["runs"]] == [0.0, 0.2, 0.4, 0.6]
    points = stack.points(job["id"])
    assert points.starts() == {0: 1, 1: 1, 2: 1, 3: 1}
    assert len(set(points.ran_by().values())) == 2, points.ran_by()  # both workers ran points

    request = JobRequest(**{k: v for k, v in SWEEP.items() if k != "use_cache"})
    local = run_local(request, DEMO_CHECKPOINT, builtin_datasets()["shapes-val"])
    for ours, alone in zip(result["runs"], local.runs, strict=True):
        assert ours["metrics"] == alone.metrics.model_dump()
        timed = ("speed_ratio",)  # wall-clock: differs run to run
        assert {k: v for k, v in ours["deltas"].items() if k not in timed} == alone.deltas.model_dump(
            exclude=set(timed)
        )
        assert ours["size_bytes"] == alone.size_bytes and ours["gflops"] == alone.gflops


def test_cancel_stops_the_points_on_every_worker(stack: TwoWorkers) -> None:
    job_id = stack.submit(**LONG)["id"]
    running = _wait_running_points(stack, job_id, 2)
    busy = {stack.worker_pid(p.worker) for p in running.values()}
    assert len(busy) == 2
    assert stack.http.delete(f"/v1/jobs/{job_id}").status_code in (200, 202)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(children_of(pid) for pid in busy):
        time.sleep(0.2)
    assert not any(children_of(pid) for pid in busy), "a work-horse kept running a canceled job's point"
    assert stack.job(job_id)["status"] == "canceled"
    assert stack.http.get(f"/v1/jobs/{job_id}/result").status_code == 410
    assert len(stack.points(job_id).done()) < 4


def test_a_killed_point_runs_again_alone(stack: TwoWorkers) -> None:
    job_id = stack.submit(**LONG)["id"]
    running = _wait_running_points(stack, job_id, 2)
    parent = stack.job(job_id)["worker"]
    child_point, child = next((k, p) for k, p in running.items() if p.worker != parent)
    horses = children_of(stack.worker_pid(child.worker))
    assert len(horses) == 1, horses
    os.kill(horses[0], signal.SIGKILL)  # the point's runner dies mid-evaluation

    job = stack.wait(job_id, timeout_s=600)
    assert job["status"] == "succeeded", job
    starts = stack.points(job_id).starts()
    assert starts[child_point] == 2, starts  # that point ran again ...
    assert all(n == 1 for k, n in starts.items() if k != child_point), starts  # ... and only that one
    result = stack.http.get(f"/v1/jobs/{job_id}/result").json()
    assert [r["sparsity_target"] for r in result["runs"]] == [0.0, 0.2, 0.4, 0.6]
    assert all(r["images"] == 120 for r in result["runs"])
