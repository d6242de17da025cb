"""Small hardening rules: strict numbers in job requests, exact `exclude` patterns, relative redirects,
and plain-text logs that a request path cannot forge lines into.

In-process API (TestClient); Redis is unreachable on purpose: every request here is answered before
anything touches it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from prunebench.config import Settings
from prunebench.contract import JobRequest
from prunebench.infra.logging_setup import bound_job, configure_logging, escape_control
from prunebench.service.app import create_app

BASE: dict[str, Any] = {"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": 0.2}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", auth_disabled=True))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "fields",
    [
        {"sparsity": "0.5"},  # a number in a string is not a number
        {"img_size": "640"},
        {"img_size": 640.0},  # nor is a float an integer
        {"img_size": True},  # nor a boolean
        {"batch_size": False},
        {"conf_thres": True},
        {"sparsity": None, "sparsities": [0.1, "0.3"]},
        {"max_images": "8"},
        {"include_dense": "false"},  # and a boolean is a JSON boolean
        {"include_dense": 0},
        {"method": "channel", "round_to": "8"},
        {"finetune": {"dataset": "shapes-val", "epochs": "3"}},
        {"latency": {"batch_sizes": ["1"]}},
        {"export": {"opset": 18.0}},
        {"exclude": ["model.24.*\n"]},  # a trailing newline is not part of a module-name pattern
        {"exclude": ["model.0\r"]},
    ],
)
def test_loosely_typed_values_are_a_422_not_coerced(client: TestClient, fields: dict[str, Any]) -> None:
    response = client.post("/v1/jobs", json={**BASE, **fields})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    with pytest.raises(ValidationError):
        JobRequest.model_validate({**BASE, **fields})


def test_strict_types_still_accept_json_numbers_literals_and_nested_objects() -> None:
    request = JobRequest.model_validate(
        {
            **BASE,
            "sparsity": None,
            "sparsities": [0, 0.5],  # a JSON integer is a valid float
            "method": "channel",
            "importance": "lamp",
            "allocation": "global",
            "recovery": ["bn_recalibration"],
            "scorer": "pycocotools",
            "img_size": 320,
            "conf_thres": 0,
            "include_dense": False,
            "exclude": ["model.24.*", "model.[12].cv?"],
            "latency": {"runtimes": ["torch"], "batch_sizes": [1, 4]},
            "finetune": {"dataset": "shapes-val", "epochs": 2, "lr0": 0.02},
        }
    )
    assert request.sparsities == [0.0, 0.5] and request.conf_thres == 0.0 and request.img_size == 320
    assert request.method == "channel" and request.latency is not None and request.latency.batch_sizes == [1, 4]
    assert request.finetune is not None and request.finetune.epochs == 2
    # What the store writes, it reads back (JSON mode).
    assert JobRequest.model_validate_json(request.model_dump_json()) == request


@pytest.mark.parametrize("path", ["/", "/ui", "/v1/jobs/", "/healthz/", "/v1/meta/?x=1"])
def test_redirects_are_relative_whatever_the_host_header_says(client: TestClient, path: str) -> None:
    response = client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
    assert 300 <= response.status_code < 400, (path, response.status_code)
    location = response.headers["location"]
    assert location.startswith("/") and not location.startswith("//"), location
    assert "evil.example" not in location


def test_a_path_with_encoded_newlines_cannot_forge_plain_text_log_lines() -> None:
    stream = io.StringIO()
    handler = configure_logging(Settings(log_json=False, log_level="INFO"), stream=stream)
    level = logging.getLogger().level
    try:
        # What uvicorn's access log and JobLogContext see for GET /v1/jobs/x%0A2026-...%0D (decoded).
        path = "/v1/jobs/x\n2026-01-01T00:00:00.000Z INFO prunebench FAKE admin logged in\r"
        logging.getLogger("uvicorn.access").info('%s - "GET %s HTTP/1.1" 404', "127.0.0.1", path)
        with bound_job(path.removeprefix("/v1/jobs/")):
            logging.getLogger("prunebench.service").warning("job not found")
        try:
            raise ValueError("bad value\nFAKE traceback line")
        except ValueError:
            logging.getLogger("prunebench.test").exception("failed on %s", "/b\n")
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(level)
    lines = stream.getvalue().splitlines()
    assert lines, "nothing was logged"
    records = [line for line in lines if not line.startswith(" ")]
    assert all(line[:4].isdigit() for line in records), records  # every record line starts with its timestamp
    assert not any("FAKE" in line for line in records if line.startswith(("FAKE", "2026-01-01"))), records
    assert len(records) == 3, records
    assert records[0].endswith(
        '"GET /v1/jobs/x\\n2026-01-01T00:00:00.000Z INFO prunebench FAKE admin logged in\\r HTTP/1.1" 404'
    )
    assert "[x\\n2026-01-01T00:00:00.000Z INFO prunebench FAKE admin logged in\\r] job not found" in records[1]
    assert any(line.startswith("    ") and "FAKE traceback line" in line for line in lines), lines


def test_escape_control_turns_every_control_character_into_an_escape() -> None:
    assert escape_control("a\nb\rc\td\x00e\x1bf\x7fg\u2028h") == "a\\nb\\rc\\td\\x00e\\x1bf\\x7fg\\u2028h"
    assert escape_control("plain /v1/jobs/abc ünïcode") == "plain /v1/jobs/abc ünïcode"
