"""Faults, for real: SIGKILLed workers, a corrupt checkpoint, Redis restarts, SIGTERM mid-job.

This module runs its own stack (API + two workers) over its own redis-server with AOF on, so it can
restart Redis without disturbing other tests. Workers heart-beat every second and a worker silent for
4 s is declared dead (PRUNEBENCH_HEARTBEAT_S / PRUNEBENCH_ABANDONED_AFTER_S), so detection is fast.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prunebench.contract import JobResult
from prunebench.infra.redis_server import EmbeddedRedis, find_redis_binary
from tests.support.paths import DEMO_DIR, SMALL_JOB
from tests.support.stack import TERMINAL, Service, children_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_redis_binary() is None, reason="needs a redis-server binary"),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find work-horses"),
]

PROBLEM = "application/problem+json"
TINY: dict[str, Any] = {**SMALL_JOB, "max_images": 8, "sparsity": 0.2, "include_dense": False, "use_cache": False}
# Long enough to be caught mid-evaluation, short enough to run twice within the test's budget.
MEDIUM: dict[str, Any] = {**TINY, "max_images": 48, "sparsity": None, "sparsities": [0.2, 0.4]}
MEDIUM = {k: v for k, v in MEDIUM.items() if v is not None}
# Runs long enough that a worker can be declared dead while its horse still works on it.
LONG: dict[str, Any] = {**MEDIUM, "max_images": None, "img_size": 640, "sparsities": [0.2, 0.4, 0.6]}
ABANDONED_AFTER_S = 4.0


class FaultStack(Service):
    """conftest's Service over its own AOF Redis, with any number of worker processes."""

    def __init__(self, server: EmbeddedRedis, root: Path, models_dir: Path) -> None:
        super().__init__(
            server.url,
            root,
            {
                "PRUNEBENCH_MODELS_DIR": str(models_dir),
                "PRUNEBENCH_HEARTBEAT_S": "1",
                "PRUNEBENCH_ABANDONED_AFTER_S": str(ABANDONED_AFTER_S),
                "PRUNEBENCH_REAPER_INTERVAL_S": "0.25",
                "PRUNEBENCH_JOB_RETRIES": "1",
            },
        )
        self.server = server
        self.workers: list[subprocess.Popen[bytes]] = []
        self._spawned = 0

    def live_workers(self) -> list[subprocess.Popen[bytes]]:
        self.workers = [w for w in self.workers if w.poll() is None]
        return self.workers

    def ensure_workers(self, count: int) -> None:
        while len(self.live_workers()) < count:
            self._spawned += 1
            self.workers.append(self._spawn(f"worker{self._spawned}", "worker"))
        self.wait_workers(count)

    def wait_workers(self, count: int, timeout_s: float = 60) -> None:
        """Until /readyz counts `count` live workers (dead ones drop out once their rq record expires)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            response = self.http.get("/readyz")
            if response.status_code == 200 and response.json()["workers"] >= count:
                return
            time.sleep(0.2)
        raise AssertionError(f"{count} workers not ready:\n{self.tail()}")

    def stop_workers(self) -> None:
        for proc in self.live_workers():
            proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            proc.wait(timeout=30)
        self.workers = []

    def stop(self) -> None:
        for proc in self.live_workers():
            proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        super().stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    root = tmp_path_factory.mktemp("faults")
    models = root / "models"
    models.mkdir()
    server = EmbeddedRedis(workdir=root / "redis", appendonly=True)
    server.start()
    running = FaultStack(server, root, models)
    try:
        running.start_api()
        running.ensure_workers(2)
        yield running
    finally:
        running.stop()
        server.stop()


def wait_stage(stack: Service, job_id: str, stage: str = "evaluating", timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = stack.job(job_id)
        if job["status"] == "running" and job["progress"]["stage"] == stage:
            return job
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {stage}: {stack.job(job_id)}\n{stack.tail()}")


def horse_of(stack: FaultStack, worker_name: str) -> tuple[subprocess.Popen[bytes], int]:
    """The worker process whose rq name is `worker_name` (host:pid:device), and its work-horse's pid."""
    pid = int(worker_name.split(":")[1])
    worker = next(w for w in stack.live_workers() if w.pid == pid)
    horses = children_of(pid)
    assert len(horses) == 1, horses
    return worker, horses[0]


def test_killed_worker_is_detected_in_seconds_and_the_job_finishes_elsewhere(stack: FaultStack) -> None:
    stack.ensure_workers(2)
    job = stack.submit(**MEDIUM)
    running = wait_stage(stack, job["id"])
    worker, horse = horse_of(stack, running["worker"])

    # The whole worker dies at once, as when its host or container goes: parent first, so no parent is
    # left to notice its horse's death; rq's horse has its own process group and dies separately.
    killed_at = time.monotonic()
    worker.send_signal(signal.SIGKILL)
    os.kill(horse, signal.SIGKILL)
    worker.wait(timeout=10)

    seen: list[str] = []
    detected_s: float | None = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        current = stack.job(job["id"])
        if not seen or seen[-1] != current["status"]:
            seen.append(current["status"])
        if detected_s is None and current["attempts"] and current["attempts"][0]["outcome"] is not None:
            detected_s = time.monotonic() - killed_at
        if current["status"] in TERMINAL:
            break
        time.sleep(0.1)

    print(f"\nkilled worker detected after {detected_s:.1f} s; statuses seen: {seen}")
    assert current["status"] == "succeeded", (current, stack.tail())
    assert detected_s is not None and detected_s < ABANDONED_AFTER_S + 5
    # Never terminal before the end, never back to queued without an attempt saying why.
    assert seen[-1] == "succeeded" and all(s in ("running", "queued") for s in seen[:-1]), seen
    first, second = current["attempts"]
    assert first["outcome"] == "abandoned" and first["worker"] == running["worker"]
    assert "WorkerLost" in first["error"] and first["ended_at"]
    assert second["outcome"] == "succeeded" and second["worker"] != running["worker"]

    result = JobResult.model_validate(stack.http.get(f"/v1/jobs/{job['id']}/result").json())
    assert [r.sparsity_target for r in result.runs] == [0.2, 0.4] and all(r.images == 48 for r in result.runs)
    stack.ensure_workers(2)


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_horse_orphaned_by_its_dead_worker_stops_once_its_job_is_requeued(stack: FaultStack) -> None:
    stack.ensure_workers(2)
    job = stack.submit(**LONG)
    running = wait_stage(stack, job["id"])
    worker, horse = horse_of(stack, running["worker"])
    worker.send_signal(signal.SIGKILL)  # only the parent: rq's horse has its own process group and lives on
    worker.wait(timeout=10)
    assert _alive(horse)

    deadline = time.monotonic() + ABANDONED_AFTER_S + 10
    while time.monotonic() < deadline and not stack.job(job["id"])["attempts"][0]["outcome"]:
        time.sleep(0.1)
    assert stack.job(job["id"])["attempts"][0]["outcome"] == "abandoned"
    # Its job now belongs to a new attempt: the orphan stops at its next check (every half second)
    # instead of writing progress or a result over the new attempt's.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(horse):
        time.sleep(0.1)
    assert not _alive(horse), "the orphaned work-horse kept running"

    current = stack.job(job["id"])
    assert current["status"] in ("queued", "running") and current["attempts"][0]["worker"] == running["worker"]
    assert all(a["worker"] != running["worker"] for a in current["attempts"][1:])
    assert stack.http.delete(f"/v1/jobs/{job['id']}").status_code in (200, 202)
    stack.ensure_workers(2)


def _corrupt_copy(src: Path, dst: Path) -> None:
    """The demo checkpoint with its largest tensor's bytes missing: metadata intact, weights unreadable."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        infos = zin.infolist()
        biggest = max((i for i in infos if "/data/" in i.filename), key=lambda i: i.file_size)
        for info in infos:
            name = info.filename + ".missing" if info is biggest else info.filename
            zout.writestr(zipfile.ZipInfo(name, info.date_time), zin.read(info), compress_type=info.compress_type)


def test_corrupt_mounted_checkpoint_is_refused_at_submission_with_its_reason(stack: FaultStack) -> None:
    """The inspector matches every declared tensor to its archive entry, so a checkpoint whose weights are
    missing is caught before any job is queued (a job that fails in the worker is failed once, not retried:
    tests/integration/test_service.py::test_deterministic_failure_is_failed_once_not_retried)."""
    stack.ensure_workers(1)
    models_dir = Path(stack.env["PRUNEBENCH_MODELS_DIR"])
    _corrupt_copy(DEMO_DIR / "yolov5n_shapes.pt", models_dir / "corrupt.pt")
    listed = {c["name"]: c for c in stack.http.get("/v1/checkpoints", params={"limit": 200}).json()["items"]}
    assert listed["corrupt.pt"]["usable"] is False and "data/" in listed["corrupt.pt"]["problem"]
    jobs_before = stack.http.get("/v1/jobs").json()["total"]
    refused = stack.http.post("/v1/jobs", json={**TINY, "checkpoint": "corrupt.pt"})
    assert refused.status_code == 404, refused.text
    assert "data/" in refused.json()["detail"] and "\n" not in refused.json()["detail"]
    assert stack.http.get("/v1/jobs").json()["total"] == jobs_before  # nothing queued, nothing to retry
    # The good checkpoint beside it is unaffected.
    assert stack.wait(stack.submit(**TINY)["id"], timeout_s=120)["status"] == "succeeded"


def test_sigterm_lets_the_running_job_finish_and_then_the_worker_exits(stack: FaultStack) -> None:
    stack.ensure_workers(1)
    # Occupy every worker but one with nothing: with one live worker we know which one takes the job.
    for extra in stack.live_workers()[1:]:
        extra.send_signal(signal.SIGTERM)
        extra.wait(timeout=30)
    stack.live_workers()
    job = stack.submit(**{**TINY, "max_images": 24})
    running = wait_stage(stack, job["id"])
    worker, _ = horse_of(stack, running["worker"])
    worker.send_signal(signal.SIGTERM)  # warm shutdown: finish the current job, take no other
    assert worker.wait(timeout=60) == 0
    done = stack.job(job["id"])
    assert done["status"] == "succeeded", (done, stack.tail())
    assert [a["outcome"] for a in done["attempts"]] == ["succeeded"]
    result = JobResult.model_validate(stack.http.get(f"/v1/jobs/{job['id']}/result").json())
    assert result.runs and result.runs[0].images == 24
    assert not list((stack.root / "store" / "results").glob(".*"))  # no half-written temporary file
    stack.ensure_workers(1)


def _wait_api(stack: FaultStack, status: int, timeout_s: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        response = stack.http.get("/v1/jobs", params={"limit": 1})
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_redis_restart_keeps_jobs_and_results_and_everyone_reconnects(stack: FaultStack) -> None:
    stack.ensure_workers(1)
    done = stack.wait(stack.submit(**TINY)["id"], timeout_s=60)
    assert done["status"] == "succeeded"
    stack.stop_workers()
    accepted = stack.submit(**TINY)  # accepted while no worker runs: it must survive the restart queued
    time.sleep(1.5)  # appendfsync everysec: what is older than a second is on disk

    stack.server.proc.send_signal(signal.SIGKILL)  # no goodbye: only what the AOF already holds survives
    stack.server.proc.wait(timeout=10)
    try:
        down = _wait_api(stack, 503)
        assert down.status_code == 503 and down.headers["content-type"].startswith(PROBLEM)
        assert down.headers.get("retry-after")
        posted = stack.http.post("/v1/jobs", json=TINY)
        assert posted.status_code == 503 and posted.headers["content-type"].startswith(PROBLEM)
        assert stack.http.get("/readyz").status_code == 503
        assert stack.http.get("/healthz").status_code == 200
    finally:
        stack.server.proc = None
        stack.server.start()  # same port, same folder, replays the AOF

    assert _wait_api(stack, 200).status_code == 200  # the API reconnects by itself
    assert stack.job(done["id"])["status"] == "succeeded"
    assert stack.http.get(f"/v1/jobs/{done['id']}/result").status_code == 200
    assert stack.job(accepted["id"])["status"] == "queued"

    stack.ensure_workers(1)
    assert stack.wait(accepted["id"], timeout_s=60)["status"] == "succeeded"

    # A worker alive through a Redis outage reconnects and keeps working.
    survivor = stack.live_workers()[0]
    stack.server.restart()
    assert _wait_api(stack, 200).status_code == 200
    after = stack.wait(stack.submit(**TINY)["id"], timeout_s=90)
    assert after["status"] == "succeeded" and survivor.poll() is None
    assert after["attempts"][-1]["worker"].split(":")[1] == str(survivor.pid)


def test_password_protected_redis_via_url(tmp_path: Path) -> None:
    """PRUNEBENCH_REDIS_URL with a password reaches a requirepass Redis; without it, the API says 503."""
    with EmbeddedRedis(workdir=tmp_path / "redis", password="s3cret-pass") as server:
        assert ":s3cret-pass@" in server.url
        stack = Service(server.url, tmp_path)
        try:
            stack.start_api()
            stack.start_worker()
            job = stack.wait(stack.submit(**TINY)["id"], timeout_s=60)
            assert job["status"] == "succeeded", job
        finally:
            stack.stop()
        # The wrong password: the API starts, but is not ready, and never echoes the password back.
        wrong = Service(server.url.replace("s3cret-pass", "wrong-pass"), tmp_path / "wrong")
        api = wrong._spawn("api", "serve", "--host", "127.0.0.1", "--port", str(wrong.port))
        try:
            deadline = time.monotonic() + 30
            ready: httpx.Response | None = None
            while ready is None and time.monotonic() < deadline:
                try:
                    ready = wrong.http.get("/readyz")
                except httpx.HTTPError:
                    time.sleep(0.2)
            assert ready is not None and ready.status_code == 503, ready
            assert "s3cret-pass" not in ready.text and "wrong-pass" not in ready.text
            listing = wrong.http.get("/v1/jobs")
            assert listing.status_code in (401, 503) and "wrong-pass" not in listing.text
        finally:
            wrong.http.close()
            api.send_signal(signal.SIGTERM)
            api.wait(timeout=30)


def test_retry_runs_a_canceled_job_again_for_its_owner_only(stack: FaultStack) -> None:
    stack.stop_workers()
    job = stack.submit(**TINY)
    assert stack.http.delete(f"/v1/jobs/{job['id']}").json()["status"] == "canceled"
    with stack.client("bob") as bob:
        assert bob.post(f"/v1/jobs/{job['id']}/retry").status_code == 404
    retried = stack.http.post(f"/v1/jobs/{job['id']}/retry")
    assert retried.status_code == 202 and retried.json()["status"] == "queued"
    assert stack.http.post(f"/v1/jobs/{job['id']}/retry").status_code == 409  # queued: nothing to retry

    stack.ensure_workers(1)
    done = stack.wait(job["id"], timeout_s=60)
    assert done["status"] == "succeeded" and done["error"] is None and done["finished_at"]
    assert [a["outcome"] for a in done["attempts"]] == ["succeeded"]
    assert stack.http.post(f"/v1/jobs/{job['id']}/retry").status_code == 409  # succeeded: nothing to retry


# ---------------------------------------------------------------------------------------------------------
# Fine-tuning jobs: a killed worker's retry resumes training; a cancel stops it within seconds.

FINETUNE: dict[str, Any] = {
    **TINY,
    "img_size": 128,
    "finetune": {"dataset": "shapes-train-mini", "epochs": 4, "img_size": 128, "batch_size": 4, "max_images": 16},
}


def wait_epoch(stack: Service, job_id: str, epoch: int, timeout_s: float = 120) -> dict[str, Any]:
    """Until the job is fine-tuning epoch `epoch` or later (so `epoch - 1` epochs are checkpointed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = stack.job(job_id)
        progress = job["progress"]
        if job["status"] == "running" and progress["stage"] == "finetuning" and progress["epoch"] >= epoch:
            return job
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached epoch {epoch}: {stack.job(job_id)}\n{stack.tail()}")


def finished_epochs(stack: Service, job_id: str) -> int:
    """Epochs the job's fine-tuning checkpoint (in the store) says are done."""
    import torch

    path = stack.settings.artifacts_dir / job_id / "finetune" / "run-0.ckpt"
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def test_a_worker_killed_mid_finetune_is_retried_from_its_last_finished_epoch(stack: FaultStack) -> None:
    stack.ensure_workers(2)
    job = stack.submit(**FINETUNE)
    running = wait_epoch(stack, job["id"], 2)
    assert running["progress"]["loss"].keys() == {"box", "obj", "cls"} and running["progress"]["iterations"] == 4
    worker, horse = horse_of(stack, running["worker"])
    worker.send_signal(signal.SIGKILL)
    os.kill(horse, signal.SIGKILL)
    worker.wait(timeout=10)
    done_epochs = finished_epochs(stack, job["id"])  # nothing writes it any more

    done = stack.wait(job["id"], timeout_s=180)
    assert done["status"] == "succeeded", (done, stack.tail())
    assert [a["outcome"] for a in done["attempts"]] == ["abandoned", "succeeded"]
    run = JobResult.model_validate(stack.http.get(f"/v1/jobs/{job['id']}/result").json()).runs[0]
    assert run.recovery is not None and run.recovery.applied == ["finetune"]
    assert done_epochs >= 1 and run.recovery.resumed_from_epoch == done_epochs
    assert [p.epoch for p in run.recovery.train_loss] == [1, 2, 3, 4] and run.recovery.epochs == 4
    assert run.sparsity == pytest.approx(0.2, abs=1e-3)  # the mask held through both attempts
    # Training checkpoints are scratch: gone once the job has its result.
    assert not (stack.settings.artifacts_dir / job["id"] / "finetune").exists()
    stack.ensure_workers(2)


def test_cancel_stops_finetuning_within_seconds_and_a_retry_resumes(stack: FaultStack) -> None:
    stack.ensure_workers(1)
    job = stack.submit(**FINETUNE)
    running = wait_epoch(stack, job["id"], 2)
    worker = next(w for w in stack.live_workers() if w.pid == int(running["worker"].split(":")[1]))
    asked = time.monotonic()
    response = stack.http.delete(f"/v1/jobs/{job['id']}")
    assert response.status_code == 202 and response.json()["status"] == "canceled"
    while children_of(worker.pid) and time.monotonic() - asked < 30:
        time.sleep(0.05)
    stopped_s = time.monotonic() - asked
    print(f"\nfine-tuning horse gone {stopped_s:.1f} s after the cancel")
    assert not children_of(worker.pid) and stopped_s < 10
    canceled = stack.wait(job["id"], timeout_s=30)
    assert canceled["status"] == "canceled" and canceled["attempts"][-1]["outcome"] == "canceled"
    done_epochs = finished_epochs(stack, job["id"])

    assert stack.http.post(f"/v1/jobs/{job['id']}/retry").status_code == 202
    done = stack.wait(job["id"], timeout_s=180)
    assert done["status"] == "succeeded", (done, stack.tail())
    run = JobResult.model_validate(stack.http.get(f"/v1/jobs/{job['id']}/result").json()).runs[0]
    assert run.recovery is not None and run.recovery.resumed_from_epoch == done_epochs >= 1
