"""The prunebench HTTP API: `create_app()` builds it; `app` is the instance uvicorn serves.

Torch-free by construction (the API image has no torch): nothing here imports prunebench.worker.
A test imports this module in a fresh interpreter and checks `torch` is not in sys.modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import prunebench
from prunebench.config import Settings, get_settings
from prunebench.datasets.catalog import CatalogError
from prunebench.jobs.store import connect
from prunebench.service import auth, dashboard, extras
from prunebench.service.problems import install_problem_handlers, problem_response
from prunebench.service.routes import checkpoints, datasets, health, jobs

UPLOAD_PATH = "/v1/checkpoints"
"""The one route with its own (much larger) body limit, enforced while it streams the upload."""


class BodyLimit:
    """413 for JSON bodies over `max_body_bytes`, by Content-Length or while the body streams in."""

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


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        extras.start_background(app)  # webhook deliveries (prunebench.service.webhooks)
        yield
        extras.stop_background(app)
        app.state.redis.close()

    app = FastAPI(
        title="prunebench",
        version=prunebench.__version__,
        summary="Prune YOLOv5 checkpoints and measure what it costs: COCO mAP, speed, size.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # One client = one connection pool for the process; it connects lazily, so the API starts (and
    # /healthz answers) even while Redis is down, and /readyz says so.
    app.state.redis = connect(settings)

    install_problem_handlers(app)
    auth.install(app.state, settings)  # parse PRUNEBENCH_API_KEYS now: a bad value or no keys shows at start

    async def catalog_broken(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(503, f"the dataset catalog is unusable: {exc}", kind="catalog-unusable")

    app.add_exception_handler(CatalogError, catalog_broken)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # After BodyLimit, so outside it: /metrics, job-tagged logs, and CORS outermost of all.
    extras.install(app, settings, app.state.redis)

    app.include_router(health.router)
    app.include_router(checkpoints.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(dashboard.router)
    return app


app = create_app()
