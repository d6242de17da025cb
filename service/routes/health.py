"""Liveness and readiness probes (orchestrators and the quick start poll these)."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter

from prunebench.jobs import rq_adapter
from prunebench.service.deps import RedisDep, SettingsDep
from prunebench.service.problems import Problem

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up and serving; says nothing about Redis (that is /readyz)."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(connection: RedisDep, settings: SettingsDep) -> dict[str, Any]:
    """Ready when Redis answers; reports how many live rq workers consume our queue (0 is allowed:
    jobs queue up until a worker starts)."""
    try:
        connection.ping()
        workers = rq_adapter.live_workers(connection, settings.queue_name)
    except redis.exceptions.RedisError as exc:
        raise Problem(503, f"Redis unreachable: {exc}", kind="store-unavailable", headers={"Retry-After": "5"}) from exc
    return {"status": "ready", "redis": "ok", "workers": workers, "queue": settings.queue_name}
