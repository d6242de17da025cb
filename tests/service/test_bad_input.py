"""Hostile and broken input gets a 4xx problem and leaves nothing behind.

In-process API (TestClient) over the session's real Redis, with a real models folder. The cases D's
end-to-end tests already cover (sparsity range, NaN, unknown fields, malformed JSON, garbage/empty/
oversized uploads) live in tests/integration/test_service.py; these are the rest.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from prunebench.config import Settings
from prunebench.jobs.keys import Keys
from prunebench.service.app import create_app
from tests.support import hostile
from tests.support.hostile import SystemPayload
from tests.support.paths import DEMO_DIR

KEY = "bad-input-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
JOB: dict[str, Any] = {"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": 0.2}
PROBLEM = "application/problem+json"


@pytest.fixture
def app_settings(settings: Settings, tmp_path: Path) -> Settings:
    models = tmp_path / "models"
    models.mkdir()
    return settings.model_copy(
        update={
            "api_keys": f"tester:{KEY}",
            "auth_disabled": False,
            "models_dir": models,
            "max_upload_bytes": 8 * 1024 * 1024,
        }
    )


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings)) as test_client:
        yield test_client


def problem(response: Any, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    return body


def stored_jobs(settings: Settings) -> int:
    connection = redis.Redis.from_url(settings.redis_url)
    try:
        return int(connection.zcard(Keys(settings.redis_prefix).jobs))
    finally:
        connection.close()


def stored_uploads(settings: Settings) -> list[str]:
    root = settings.uploads_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": Infinity}',
        b'{"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": -Infinity}',
        b'{"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsities": [0.1, NaN]}',
        b'{"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": 1e999}',
        b'{"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": true}',
        b'{"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": null}',
        b'{"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": 0.2, "method": "magic"}',
        b'{"checkpoint": 7, "dataset": "shapes-val", "sparsity": 0.2}',
        b"[0.2]",
        b'"just a string"',
    ],
)
def test_bad_values_are_422(client: TestClient, app_settings: Settings, raw: bytes) -> None:
    response = client.post("/v1/jobs", content=raw, headers={**AUTH, "content-type": "application/json"})
    problem(response, 422)
    assert stored_jobs(app_settings) == 0


def test_huge_lists_are_refused(client: TestClient, app_settings: Settings) -> None:
    sweep = {**JOB, "sparsity": None, "sparsities": [round(i / 100, 2) for i in range(33)]}
    problem(client.post("/v1/jobs", json=sweep, headers=AUTH), 422)
    many = {**JOB, "exclude": ["model.1.*"] * 257}
    problem(client.post("/v1/jobs", json=many, headers=AUTH), 422)
    assert stored_jobs(app_settings) == 0


def test_non_utf8_body_is_a_problem_not_a_crash(client: TestClient, app_settings: Settings) -> None:
    raw = b'{"checkpoint": "\xff\xfe.pt", "dataset": "shapes-val", "sparsity": 0.2}'
    problem(client.post("/v1/jobs", content=raw, headers={**AUTH, "content-type": "application/json"}), 400, 422)
    latin1 = '{"checkpoint": "é.pt", "dataset": "shapes-val", "sparsity": 0.2}'.encode("latin-1")
    problem(client.post("/v1/jobs", content=latin1, headers={**AUTH, "content-type": "application/json"}), 400, 422)
    assert stored_jobs(app_settings) == 0


def test_oversized_body_is_413_by_its_declared_length_before_it_is_read(client: TestClient) -> None:
    # Content-Length far beyond the limit, with a tiny actual body: refused on the header alone.
    response = client.post(
        "/v1/jobs",
        content=b"{}",
        headers={**AUTH, "content-type": "application/json", "content-length": str(10 * 1024 * 1024)},
    )
    problem(response, 413)


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/etc/passwd", "..", "C:\\Windows\\win.ini", "a/../../b.pt", "x\x00.pt"]
)
def test_path_like_names_never_reach_the_file_system(client: TestClient, app_settings: Settings, name: str) -> None:
    problem(client.post("/v1/jobs", json={**JOB, "checkpoint": name}, headers=AUTH), 404, 422)
    problem(client.post("/v1/jobs", json={**JOB, "dataset": name}, headers=AUTH), 404, 422)
    assert stored_jobs(app_settings) == 0


def test_symlinks_escaping_the_models_dir_are_invisible(
    client: TestClient, app_settings: Settings, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.pt"
    secret.write_bytes((DEMO_DIR / "yolov5n_shapes.pt").read_bytes())
    models = app_settings.models_dir
    assert models is not None
    (models / "escape.pt").symlink_to(secret)
    (models / "escape-dir").symlink_to(outside, target_is_directory=True)
    (models / "inside.pt").symlink_to(models / "real.pt")  # dangling, but inside: simply absent
    names = {c["name"] for c in client.get("/v1/checkpoints", headers=AUTH).json()["items"]}
    assert "escape.pt" not in names and "secret.pt" not in names
    problem(client.get("/v1/checkpoints/escape.pt", headers=AUTH), 404)
    problem(client.get("/v1/checkpoints/inside.pt", headers=AUTH), 404)
    problem(client.post("/v1/jobs", json={**JOB, "checkpoint": "escape.pt"}, headers=AUTH), 404)


def _torch_like_zip(payload: bytes) -> bytes:
    """A zip laid out like torch.save's: `<root>/data.pkl` plus the usual small entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def test_malicious_pickle_upload_is_refused_and_never_runs(
    client: TestClient, app_settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"model": SystemPayload(marker), "names": ["a"]}, protocol=2)
    for name, data in (("evil.pt", _torch_like_zip(evil)), ("evil-raw.pt", evil)):
        body = problem(client.post("/v1/checkpoints", files={"file": (name, data)}, headers=AUTH), 422)
        assert "checkpoint" in body["detail"]
    assert not marker.exists()
    assert stored_uploads(app_settings) == []


def test_zip_bomb_checkpoint_is_refused_without_inflating_it(client: TestClient, app_settings: Settings) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (200 * 1024 * 1024))  # 200 MiB -> ~200 KiB
        archive.writestr("archive/version", "3\n")
    bomb = buffer.getvalue()
    assert len(bomb) < 1024 * 1024
    problem(client.post("/v1/checkpoints", files={"file": ("bomb.pt", bomb)}, headers=AUTH), 422)
    assert stored_uploads(app_settings) == []


def test_upload_over_the_limit_is_413_while_streaming(client: TestClient, app_settings: Settings) -> None:
    # No Content-Length to judge by (a generator body is sent chunked): the limit applies as bytes arrive.
    boundary = "pbboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.pt"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(12):
            yield b"\0" * (1024 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/v1/checkpoints",
        content=chunks(),
        headers={**AUTH, "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    problem(response, 413)
    assert stored_uploads(app_settings) == []


@pytest.mark.parametrize(
    ("finetune", "status", "kind"),
    [
        ({"dataset": "no-such-split"}, 404, "unknown-dataset"),
        ({"dataset": "../etc"}, 422, None),
        ({"dataset": "shapes-train-mini", "img_size": 100}, 422, None),
        ({"dataset": "shapes-train-mini", "epochs": 0}, 422, None),
        ({"dataset": "shapes-train-mini", "lr0": -1}, 422, None),
        ({"dataset": "shapes-train-mini", "optimizer": "adam"}, 422, None),
    ],
)
def test_bad_finetune_settings_are_refused_before_queueing(
    client: TestClient, app_settings: Settings, finetune: dict[str, Any], status: int, kind: str | None
) -> None:
    body = problem(client.post("/v1/jobs", json={**JOB, "finetune": finetune}, headers=AUTH), status)
    if kind:
        assert body["type"].endswith(kind) and "no-such-split" in body["detail"]
    assert stored_jobs(app_settings) == 0


def test_a_finetune_job_on_a_yolo_split_is_accepted(client: TestClient, app_settings: Settings) -> None:
    response = client.post("/v1/jobs", json={**JOB, "finetune": {"dataset": "shapes-train-mini"}}, headers=AUTH)
    assert response.status_code == 202, response.text
    assert response.json()["request"]["finetune"]["epochs"] == 10
    listing = client.get("/v1/datasets", headers=AUTH).json()["items"]
    formats = {d["name"]: d["format"] for d in listing}
    assert formats["shapes-train-mini"] == "yolo" and formats["shapes-val"] == "coco"


def _archive(pickle_bytes: bytes) -> bytes:
    """A torch-style zip around crafted pickle bytes (see tests.support.hostile)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle_bytes)
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


CRAFTED = {
    "deep nesting (RecursionError)": hostile.deep_list(100_000),
    "a list where _modules belongs (AttributeError)": hostile.modules_not_a_dict(),
    "bytearray(N)": hostile.bytearray_of_size(300_000_000),
    "huge memo index": hostile.memo_index(2**31),
    "nc 200000": hostile.names_padded_to(200_000),
}


@pytest.mark.parametrize("label", list(CRAFTED))
def test_crafted_uploads_are_422_problems_never_500(client: TestClient, app_settings: Settings, label: str) -> None:
    response = client.post("/v1/checkpoints", files={"file": ("x.pt", _archive(CRAFTED[label]))}, headers=AUTH)
    body = problem(response, 422)
    assert body["detail"].startswith("not a usable checkpoint:")
    uploads = app_settings.uploads_dir
    assert not list(uploads.glob("*.json")) and not list(uploads.glob("*.pt"))


def test_an_unusable_mounted_file_is_listed_as_such_and_breaks_nothing(
    client: TestClient, app_settings: Settings
) -> None:
    assert app_settings.models_dir is not None
    (app_settings.models_dir / "broken.pt").write_bytes(_archive(hostile.deep_list(100_000)))
    (app_settings.models_dir / "odd.pt").write_bytes(_archive(hostile.modules_not_a_dict()))
    listing = client.get("/v1/checkpoints", headers=AUTH)
    assert listing.status_code == 200, listing.text
    items = {c["name"]: c for c in listing.json()["items"]}
    for name in ("broken.pt", "odd.pt"):
        assert not items[name]["usable"] and items[name]["format"] is None and items[name]["problem"]
    assert items["yolov5n_shapes.pt"]["usable"]
    builtin = items["yolov5n_shapes.pt"]["id"]
    assert client.get(f"/v1/checkpoints/{builtin}", headers=AUTH).status_code == 200
    assert client.post("/v1/jobs", json={**JOB, "checkpoint": builtin}, headers=AUTH).status_code == 202
    # The broken file itself: a 404 that says why, and no job.
    body = problem(client.get("/v1/checkpoints/broken.pt", headers=AUTH), 404)
    assert "not usable" in body["detail"] and "nested deeper" in body["detail"]
    problem(client.post("/v1/jobs", json={**JOB, "checkpoint": "broken.pt"}, headers=AUTH), 404)
