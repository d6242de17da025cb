"""The `prunebench` client commands, run as subprocesses against the session stack (tests/support/stack.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prunebench.client.http import ClientError, JobNotFinished, PrunebenchClient
from prunebench.infra.redis_server import free_port
from tests.support.paths import DEMO_DIR, ROOT
from tests.support.stack import Service

pytestmark = pytest.mark.slow

BUILTIN_CHECKPOINT = DEMO_DIR / "yolov5n_shapes.pt"
SMALL = ["--checkpoint", "yolov5n_shapes.pt", "--dataset", "shapes-val", "--img-size", "256", "--max-images", "24"]
CLI = [sys.executable, "-m", "prunebench.cli"]


def run(
    service: Service, *args: str, key: str | None = None, url: str | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    env = {
        **service.env,
        "PRUNEBENCH_URL": url or service.url,
        "PRUNEBENCH_API_KEY": service.api_key if key is None else key,
    }
    return subprocess.run(
        [*CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_submit_wait_json_then_status_result_jobs(service: Service) -> None:
    done = run(service, "submit", *SMALL, "--sparsities", "0,0.3", "--no-cache", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout is exactly the JobResult JSON
    assert [r["sparsity_target"] for r in result["runs"]] == [0.0, 0.3]
    assert result["runs"][1]["deltas"] is not None
    job_id = result["job_id"]
    assert "job" in done.stderr and job_id in done.stderr  # progress went to stderr

    status = run(service, "status", job_id, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "succeeded"

    human = run(service, "status", job_id)
    assert "succeeded" in human.stdout

    table = run(service, "result", job_id)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("sparsity"))
    assert "mAP50" in lines[header] and "ms/img" in lines[header]
    assert len(lines) - header - 2 == 2  # header, rule, one row per run
    assert lines[header + 2].split()[0] == "0.00" and lines[header + 3].split()[0] == "0.30"

    listed = run(service, "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    items = page if isinstance(page, list) else page.get("items", [])
    assert job_id in [j["id"] for j in items]

    succeeded = run(service, "jobs", "--status", "succeeded")
    assert job_id in succeeded.stdout
    none_failed = run(service, "jobs", "--status", "failed", "--json")
    failed_page = json.loads(none_failed.stdout)
    failed_items = failed_page if isinstance(failed_page, list) else failed_page.get("items", [])
    assert job_id not in [j["id"] for j in failed_items]


def test_submit_without_wait_prints_the_id_and_cancel_stops_it(service: Service) -> None:
    submitted = run(service, "submit", *SMALL[:4], "--sparsities", "0.1,0.3,0.5,0.7,0.9", "--no-cache")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert job_id and "\n" not in job_id

    canceled = run(service, "cancel", job_id, "--json")
    assert canceled.returncode == 0, canceled.stderr
    with PrunebenchClient(service.url, service.api_key) as client:
        final = client.wait(job_id, poll_s=0.5, timeout_s=120)
    assert final["status"] == "canceled"

    # No result for a canceled job: a problem on stderr and a non-zero exit.
    result = run(service, "result", job_id)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "error" in result.stderr


def test_upload_prints_the_sha256_id(service: Service, tmp_path: Path) -> None:
    copy = tmp_path / "my_yolov5n.pt"
    copy.write_bytes(BUILTIN_CHECKPOINT.read_bytes())
    uploaded = run(service, "upload", str(copy), "--json")
    assert uploaded.returncode == 0, uploaded.stderr
    info = json.loads(uploaded.stdout)
    assert info["id"] == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert info["name"] == "my_yolov5n.pt"

    plain = run(service, "upload", str(copy))
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == info["id"]


def test_upload_of_a_non_checkpoint_is_a_problem(service: Service, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint" * 100)
    refused = run(service, "upload", str(junk))
    assert refused.returncode == 1
    assert refused.stdout == ""
    # The upload progress bar may precede it; the problem is the last line.
    assert refused.stderr.splitlines()[-1].startswith("prunebench: error: 422")


def test_errors_carry_the_problem_detail(service: Service) -> None:
    missing = run(service, "status", "no-such-job")
    assert missing.returncode == 1
    assert "404" in missing.stderr

    invalid = run(service, "submit", *SMALL[:4], "--sparsities", "0.3", "--img-size", "8")
    assert invalid.returncode == 1
    assert "img_size" in invalid.stderr

    bad_usage = run(service, "submit", *SMALL[:4], "--sparsities", "1.5")
    assert bad_usage.returncode == 2

    with PrunebenchClient(service.url, service.api_key) as client:
        with pytest.raises(ClientError) as info:
            client.get_job("no-such-job")
        assert info.value.status == 404 and info.value.title

        job = client.submit(
            {"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsities": [0.5, 0.9], "use_cache": False}
        )
        try:
            with pytest.raises(JobNotFinished) as early:
                client.get_result(job["id"])
            assert early.value.status == 409
        finally:
            client.cancel(job["id"])

    unauthenticated = run(service, "jobs", key="wrong-key")
    if unauthenticated.returncode == 0:
        pytest.skip("this stack runs without authentication")
    assert unauthenticated.returncode == 1 and "401" in unauthenticated.stderr


def test_unreachable_api_is_a_clean_error(service: Service) -> None:
    started = time.monotonic()
    down = run(service, "jobs", url=f"http://127.0.0.1:{free_port()}", timeout=60)
    assert down.returncode == 1
    assert "cannot reach" in down.stderr and "Traceback" not in down.stderr
    assert time.monotonic() - started < 30
