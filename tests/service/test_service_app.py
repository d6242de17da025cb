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


def test_meta_serves_the_contracts_names_without_a_key() -> None:
    from prunebench.contract import JOB_STATUSES, PRUNE_METHODS, STAGES, JobStatus

    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", api_keys="alice:k-0123456789"))
    with TestClient(app) as client:
        meta = client.get("/v1/meta").json()
    assert meta["methods"] == list(PRUNE_METHODS) and meta["stages"] == list(STAGES)
    assert meta["statuses"] == list(JOB_STATUSES) == [s.value for s in JobStatus]
    assert meta["terminal_statuses"] == ["succeeded", "failed", "canceled"]


def test_openapi_declares_the_bearer_scheme_and_typed_pages() -> None:
    schema = create_app(Settings(redis_url="redis://127.0.0.1:1/0", auth_disabled=True)).openapi()
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    assert {"ApiKey": []} in schema["paths"]["/v1/jobs"]["get"]["security"]
    assert "security" not in schema["paths"]["/v1/meta"]["get"]
    for path, item in [
        ("/v1/jobs", "JobResource"),
        ("/v1/checkpoints", "CheckpointInfo"),
        ("/v1/datasets", "DatasetInfo"),
    ]:
        ref = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        page = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert set(page["required"]) == {"items", "total", "limit", "offset"}, path
        assert page["properties"]["items"]["items"]["$ref"].endswith(item)


def test_dashboard_serves_its_modules_from_sub_folders_and_nothing_outside() -> None:
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", auth_disabled=True))
    with TestClient(app) as client:
        index = client.get("/ui/")
        assert index.status_code == 200 and 'src="js/app.js"' in index.text
        module = client.get("/ui/js/views/result/runs.js")
        assert module.status_code == 200 and module.headers["content-type"].startswith("text/javascript")
        assert module.headers["content-security-policy"].startswith("default-src 'none'")
        for outside in ("/ui/../app.py", "/ui/js/../../dashboard.py", "/ui/%2e%2e/app.py", "/ui/js/nothing.js"):
            assert client.get(outside).status_code == 404, outside
