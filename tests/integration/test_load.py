"""A test-sized burst (bench/load_bench.py): concurrent submissions are all accounted for.

Accounting only, never timing: every 202 names a distinct job with a stored record that is queued
(no worker runs here), the listing counts exactly those, and rq's queue holds each exactly once.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis

from prunebench.jobs import rq_adapter
from prunebench.jobs.keys import Keys
from tests.support.paths import ROOT
from tests.support.stack import Service

pytestmark = pytest.mark.slow


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("load_bench", ROOT / "bench" / "load_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_bench"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """An API with no worker: submitted jobs stay queued, so the count is exact."""
    stack = Service(redis_url, Path(tmp_path_factory.mktemp("load")))
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def test_a_burst_of_submissions_is_fully_accounted_for(api: Service) -> None:
    bench = load_bench()
    report = bench.burst(api.url, api.api_key, jobs=200, concurrency=20)
    assert report.statuses == {"202": 200}, report
    assert report.accepted == report.distinct_ids == 200
    assert not report.missing_records and not report.bad_status
    assert report.listed_total == 200 and report.ok

    settings = api.settings
    client = redis.Redis.from_url(settings.redis_url)
    try:
        queued = rq_adapter.waiting_ids(rq_adapter.make_queue(client, settings.queue_name))
        indexed = client.zcard(Keys(settings.redis_prefix).jobs)
    finally:
        client.close()
    assert len(queued) == len(set(queued)) == 200 and indexed == 200

    # The same numbers hold through the polling phase (it only reads): no errors under paced load.
    ids = [j["id"] for j in api.http.get("/v1/jobs", params={"limit": 50}).json()["items"]]
    polled = bench.poll(api.url, api.api_key, ids, rate=100, seconds=1)
    assert polled.requests == 100 and polled.errors == 0
