"""The API process: torch-free, problem+json errors, and a Redis outage answered with 503."""

from __future__ import annotations

import subprocess
import sys

from fastapi.testclient import TestClient

from prunebench.config import Settings
from prunebench.service.app import create_app


def test_api_never_imports_torch() -> None:
    code = (
        "import sys, prunebench.service.app, prunebench.jobs.store, prunebench.checkpoints.store, "
        "prunebench.worker.entry, prunebench.worker.runner, prunebench.cli; "
        "assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_redis_down_is_a_503_problem_not_a_crash() -> None:
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", redis_prefix="unused", auth_disabled=True))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 200
        for method, path, body in [
            ("GET", "/readyz", None),
            ("GET", "/v1/jobs", None),
            ("GET", "/v1/jobs/abc", None),
            ("POST", "/v1/jobs", {"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": 0.2}),
        ]:
            response = client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["status"] == 503


def test_upload_needs_multipart() -> None:
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", auth_disabled=True))
    with TestClient(app) as client:
        response = client.post("/v1/checkpoints", content=b"raw", headers={"content-type": "application/octet-stream"})
        assert response.status_code == 415
        assert response.headers["content-type"].startswith("application/problem+json")
