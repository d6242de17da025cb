"""Cross-cutting parts of the API that are not routes: CORS, /metrics, job-tagged logs, webhooks.

`install(app, settings)` is called by create_app after its own middleware; `start_background` and
`stop_background` run in its lifespan. Kept here so app.py stays a short list of what the API is.
"""

from __future__ import annotations

import re

import redis
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from prunebench.config import Settings
from prunebench.infra.logging_setup import bound_job
from prunebench.service.metrics import install_metrics
from prunebench.service.problems import Problem
from prunebench.service.webhooks import CallbackRefused, Deliverer, check_callback_url

JOB_PATH = re.compile(r"^/v1/jobs/([^/]+)")


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


def cors_origins(settings: Settings) -> list[str]:
    return [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]


def install(app: FastAPI, settings: Settings, connection: redis.Redis) -> None:
    app.add_middleware(JobLogContext)
    install_metrics(app, connection, settings)
    origins = cors_origins(settings)
    if origins:
        # Added last, so outermost: preflights are answered before auth or body limits see them.
        # No credentials mode: the API authenticates with a bearer key header, not cookies.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Location", "Retry-After"],
            max_age=600,
        )


def require_allowed_callback(url: str | None, settings: Settings) -> None:
    """422 at submit for a callback_url this deployment will not call (see prunebench.service.webhooks)."""
    if url is None:
        return
    try:
        check_callback_url(url, settings)
    except CallbackRefused as exc:
        raise Problem(422, str(exc), kind="callback-refused") from exc


def start_background(app: FastAPI) -> None:
    """The webhook delivery thread of this API process (every replica runs one; claims keep them apart)."""
    deliverer = Deliverer(app.state.redis, app.state.settings)
    deliverer.start()
    app.state.webhook_deliverer = deliverer


def stop_background(app: FastAPI) -> None:
    deliverer: Deliverer | None = getattr(app.state, "webhook_deliverer", None)
    if deliverer is not None:
        deliverer.stop()
