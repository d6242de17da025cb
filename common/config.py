"""Deployment settings, read from PRUNEBENCH_* environment variables (pydantic-settings).

Shared by the API and the workers; every field is documented in README's configuration table.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRUNEBENCH_", extra="ignore")

    redis_url: str = Field("redis://localhost:6379/0", description="Redis holding jobs, results and the queue.")
    redis_prefix: str = Field("prunebench", description="Prefix of every Redis key prunebench writes.")
    queue_name: str = Field("prunebench", description="rq queue the API enqueues to and workers consume.")
    models_dir: Path | None = Field(None, description="Mounted checkpoints, addressed by file name.")
    datasets: Path | None = Field(None, description="Dataset catalog file (YAML or JSON).")
    store_dir: Path = Field(Path("var/store"), description="Uploads, results and artifacts.")
    builtin_assets: bool = Field(True, description="Offer the bundled demo checkpoint and dataset.")
    cache_dir: Path = Field(
        Path("var/cache"), description="Host-local caches: decoded images, file digests (keep it off NFS)."
    )
    decode_cache_bytes: int = Field(
        8 * 1024**3, ge=0, description="Bound of the decoded-image cache on this host (LRU); 0 disables sharing."
    )

    max_upload_bytes: int = Field(512 * 1024 * 1024, description="Largest checkpoint upload accepted.")
    max_body_bytes: int = Field(64 * 1024, description="Largest JSON request body accepted.")
    http_header_timeout_s: float = Field(
        10.0, gt=0, description="A request's line and headers must arrive within this (else 408 and close)."
    )
    http_body_timeout_s: float = Field(
        30.0, gt=0, description="A request body must keep arriving: no gap longer than this (else close)."
    )
    job_timeout_s: int = Field(6 * 3600, description="A job running longer than this is stopped and failed.")
    job_retries: int = Field(2, description="Retries of a job whose worker died (not of deterministic failures).")
    heartbeat_s: int = Field(5, ge=1, description="How often a busy worker heart-beats (rq job_monitoring_interval).")
    abandoned_after_s: float = Field(
        30.0, gt=0, description="A running job whose worker has not heart-beaten this long is requeued."
    )
    reaper_interval_s: float = Field(2.0, gt=0, description="How often each worker looks for abandoned jobs.")
    idempotency_ttl_s: int = Field(24 * 3600, ge=1, description="How long an Idempotency-Key is remembered.")

    api_keys: str | None = Field(None, description="Comma-separated owner:key pairs; 'admin' owner sees all.")
    auth_disabled: bool = Field(False, description="Run without API keys (local use only).")
    cors_origins: str = Field("", description="Comma-separated origins allowed to call the API from a browser.")

    callback_hosts: str = Field(
        "",
        description="Comma-separated callback_url targets allowed: host (default port), host:port, scheme://host:port.",
    )
    webhook_secret: str | None = Field(None, description="HMAC-SHA256 secret that signs callbacks.")
    webhook_attempts: int = Field(6, ge=1, le=20, description="Delivery attempts per callback before giving up.")
    webhook_backoff_s: float = Field(2.0, gt=0, description="First retry delay; doubles after each failed attempt.")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Timeout of one callback POST.")

    worker_name: str | None = Field(None, description="rq worker name; defaults to host:pid.")
    worker_redis_outage_s: float = Field(
        300.0, ge=0, description="A worker waits this long for Redis to come back before giving up (0: no wait)."
    )
    worker_memory_bytes: int | None = Field(
        None,
        ge=1,
        description="Memory one job may use on this worker (jobs estimated to need more fail); "
        "default: the cgroup limit, else physical RAM.",
    )
    fanout: bool = Field(True, description="Run a sweep's points in parallel on all free workers (rq child jobs).")
    worker_preload: bool = Field(
        True, description="Import torch and the engine's libraries once in the worker, not in every job."
    )
    log_json: bool = Field(True, description="Structured JSON log lines on stderr.")
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _heartbeats_fit(self) -> Self:
        # A worker must get to heart-beat at least twice before its silence means death, or live
        # workers would have their jobs taken away and run twice.
        if self.abandoned_after_s < 2 * self.heartbeat_s:
            raise ValueError("PRUNEBENCH_ABANDONED_AFTER_S must be at least twice PRUNEBENCH_HEARTBEAT_S")
        return self

    @property
    def uploads_dir(self) -> Path:
        return self.store_dir / "checkpoints"

    @property
    def artifacts_dir(self) -> Path:
        return self.store_dir / "artifacts"

    @property
    def digest_memo(self) -> Path:
        return self.cache_dir / "digests.sqlite"

    @property
    def decode_cache_dir(self) -> Path:
        return self.cache_dir / "decoded"

    @property
    def results_dir(self) -> Path:
        return self.store_dir / "results"


@lru_cache
def get_settings() -> Settings:
    return Settings()
