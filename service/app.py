"""The prunebench HTTP API: `create_app()` builds it; `app` is the instance uvicorn serves.

Torch-free by construction (the API image has no torch): nothing here imports prunebench.worker.
import-linter checks that (pyproject.toml), and a test imports this module in a fresh interpreter
and checks `torch` is not in sys.modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import prunebench
from prunebench.config import Settings, get_settings
from prunebench.datasets.catalog import CatalogError
from prunebench.jobs.store import connect
from prunebench.service import auth, dashboard, metrics
from prunebench.service.middleware import install_middleware
from prunebench.service.problems import install_problem_handlers, problem_response
from prunebench.service.routes import checkpoints, datasets, health, jobs, meta
from prunebench.service.webhooks import Deliverer


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Every API replica runs one webhook delivery thread; claims in Redis keep them apart.
    deliverer = Deliverer(app.state.redis, app.state.settings)
    deliverer.start()
    yield
    deliverer.stop()
    app.state.redis.close()


async def _catalog_broken(request: Request, exc: Exception) -> JSONResponse:
    return problem_response(503, f"the dataset catalog is unusable: {exc}", kind="catalog-unusable")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
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
    app.add_exception_handler(CatalogError, _catalog_broken)
    auth.install(app.state, settings)  # parse PRUNEBENCH_API_KEYS now: a bad value or no keys shows at start
    http_metrics = metrics.instruments(app.state.redis, settings)
    app.state.metrics_registry = http_metrics.registry
    install_middleware(app, settings, http_metrics.requests, http_metrics.latency)

    for router in (
        health.router,
        meta.router,
        checkpoints.router,
        datasets.router,
        jobs.router,
        metrics.router,
        dashboard.router,
    ):
        app.include_router(router)
    return app


app = create_app()
