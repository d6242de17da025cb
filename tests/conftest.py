"""Fixtures: a real redis-server for the session, per-test Settings, and the session's service stack.

`redis_url` is a dedicated redis-server on a free port for the whole session (PRUNEBENCH_TEST_REDIS_URL
points the tests at an existing one instead). Helpers live in tests/support/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from prunebench.config import Settings
from prunebench.infra.redis_server import EmbeddedRedis, free_port, redis_answers
from tests.support.stack import Service, drop_prefix, unique_prefix, write_catalog


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("PRUNEBENCH_TEST_REDIS_URL")
    if external:
        if not redis_answers(external):
            pytest.fail(f"PRUNEBENCH_TEST_REDIS_URL={external} does not answer PING")
        yield external
        return
    server = EmbeddedRedis(workdir=tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for in-process tests: the session Redis, a unique prefix and queue, a tmp store."""
    prefix = unique_prefix()
    yield Settings(
        redis_url=redis_url,
        redis_prefix=prefix,
        queue_name=prefix,
        store_dir=tmp_path / "store",
        job_retries=1,
    )
    drop_prefix(redis_url, prefix)


@pytest.fixture(scope="session")
def service(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("service")
    stack = Service(
        redis_url,
        root,
        {
            "PRUNEBENCH_DATASETS": str(write_catalog(root)),
            # Small enough to test 413 cheaply, big enough for the 4 MB demo checkpoint.
            "PRUNEBENCH_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024),
            # CORS and webhooks for tests/integration/test_observability.py; its receivers listen on
            # this one allowed port (tests.support.webhook_receiver.allowed_port reads it back).
            "PRUNEBENCH_CORS_ORIGINS": "https://dash.example.com",
            "PRUNEBENCH_CALLBACK_HOSTS": f"127.0.0.1:{free_port()}",
            "PRUNEBENCH_WEBHOOK_SECRET": "integration-test-secret",
            "PRUNEBENCH_WEBHOOK_BACKOFF_S": "0.5",
        },
    )
    try:
        stack.start_api()
        stack.start_worker()
        yield stack
    finally:
        stack.stop()
