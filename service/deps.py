"""Injectable dependencies of the routes: settings, Redis-backed stores, the caller's identity.

The app holds one Settings and one Redis client (its connection pool) in `app.state`, made by
`create_app`; routes get them through these functions so tests and later features (API keys) can
override any of them with `app.dependency_overrides`.
"""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from prunebench.checkpoints.store import CheckpointStore
from prunebench.config import Settings
from prunebench.datasets.catalog import DatasetSpec, load_catalog
from prunebench.jobs.store import JobStore
from prunebench.service.auth import bearer, principal_of


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_redis(request: Request) -> redis.Redis:
    connection: redis.Redis = request.app.state.redis
    return connection


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]


def get_job_store(connection: RedisDep, settings: SettingsDep) -> JobStore:
    return JobStore(connection, settings)


def get_checkpoint_store(settings: SettingsDep) -> CheckpointStore:
    return CheckpointStore(settings)


def get_catalog(settings: SettingsDep) -> dict[str, DatasetSpec]:
    # Re-read per request: an operator may edit the catalog without restarting the API.
    return load_catalog(settings.datasets, include_builtin=settings.builtin_assets)


def get_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    """Who is calling: the owner recorded on jobs and uploads, from the request's API key.

    401 problem without a valid key; "local" when PRUNEBENCH_AUTH_DISABLED=1 (see service/auth.py).
    """
    return principal_of(request, credentials)


JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
CheckpointStoreDep = Annotated[CheckpointStore, Depends(get_checkpoint_store)]
CatalogDep = Annotated[dict[str, DatasetSpec], Depends(get_catalog)]
PrincipalDep = Annotated[str, Depends(get_principal)]
