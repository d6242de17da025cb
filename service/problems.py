"""Every error the API sends is `application/problem+json` (RFC 9457): type, title, status, detail.

Route code raises `Problem`; the handlers below also turn FastAPI's own errors (404 no route, 405,
422 validation, bodies too large) and a Redis outage into problems, so a client never has to parse two
error formats, and a Redis outage is a 503 it can retry, never a 500 or a crash.
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://prunebench.dev/problems/"
"""Problem types are stable URIs naming the error kind; they need not resolve."""


class Problem(Exception):
    """An error answer. `kind` becomes the problem `type` (a slug under TYPE_BASE)."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        kind: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or "")
        self.status = status
        self.detail = detail
        self.kind = kind
        self.title = title
        self.headers = headers
        self.extra = extra


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    kind: str | None = None,
    title: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + kind if kind else "about:blank",
        "title": title or _phrase(status),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: a rejected `NaN` sparsity is echoed back as the string "NaN"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("nan", "NaN").replace("inf", "Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


async def _problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status,
        exc.detail,
        kind=exc.kind,
        title=exc.title,
        instance=request.url.path,
        headers=exc.headers,
        **exc.extra,
    )


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != _phrase(exc.status_code) else None
    kinds = {404: "not-found", 405: "method-not-allowed", 413: "too-large"}
    return problem_response(
        exc.status_code,
        detail,
        kind=kinds.get(exc.status_code),
        instance=request.url.path,
        headers=dict(exc.headers) if exc.headers else None,
    )


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _finite(jsonable_encoder(exc.errors(), custom_encoder={Exception: str}))
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
    detail = f"{where}: {first.get('msg')}" if where else str(first.get("msg", "invalid request"))
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return problem_response(
        422, detail, kind="validation", title="Invalid request", instance=request.url.path, errors=errors
    )


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    return problem_response(
        503,
        "the job store (Redis) is unreachable; retry shortly",
        kind="store-unavailable",
        instance=request.url.path,
        headers={"Retry-After": "5"},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the server log (uvicorn logs it); the client gets no internals.
    return problem_response(500, "internal error; see the server log", kind="internal", instance=request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(redis.exceptions.ConnectionError, _redis_down)
    app.add_exception_handler(redis.exceptions.TimeoutError, _redis_down)
    app.add_exception_handler(redis.exceptions.BusyLoadingError, _redis_down)
    app.add_exception_handler(Exception, _unexpected)
