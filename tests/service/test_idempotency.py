"""Idempotency-Key on POST /v1/jobs: real Redis, in-process API, real concurrent requests."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from fastapi.testclient import TestClient

from prunebench.config import Settings
from prunebench.jobs.keys import Keys
from prunebench.service.app import create_app
from prunebench.service.idempotency import IdempotencyMismatch, IdempotencyStore, body_fingerprint

ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef"
JOB = {"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": 0.2, "device": "cpu"}


def headers(key: str, idem: str | None = None) -> dict[str, str]:
    out = {"Authorization": f"Bearer {key}"}
    if idem is not None:
        out["Idempotency-Key"] = idem
    return out


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_keys": f"alice:{ALICE},bob:{BOB}", "auth_disabled": False})


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings)) as test_client:
        yield test_client


def test_same_key_same_body_is_the_same_job(client: TestClient) -> None:
    first = client.post("/v1/jobs", json=JOB, headers=headers(ALICE, "order-1"))
    assert first.status_code == 202 and "idempotency-replayed" not in first.headers
    # Same request, spelled differently (a default made explicit, keys reordered): the same body.
    spelled = {"method": "l1_unstructured", **dict(reversed(list(JOB.items())))}
    again = client.post("/v1/jobs", json=spelled, headers=headers(ALICE, "order-1"))
    assert again.status_code == 200, again.text
    assert again.headers["idempotency-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == f"/v1/jobs/{first.json()['id']}"
    assert client.get("/v1/jobs", headers=headers(ALICE)).json()["total"] == 1
    # Without a key, every POST is a new job.
    assert client.post("/v1/jobs", json=JOB, headers=headers(ALICE)).json()["id"] != first.json()["id"]


def test_same_key_other_body_is_422_and_creates_nothing(client: TestClient) -> None:
    assert client.post("/v1/jobs", json=JOB, headers=headers(ALICE, "k")).status_code == 202
    other = client.post("/v1/jobs", json={**JOB, "sparsity": 0.3}, headers=headers(ALICE, "k"))
    assert other.status_code == 422, other.text
    assert other.headers["content-type"].startswith("application/problem+json")
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert client.get("/v1/jobs", headers=headers(ALICE)).json()["total"] == 1


def test_keys_are_scoped_to_their_owner(client: TestClient) -> None:
    a = client.post("/v1/jobs", json=JOB, headers=headers(ALICE, "shared"))
    b = client.post("/v1/jobs", json=JOB, headers=headers(BOB, "shared"))
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"] and b.json()["owner"] == "bob"


def test_a_failed_submission_releases_its_key(client: TestClient) -> None:
    missing = client.post("/v1/jobs", json={**JOB, "checkpoint": "nope.pt"}, headers=headers(ALICE, "retry-me"))
    assert missing.status_code == 404
    # The client fixes the body and retries under the same key: allowed, nothing was created.
    fixed = client.post("/v1/jobs", json=JOB, headers=headers(ALICE, "retry-me"))
    assert fixed.status_code == 202, fixed.text


@pytest.mark.parametrize("bad", ["", "x" * 201, "has space", "tab\tkey", "ünicode"])
def test_malformed_keys_are_422(client: TestClient, bad: str) -> None:
    try:
        response = client.post("/v1/jobs", json=JOB, headers={**headers(ALICE), "Idempotency-Key": bad})
    except UnicodeEncodeError:
        pytest.skip("the HTTP client itself refuses non-latin-1 header values")
    assert response.status_code == 422, response.text
    assert client.get("/v1/jobs", headers=headers(ALICE)).json()["total"] == 0


def test_concurrent_duplicates_create_exactly_one_job(app_settings: Settings) -> None:
    with TestClient(create_app(app_settings)) as client:

        def submit(_: int) -> tuple[int, str]:
            response = client.post("/v1/jobs", json=JOB, headers=headers(ALICE, "burst"))
            return response.status_code, response.json()["id"]

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(submit, range(48)))
        assert {job_id for _, job_id in answers} == {answers[0][1]}
        assert sorted(status for status, _ in answers).count(202) == 1
        assert client.get("/v1/jobs", headers=headers(ALICE)).json()["total"] == 1


def test_claims_expire_after_the_configured_retention(app_settings: Settings) -> None:
    connection = redis.Redis.from_url(app_settings.redis_url)
    try:
        store = IdempotencyStore(connection, Keys(app_settings.redis_prefix), ttl_s=60)
        fingerprint = body_fingerprint(JOB)
        assert not store.claim("alice", "k", fingerprint, "job-1").replay
        assert 55 <= connection.ttl(store.redis_key("alice", "k")) <= 60
        assert store.claim("alice", "k", fingerprint, "job-2").job_id == "job-1"
        with pytest.raises(IdempotencyMismatch):
            store.claim("alice", "k", body_fingerprint({**JOB, "sparsity": 0.5}), "job-3")
        assert connection.ttl(store.redis_key("alice", "missing")) == -2
    finally:
        connection.close()
