"""The service's HTTP contract, end to end: real redis-server, real API and worker processes, real jobs.

Jobs run on the bundled YOLOv5n checkpoint and shapes dataset at small settings (256 px, 16 images)
so the module takes a couple of minutes on two CPU cores.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from prunebench.contract import JobResult, Metrics
from prunebench.jobs import rq_adapter
from prunebench.jobs.keys import Keys
from tests.support.paths import DEMO_DIR, SMALL_JOB
from tests.support.stack import Service, children_of

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"
SMALL = SMALL_JOB
# Long enough to be caught running: every image at full size, several points.
LONG: dict[str, Any] = {**SMALL, "img_size": 640, "max_images": None, "sparsities": [0.1, 0.2, 0.3, 0.4, 0.5]}


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["type"]
    return body


def wait_running(service: Service, job_id: str, stage: str = "evaluating", timeout_s: float = 120) -> dict[str, Any]:
    """Until the job is running and its progress has reached `stage` (so the engine is really working)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = service.job(job_id)
        assert job["status"] in ("queued", "running"), job
        if job["status"] == "running" and job["progress"]["stage"] == stage:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {stage}: {service.job(job_id)}")


# -- probes, catalog, checkpoints -------------------------------------------------------------------


def test_health_and_readiness(service: Service) -> None:
    assert service.http.get("/healthz").json() == {"status": "ok"}
    ready = service.http.get("/readyz").json()
    assert ready["redis"] == "ok" and ready["workers"] == 1


def test_datasets_list_the_builtin_demo(service: Service) -> None:
    items = {d["name"]: d for d in service.http.get("/v1/datasets").json()["items"]}
    shapes = items["shapes-val"]
    assert shapes["images"] == 120 and shapes["builtin"] is True
    assert {c["id"] for c in shapes["categories"]} == {1, 2, 3, 4, 5}


def test_checkpoints_list_and_lookup(service: Service) -> None:
    items = service.http.get("/v1/checkpoints").json()["items"]
    builtin = next(c for c in items if c["name"] == "yolov5n_shapes.pt")
    assert builtin["source"] == "builtin" and builtin["num_classes"] == 80 and len(builtin["id"]) == 64
    # An id names bytes: an upload of the same bytes under another name is the same checkpoint.
    assert service.http.get(f"/v1/checkpoints/{builtin['id']}").json()["id"] == builtin["id"]
    assert service.http.get("/v1/checkpoints/yolov5n_shapes.pt").json()["source"] == "builtin"
    assert service.http.get("/v1/checkpoints/yolov5n_shapes.pt").json()["id"] == builtin["id"]
    assert_problem(service.http.get("/v1/checkpoints/nope.pt"), 404)
    assert_problem(service.http.get("/v1/checkpoints/..%2F..%2Fetc%2Fpasswd"), 404)


def test_upload_checkpoint_is_idempotent_by_content(service: Service) -> None:
    data = (DEMO_DIR / "yolov5n_shapes.pt").read_bytes()
    first = service.http.post("/v1/checkpoints", files={"file": ("my-detector.pt", data)})
    assert first.status_code in (200, 201), first.text
    info = first.json()
    assert info["name"] == "my-detector.pt" and info["size_bytes"] == len(data)
    assert info["format"] == "yolov5" and info["num_classes"] == 80 and info["owner"] == "alice"
    again = service.http.post("/v1/checkpoints", files={"file": ("other-name.pt", data)})
    assert again.status_code == 200 and again.json()["id"] == info["id"]
    assert again.json()["name"] == "other-name.pt"
    assert service.http.get("/v1/checkpoints/other-name.pt").json()["id"] == info["id"]
    stored = service.root / "store" / "checkpoints"
    assert (stored / f"{info['id']}.pt").read_bytes() == data
    assert (stored / f"{info['id']}.json").is_file()
    # The upload is usable by id and by its name.
    assert service.http.get("/v1/checkpoints/my-detector.pt").json()["id"] == info["id"]


def test_garbage_upload_is_refused_and_leaves_nothing(service: Service) -> None:
    stored = service.root / "store" / "checkpoints"
    before = sorted(p.name for p in stored.rglob("*")) if stored.exists() else []
    body = assert_problem(
        service.http.post("/v1/checkpoints", files={"file": ("x.pt", b"not a checkpoint" * 100)}), 422
    )
    assert "checkpoint" in body["detail"]
    assert_problem(service.http.post("/v1/checkpoints", files={"file": ("empty.pt", b"")}), 422)
    assert_problem(service.http.post("/v1/checkpoints", files={"other": ("x.pt", b"abc")}), 422)
    after = sorted(p.name for p in stored.rglob("*")) if stored.exists() else []
    assert after == before


def test_oversized_upload_is_413(service: Service) -> None:
    stored = service.root / "store" / "checkpoints"
    body = assert_problem(
        service.http.post("/v1/checkpoints", files={"file": ("big.pt", b"\0" * (9 * 1024 * 1024))}), 413
    )
    assert "bytes" in body["detail"]
    incoming = stored / ".incoming"
    assert not incoming.exists() or not any(incoming.iterdir())


# -- request validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"sparsity": -0.1}, "sparsity"),
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsities": [0.2, 1.5]}, "sparsities"),
        ({"sparsities": []}, "sparsities"),
        ({"sparsities": "0.2"}, "sparsities"),
        ({"sparsity": "lots"}, "sparsity"),
        ({"sparsity": 0.2, "unknown_field": 1}, "unknown_field"),
        ({"sparsity": 0.2, "sparsities": [0.3]}, ""),
        ({"sparsity": 0.2, "img_size": 0}, "img_size"),
    ],
)
def test_invalid_jobs_are_422_problems(service: Service, change: dict[str, Any], where: str) -> None:
    body = assert_problem(service.http.post("/v1/jobs", json={**SMALL, **change}), 422)
    assert isinstance(body["errors"], list) and body["errors"]
    assert any(where in ".".join(map(str, e["loc"])) for e in body["errors"])


def test_nan_sparsity_is_a_422_problem(service: Service) -> None:
    # JSON has no NaN, but Python's parser accepts the literal: it must be refused, not crash the encoder.
    raw = b'{"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": NaN}'
    response = service.http.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    body = assert_problem(response, 422)
    assert body["errors"][0]["loc"] == ["body", "sparsity"]


def test_malformed_json_and_oversized_body(service: Service) -> None:
    response = service.http.post("/v1/jobs", content=b"{", headers={"content-type": "application/json"})
    assert_problem(response, 422)
    huge = {**SMALL, "sparsity": 0.2, "exclude": ["x" * 200] * 400}
    assert_problem(service.http.post("/v1/jobs", json=huge), 413)


def test_unknown_checkpoint_and_dataset_are_404(service: Service) -> None:
    body = assert_problem(
        service.http.post("/v1/jobs", json={**SMALL, "checkpoint": "missing.pt", "sparsity": 0.2}), 404
    )
    assert "missing.pt" in body["detail"]
    body = assert_problem(service.http.post("/v1/jobs", json={**SMALL, "dataset": "missing", "sparsity": 0.2}), 404)
    assert "missing" in body["detail"]


def test_unknown_routes_and_methods_are_problems(service: Service) -> None:
    assert_problem(service.http.get("/v1/nothing-here"), 404)
    assert_problem(service.http.get("/v1/jobs/0123456789abcdef"), 404)
    assert_problem(service.http.get("/v1/jobs/0123456789abcdef/result"), 404)
    assert_problem(service.http.delete("/v1/jobs/0123456789abcdef"), 404)
    assert_problem(service.http.put("/v1/jobs"), 405)


# -- jobs -------------------------------------------------------------------------------------------


def test_sweep_job_end_to_end(service: Service) -> None:
    submitted = service.http.post("/v1/jobs", json={**SMALL, "sparsities": [0.3, 0.2]})
    assert submitted.status_code == 202
    job = submitted.json()
    assert submitted.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["owner"] == "alice" and job["attempts"] == []

    # Progress is visible while it runs, and there is no result yet.
    running = wait_running(service, job["id"])
    assert running["started_at"] and running["worker"]
    assert running["progress"]["runs_total"] == 3 and running["progress"]["images_total"] == 16
    assert_problem(service.http.get(f"/v1/jobs/{job['id']}/result"), 409)
    assert_problem(service.http.get(f"/v1/jobs/{job['id']}/runs/0/model"), 404)

    done = service.wait(job["id"])
    assert done["status"] == "succeeded", done
    assert done["finished_at"] and done["error"] is None and done["result_url"] == f"/v1/jobs/{job['id']}/result"
    assert [a["outcome"] for a in done["attempts"]] == ["succeeded"]
    assert done["progress"]["percent"] == 100.0

    response = service.http.get(f"/v1/jobs/{job['id']}/result")
    assert response.status_code == 200
    result = JobResult.model_validate(response.json())
    assert result.job_id == job["id"] and result.checkpoint.name == "yolov5n_shapes.pt"
    assert result.dataset.name == "shapes-val"
    # One run per point, dense baseline first, in order.
    assert [r.sparsity_target for r in result.runs] == [0.0, 0.2, 0.3]
    raw_runs = response.json()["runs"]
    for run, raw in zip(result.runs, raw_runs, strict=True):
        assert set(raw["metrics"]) >= set(Metrics.model_fields) - {"upstream_map50", "upstream_map"}
        assert all(math.isfinite(v) for v in raw["metrics"].values() if v is not None)
        assert run.images == 16 and run.params > 0 and run.gflops > 0
        assert run.speed_ms_per_image.total > 0 and run.images_per_second > 0
        assert run.sparsity == pytest.approx(run.sparsity_target, abs=0.02)
        assert 0 <= run.global_sparsity <= run.sparsity + 1e-9
        assert run.deltas is not None
    # A trained dense model has a handful of exact zeros of its own.
    assert result.runs[0].sparsity < 1e-4 and result.runs[0].params - result.runs[0].nonzero_params < 100
    assert result.runs[2].nonzero_params < result.runs[1].nonzero_params < result.runs[0].nonzero_params
    assert result.environment.device == "cpu" and result.environment.torch

    # Results never expire: no TTL on the Redis key, and a file copy in the store.
    settings = service.settings
    client = redis.Redis.from_url(settings.redis_url)
    try:
        keys = Keys(settings.redis_prefix)
        assert client.ttl(keys.result(job["id"])) == -1
        assert client.ttl(keys.job(job["id"])) == -1
    finally:
        client.close()
    assert JobResult.model_validate_json((settings.results_dir / f"{job['id']}.json").read_bytes()) == result

    # Listed newest first, filterable by status, paginated with a total.
    page = service.http.get("/v1/jobs", params={"status": "succeeded", "limit": 1}).json()
    assert page["items"][0]["id"] == job["id"] and page["total"] >= 1 and page["limit"] == 1
    assert_problem(service.http.get("/v1/jobs", params={"status": "bogus"}), 422)
    assert_problem(service.http.get("/v1/jobs", params={"limit": 0}), 422)
    assert_problem(service.http.delete(f"/v1/jobs/{job['id']}"), 409)


def test_saved_models_are_downloadable(service: Service) -> None:
    job = service.submit(**{**SMALL, "max_images": 8, "sparsity": 0.3, "include_dense": False, "save_models": True})
    done = service.wait(job["id"])
    assert done["status"] == "succeeded", done
    result = service.http.get(f"/v1/jobs/{job['id']}/result").json()
    assert result["runs"][0]["model_artifact"] == f"/v1/jobs/{job['id']}/runs/0/model"
    model = service.http.get(f"/v1/jobs/{job['id']}/runs/0/model")
    assert model.status_code == 200 and len(model.content) == result["runs"][0]["size_bytes"]
    assert_problem(service.http.get(f"/v1/jobs/{job['id']}/runs/1/model"), 404)


def test_deterministic_failure_is_failed_once_not_retried(service: Service) -> None:
    job = service.submit(**{**SMALL, "dataset": "broken-images", "sparsity": 0.2})
    done = service.wait(job["id"])
    assert done["status"] == "failed"
    assert done["error"] and "\n" not in done["error"]
    assert len(done["attempts"]) == 1 and done["attempts"][0]["outcome"] == "failed"
    body = assert_problem(service.http.get(f"/v1/jobs/{job['id']}/result"), 422)
    assert body["detail"] == done["error"]
    time.sleep(1.0)  # a retry would have re-queued it by now
    assert service.job(job["id"])["status"] == "failed"


def test_cancel_queued_and_running_jobs(service: Service) -> None:
    long_job = service.submit(**LONG)
    queued = service.submit(**{**SMALL, "sparsity": 0.2})
    wait_running(service, long_job["id"])
    assert service.job(queued["id"])["status"] == "queued"

    # Queued: canceled at once, never runs.
    response = service.http.delete(f"/v1/jobs/{queued['id']}")
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    assert_problem(service.http.get(f"/v1/jobs/{queued['id']}/result"), 410)
    assert_problem(service.http.delete(f"/v1/jobs/{queued['id']}"), 409)

    # Running: canceled now, the worker's horse is stopped.
    response = service.http.delete(f"/v1/jobs/{long_job['id']}")
    assert response.status_code == 202 and response.json()["status"] == "canceled"

    # The worker is free again: the next job runs to completion well before the long one could have.
    after = service.submit(**{**SMALL, "max_images": 8, "sparsity": 0.2, "include_dense": False})
    done = service.wait(after["id"], timeout_s=120)
    assert done["status"] == "succeeded", done
    for job_id in (long_job["id"], queued["id"]):
        final = service.job(job_id)
        assert final["status"] == "canceled" and final["finished_at"]
        assert final["attempts"] == [] or final["attempts"][-1]["outcome"] == "canceled"
    assert not (service.settings.results_dir / f"{long_job['id']}.json").exists()


def test_results_survive_an_api_crash_mid_job(service: Service) -> None:
    job = service.submit(**{**SMALL, "sparsities": [0.2]})
    wait_running(service, job["id"], stage="evaluating")
    service.kill_api()
    try:
        time.sleep(1.0)  # the job keeps running without the API
    finally:
        service.start_api()
    done = service.wait(job["id"])
    assert done["status"] == "succeeded", done
    assert service.http.get(f"/v1/jobs/{job['id']}/result").status_code == 200


def test_uploaded_checkpoint_runs_by_id(service: Service) -> None:
    data = (DEMO_DIR / "yolov5n_shapes.pt").read_bytes()
    info = service.http.post("/v1/checkpoints", files={"file": ("by-id.pt", data)}).json()
    job = service.submit(
        **{**SMALL, "checkpoint": info["id"], "max_images": 8, "sparsity": 0.2, "include_dense": False}
    )
    done = service.wait(job["id"])
    assert done["status"] == "succeeded", done
    result = service.http.get(f"/v1/jobs/{job['id']}/result").json()
    assert result["checkpoint"]["id"] == info["id"]


def test_store_paths_are_not_reachable_by_name(service: Service, tmp_path: Path) -> None:
    for ref in ("..", ".incoming", "%2e%2e", "a\\b.pt"):
        response = service.http.post("/v1/jobs", json={**SMALL, "checkpoint": ref, "sparsity": 0.2})
        assert response.status_code in (404, 422), (ref, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the work-horse")
def test_killed_work_horse_is_retried_as_a_new_attempt(service: Service) -> None:
    assert service.worker is not None
    job = service.submit(**LONG)
    wait_running(service, job["id"])
    horses = children_of(service.worker.pid)
    assert len(horses) == 1, horses
    os.kill(horses[0], signal.SIGKILL)  # as the OOM killer would

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        current = service.job(job["id"])
        if current["status"] == "running" and len(current["attempts"]) == 2:
            break
        time.sleep(0.2)
    assert [a["outcome"] for a in current["attempts"]] == ["crashed", None], current
    assert "WorkerCrashed" in (current["attempts"][0]["error"] or "")
    assert service.http.delete(f"/v1/jobs/{job['id']}").status_code == 202
    service.wait(job["id"])
    assert service.job(job["id"])["status"] == "canceled"


def run_demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prunebench.cli", "demo", "--eval-device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_quick_start_demo_runs_end_to_end(tmp_path: Path) -> None:
    """`prunebench demo` with no Redis answering: it starts its own, runs the sweep, prints the table."""
    env = {**os.environ, "PRUNEBENCH_REDIS_URL": "redis://127.0.0.1:1/0", "TMPDIR": str(tmp_path)}
    out = run_demo(env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "embedded" in out.stderr and "succeeded" in out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()[:4] in ("0.00", "0.20", "0.30")]
    assert [r[0] for r in rows] == ["0.00", "0.20", "0.30"], out.stdout
    # Everything it started is gone: its temporary folder (with Redis's files) was removed.
    assert not any(tmp_path.glob("prunebench-*"))


def test_demo_on_a_shared_redis_leaves_no_keys_behind(tmp_path: Path) -> None:
    """Against a Redis it does not own, the demo removes its records and rq's keys for its queue and job."""
    from prunebench.infra.redis_server import EmbeddedRedis

    with EmbeddedRedis(workdir=tmp_path / "redis") as server:
        url = server.url
        shared = redis.Redis.from_url(url)
        shared.set("someone-else:key", "kept")
        env = {**os.environ, "PRUNEBENCH_REDIS_URL": url, "TMPDIR": str(tmp_path)}
        out = run_demo(env)
        assert out.returncode == 0, out.stderr[-3000:]
        left = {key.decode() for key in shared.scan_iter("*")}
        # rq marks a stopped worker dead and lets its key expire on its own within a minute.
        workers = {key for key in left if key.startswith(rq_adapter.worker_key(""))}
        assert all(0 < shared.ttl(key) <= 60 for key in workers)
        assert left - workers == {"someone-else:key"}
        assert not any(
            k.startswith(rq_adapter.queue_key("prunebench-demo")) for k in rq_adapter.known_queue_keys(shared)
        )


@pytest.mark.parametrize("points", [{"sparsity": 0.2}, {"sparsities": [0.1, 0.2]}], ids=["one point", "fanned out"])
def test_a_job_too_large_for_the_worker_fails_at_once_with_the_estimate(
    service: Service, points: dict[str, Any]
) -> None:
    # Within the documented ranges (img_size <= 4096, batch_size <= 512), far beyond any worker's memory.
    job = service.submit(**{**SMALL, "img_size": 4096, "batch_size": 512, **points})
    done = service.wait(job["id"])
    assert done["status"] == "failed" and len(done["attempts"]) == 1
    assert "JobTooLarge" in done["error"] and "img_size 4096 x batch 512" in done["error"]
    assert "lower img_size or batch_size" in done["error"]


def test_a_shared_upload_shows_each_owner_only_its_own_view_in_job_results(service: Service) -> None:
    data = (DEMO_DIR / "yolov5n_shapes.pt").read_bytes()
    job_body = {**SMALL, "max_images": 4, "sparsity": 0.0}
    with service.client("alice") as alice, service.client("bob") as bob:
        mine = alice.post("/v1/checkpoints", files={"file": ("alices-secret-project.pt", data)}).json()
        first = alice.post("/v1/jobs", json={**job_body, "checkpoint": "alices-secret-project.pt"}).json()
        assert service.wait(first["id"])["status"] == "succeeded"
        theirs = bob.post("/v1/checkpoints", files={"file": ("bobs.pt", data)})
        assert theirs.status_code == 201 and theirs.json()["id"] == mine["id"]
        # The same request by bob is answered from the cache: still his view of the checkpoint.
        second = bob.post("/v1/jobs", json={**job_body, "checkpoint": "bobs.pt"}).json()
        deadline = time.monotonic() + 120
        while bob.get(f"/v1/jobs/{second['id']}").json()["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert bob.get(f"/v1/jobs/{second['id']}").json()["status"] == "succeeded"
        result = bob.get(f"/v1/jobs/{second['id']}/result").json()
        assert result["cached"]
        seen = result["checkpoint"]
        assert (seen["name"], seen["owner"], seen["created_at"]) == ("bobs.pt", "bob", theirs.json()["created_at"])
        assert "alices-secret-project" not in bob.get(f"/v1/jobs/{second['id']}/result").text
