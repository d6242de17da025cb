"""Instances files are validated when the API loads the catalog: before any job, never after inference."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prunebench.config import Settings
from prunebench.service.app import create_app
from tests.support.paths import DEMO_DIR, ROOT

KEY = "dataset-check-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
CASES = ROOT / "tests" / "fixtures" / "cases" / "datasets"


@pytest.fixture
def client(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    images = DEMO_DIR / "shapes-val" / "images"
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "".join(
            f"{name}:\n  images: {images}\n  annotations: {CASES / file}\n"
            for name, file in (("dup-ids", "a_duplicate_image_ids.json"), ("no-iscrowd", "no_iscrowd.json"))
        )
    )
    app_settings = settings.model_copy(
        update={"api_keys": f"tester:{KEY}", "auth_disabled": False, "datasets": catalog, "models_dir": DEMO_DIR}
    )
    with TestClient(create_app(app_settings)) as test_client:
        yield test_client


def test_listing_shows_what_loading_normalised_and_leaves_out_unusable_files(client: TestClient) -> None:
    items = {d["name"]: d for d in client.get("/v1/datasets", headers=AUTH).json()["items"]}
    assert "dup-ids" not in items
    assert items["no-iscrowd"]["warnings"] == ["550 annotations have no 'iscrowd': taken as 0 (not a crowd)"]
    assert items["shapes-val"]["warnings"] == []


def test_an_unusable_dataset_is_422_naming_the_duplicate_ids(client: TestClient) -> None:
    response = client.get("/v1/datasets/dup-ids", headers=AUTH)
    assert response.status_code == 422
    assert "duplicate image ids 1, 2, 3, 4, 5 and 5 more" in response.json()["detail"]


def test_a_job_on_an_unusable_dataset_is_refused_before_queueing(client: TestClient) -> None:
    job: dict[str, Any] = {"checkpoint": "yolov5n_shapes.pt", "dataset": "dup-ids", "sparsity": 0.2}
    response = client.post("/v1/jobs", json=job, headers=AUTH)
    assert response.status_code == 422, response.text
    assert "duplicate image ids" in response.json()["detail"]
