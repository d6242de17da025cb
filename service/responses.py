"""The problem+json answers every /v1 operation may give, declared for the OpenAPI document.

Routers pass `PROBLEM_RESPONSES` as their `responses=`, so generated clients and schema checkers
(tests/integration/test_schema_fuzz.py) know each error status and its body shape.
"""

from __future__ import annotations

from typing import Any

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}}}


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem("Malformed request"),
    401: _problem("Missing or unknown API key (WWW-Authenticate: Bearer)"),
    404: _problem("No such resource, or not the caller's"),
    409: _problem("The resource's state does not allow this (e.g. not finished, already finished)"),
    410: _problem("Gone: the job was canceled and has no result"),
    413: _problem("Request body or upload too large"),
    415: _problem("Unsupported media type"),
    422: _problem("Invalid request, or a failed job's error"),
    503: _problem("The job store (Redis) is unavailable; retry (Retry-After)"),
}
