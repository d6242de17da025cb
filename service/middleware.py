"""The API's middleware, all in one place, and the order it wraps the app in.

From the outside in (Starlette runs the last-added first):

1. CORS (only when PRUNEBENCH_CORS_ORIGINS is set): preflights are answered before auth or limits.
2. `HttpMetrics`: counts and times every request for `/metrics`, by route template and status.
3. `JobLogContext`: tags the log lines of a request under `/v1/jobs/{id}` with that job id.
4. `BodyLimit`: 413 for JSON bodies over PRUNEBENCH_MAX_BODY_BYTES (uploads have their own limit).
5. `RelativeRedirects`: redirects are relative; they never echo the client's `Host` header.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prunebench.config import Settings
from prunebench.infra.logging_setup import bound_job
from prunebench.service.problems import problem_response

UPLOAD_PATH = "/v1/checkpoints"
"""The one route with its own (much larger) body limit, enforced while it streams the upload."""
JOB_PATH = re.compile(r"^/v1/jobs/([^/]+)")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Method label values kept as sent; any other method string (HTTP allows any token) is "other"."""
OTHER = "other"
UNMATCHED = "unmatched"


def metric_labels(scope: Scope) -> tuple[str, str]:
    """(method, route) labels of a finished request, each from a bounded set.

    The route is the matched route's *template* (Starlette stores the route in the scope, also on a
    method mismatch), never the concrete path; the method is one of HTTP_METHODS or "other". Both are
    client-controlled strings, so anything else would create a new Prometheus series per request.
    """
    method = str(scope.get("method", ""))
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str) or not template:
        template = UNMATCHED
    return (method if method in HTTP_METHODS else OTHER), template


class BodyLimit:
    """413 for JSON bodies over `max_bytes`, by Content-Length or while the body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["path"] == UPLOAD_PATH and scope["method"] == "POST"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = problem_response(
                    413, f"request bodies are limited to {self.max_bytes} bytes", kind="too-large"
                )
                await response(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions from body reading; the problem handler answers.
                    raise StarletteHTTPException(413, f"request bodies are limited to {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


class JobLogContext:
    """Tags every log line of a request whose path names a job (`/v1/jobs/{id}...`) with its id.

    By path rather than in each handler: every route under /v1/jobs/{id} gets it, present or future.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = JOB_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        with bound_job(match.group(1)):
            await self.app(scope, receive, send)


class HttpMetrics:
    """Counts requests and times them (seconds), by method, route template and status (bounded labels)."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app raises before responding

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            method, template = metric_labels(scope)
            self.requests.labels(method, template, str(status)).inc()
            self.latency.labels(method, template).observe(time.perf_counter() - started)


class RelativeRedirects:
    """Rewrites an absolute redirect `Location` (`http://<Host>/path`) to the relative `/path`.

    The API never redirects off-site, so every absolute Location it sends names itself, by the Host.

    Starlette builds the URL of its trailing-slash redirect (`/v1/jobs/` -> `/v1/jobs`) from the
    request's Host header, which the client chooses: a crafted Host would make the API answer with a
    redirect to any site (cache poisoning, phishing links). Relative redirects need no host at all.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def relative(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= int(message["status"]) < 400:
                message["headers"] = [
                    (name, _relative_location(value) if name.lower() == b"location" else value)
                    for name, value in message.get("headers", [])
                ]
            await send(message)

        await self.app(scope, receive, relative)


def _relative_location(value: bytes) -> bytes:
    """`scheme://host[:port]/path?query` -> `/path?query`; a relative Location is kept as it is."""
    parts = urlsplit(value.decode("latin-1"))
    if not parts.scheme and not parts.netloc:
        return value
    path = "/" + parts.path.lstrip("/")  # never `//host`: that would be absolute again
    return (path + (f"?{parts.query}" if parts.query else "")).encode("latin-1")


def cors_origins(settings: Settings) -> list[str]:
    return [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]


def install_middleware(app: FastAPI, settings: Settings, requests: Counter, latency: Histogram) -> None:
    """Wrap `app` in the layers above, innermost first. `requests`/`latency` are /metrics' own."""
    app.add_middleware(RelativeRedirects)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(JobLogContext)
    app.add_middleware(HttpMetrics, requests=requests, latency=latency)
    origins = cors_origins(settings)
    if origins:
        # No credentials mode: the API authenticates with a bearer key header, not cookies.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Location", "Retry-After"],
            max_age=600,
        )
