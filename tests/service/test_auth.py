"""API keys: who may see and touch what. In-process API (TestClient) over the session's real Redis."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prunebench.config import Settings
from prunebench.service.app import create_app
from prunebench.service.auth import KeyConfigError, KeyRing
from tests.support.paths import DEMO_DIR

ALICE, BOB, ADMIN = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef", "admin-key-0123456789abcdef"
KEYS = f"alice:{ALICE}, bob:{BOB},admin:{ADMIN}"
JOB = {"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": 0.2, "device": "cpu"}
PROBLEM = "application/problem+json"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"api_keys": KEYS, "auth_disabled": False}))
    with TestClient(app) as test_client:
        yield test_client


def assert_401(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["www-authenticate"].lower().startswith("bearer")
    assert response.json()["status"] == 401


def test_keyring_parses_pairs_and_refuses_malformed_ones_without_echoing_them() -> None:
    ring = KeyRing.from_settings(Settings(api_keys=KEYS))
    assert ring.owner_of(ALICE) == "alice" and ring.owner_of(ADMIN) == "admin"
    assert ring.owner_of("alice-key") is None and ring.owner_of("") is None
    # Only digests are kept in memory.
    assert all(ALICE.encode() not in digest for _, digest in ring.entries)
    with pytest.raises(KeyConfigError) as info:
        KeyRing.from_settings(Settings(api_keys="alice:k1,secret-without-owner"))
    assert "secret-without-owner" not in str(info.value)


def test_every_v1_route_needs_a_key_but_probes_and_dashboard_do_not(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/ui/"):
        assert client.get(path).status_code == 200, path
    assert client.get("/", follow_redirects=False).status_code == 307
    for method, path in [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs/abc"),
        ("DELETE", "/v1/jobs/abc"),
        ("POST", "/v1/jobs/abc/retry"),
        ("GET", "/v1/jobs/abc/result"),
        ("GET", "/v1/datasets"),
        ("GET", "/v1/datasets/shapes-val"),
        ("GET", "/v1/checkpoints"),
        ("GET", "/v1/checkpoints/yolov5n_shapes.pt"),
        ("POST", "/v1/checkpoints"),
    ]:
        assert_401(client.request(method, path))
        assert_401(client.request(method, path, headers=bearer("not-a-key")))
        assert_401(client.request(method, path, headers={"Authorization": f"Basic {ALICE}"}))
    assert client.get("/v1/datasets", headers=bearer(BOB)).status_code == 200


def test_jobs_are_private_to_their_owner_and_visible_to_admin(client: TestClient) -> None:
    submitted = client.post("/v1/jobs", json=JOB, headers=bearer(ALICE))
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["owner"] == "alice"
    path = f"/v1/jobs/{job['id']}"

    # Someone else's job does not exist for bob: 404, never 403 (no confirmation that the id exists).
    for method, suffix in [("GET", ""), ("GET", "/result"), ("DELETE", ""), ("POST", "/retry")]:
        response = client.request(method, path + suffix, headers=bearer(BOB))
        assert response.status_code == 404, (method, suffix, response.text)
    assert client.get("/v1/jobs", headers=bearer(BOB)).json()["total"] == 0
    assert client.get(path, headers=bearer(BOB)).json()["detail"] == client.get(
        "/v1/jobs/0123456789abcdef", headers=bearer(BOB)
    ).json()["detail"].replace("0123456789abcdef", job["id"])

    assert client.get(path, headers=bearer(ALICE)).status_code == 200
    assert [j["id"] for j in client.get("/v1/jobs", headers=bearer(ALICE)).json()["items"]] == [job["id"]]
    assert client.get(path, headers=bearer(ADMIN)).json()["owner"] == "alice"
    assert job["id"] in [j["id"] for j in client.get("/v1/jobs", headers=bearer(ADMIN)).json()["items"]]
    # Admin may cancel anyone's job; bob's attempt above changed nothing.
    assert client.get(path, headers=bearer(ALICE)).json()["status"] == "queued"
    assert client.delete(path, headers=bearer(ADMIN)).json()["status"] == "canceled"


def test_uploads_are_private_and_shared_only_by_uploading_the_same_bytes(client: TestClient) -> None:
    data = (DEMO_DIR / "yolov5n_shapes.pt").read_bytes()
    first = client.post("/v1/checkpoints", files={"file": ("mine.pt", data)}, headers=bearer(ALICE))
    assert first.status_code == 201, first.text
    ckpt = first.json()
    assert ckpt["owner"] == "alice"

    def ids(key: str) -> set[str]:
        return {c["id"] for c in client.get("/v1/checkpoints", headers=bearer(key)).json()["items"]}

    builtin = client.get("/v1/checkpoints/yolov5n_shapes.pt", headers=bearer(BOB)).json()["id"]
    # Builtin and mounted checkpoints are everyone's; alice's upload is not bob's.
    assert builtin in ids(BOB) and builtin in ids(ALICE)
    assert ckpt["id"] in ids(ALICE) and ckpt["id"] in ids(ADMIN)
    if ckpt["id"] != builtin:
        assert ckpt["id"] not in ids(BOB)
    assert client.get("/v1/checkpoints/mine.pt", headers=bearer(BOB)).status_code == 404
    denied = client.post("/v1/jobs", json={**JOB, "checkpoint": "mine.pt"}, headers=bearer(BOB))
    assert denied.status_code == 404, denied.text

    # Bob uploads the same bytes: one stored blob, now his too; alice keeps it. Bob's answer is exactly
    # what a first upload would give him (201, his name, his time, himself): nothing says alice has it.
    alice_before = client.get("/v1/checkpoints", headers=bearer(ALICE)).json()
    again = client.post("/v1/checkpoints", files={"file": ("bobs.pt", data)}, headers=bearer(BOB))
    assert again.status_code == 201 and again.json()["id"] == ckpt["id"]
    bobs = again.json()
    assert (bobs["owner"], bobs["name"]) == ("bob", "bobs.pt") and bobs["created_at"] != ckpt["created_at"]
    listed = {c["id"]: c for c in client.get("/v1/checkpoints", headers=bearer(BOB)).json()["items"]}
    assert (listed[ckpt["id"]]["name"], listed[ckpt["id"]]["created_at"]) == ("bobs.pt", bobs["created_at"])
    fetched = client.get(f"/v1/checkpoints/{ckpt['id']}", headers=bearer(BOB)).json()
    assert (fetched["name"], fetched["owner"], fetched["created_at"]) == ("bobs.pt", "bob", bobs["created_at"])
    # Alice's name still finds nothing for bob; alice's own view is unchanged.
    assert client.get("/v1/checkpoints/mine.pt", headers=bearer(BOB)).status_code == 404
    assert client.get("/v1/checkpoints/bobs.pt", headers=bearer(ALICE)).status_code == 404
    assert client.get("/v1/checkpoints", headers=bearer(ALICE)).json() == alice_before
    # Bob sending the same bytes again is his own repeat: 200, still his view.
    repeat = client.post("/v1/checkpoints", files={"file": ("bobs.pt", data)}, headers=bearer(BOB))
    assert repeat.status_code == 200 and repeat.json()["created_at"] == bobs["created_at"]
    assert ckpt["id"] in ids(BOB) and ckpt["id"] in ids(ALICE)
    ok = client.post("/v1/jobs", json={**JOB, "checkpoint": ckpt["id"]}, headers=bearer(BOB))
    assert ok.status_code == 202, ok.text


def test_keys_never_reach_the_log(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(settings.model_copy(update={"api_keys": KEYS, "auth_disabled": False}))
    with TestClient(app) as client:
        client.get("/v1/jobs", headers=bearer(ALICE))
        client.get("/v1/jobs", headers=bearer(ALICE + "x"))
        client.post("/v1/jobs", json=JOB, headers=bearer(BOB))
    for key in (ALICE, BOB, ADMIN):
        assert key not in caplog.text


def test_auth_on_without_keys_refuses_everything_and_warns(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    app = create_app(settings.model_copy(update={"api_keys": None, "auth_disabled": False}))
    with TestClient(app) as client:
        assert_401(client.get("/v1/jobs"))
        assert_401(client.get("/v1/jobs", headers=bearer("anything")))
        assert client.get("/healthz").status_code == 200
    assert "no API keys configured" in caplog.text


def test_auth_disabled_makes_everyone_local(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"api_keys": KEYS, "auth_disabled": True}))
    with TestClient(app) as client:
        job = client.post("/v1/jobs", json=JOB).json()
        assert job["owner"] == "local"
        assert client.get(f"/v1/jobs/{job['id']}", headers=bearer("whatever")).status_code == 200
