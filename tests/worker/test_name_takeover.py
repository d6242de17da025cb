"""A worker name left behind by a dead worker is taken over at once; one held by a live worker is refused."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from rq import Worker

from prunebench.config import Settings
from prunebench.jobs import rq_adapter
from prunebench.jobs.store import JobStore, connect
from prunebench.worker.name_takeover import WorkerNameTaken, process_gone, take_over_name


@pytest.fixture
def store(settings: Settings) -> Iterator[JobStore]:
    fast = settings.model_copy(update={"heartbeat_s": 1, "abandoned_after_s": 2.0})
    job_store = JobStore(connect(fast), fast)
    yield job_store
    job_store.redis.close()


def register(store: JobStore, name: str, pid: int) -> None:
    """rq's own birth record of a worker `name` on this host, as if process `pid` ran it."""
    Worker([store.queue], name=name, connection=store.redis).register_birth()
    store.redis.hset(rq_adapter.worker_key(name), "pid", str(pid))


def test_a_dead_process_on_this_host_frees_its_name_at_once(store: JobStore) -> None:
    name = f"{store.prefix}-w"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert process_gone(gone.pid)
    register(store, name, gone.pid)
    started = time.monotonic()
    assert take_over_name(store, name, store.settings) == []
    assert time.monotonic() - started < 1.0
    assert rq_adapter.registered_worker(store.redis, name) is None
    # rq now accepts the name.
    Worker([store.queue], name=name, connection=store.redis).register_birth()


def test_a_live_worker_keeps_its_name(store: JobStore) -> None:
    name = f"{store.prefix}-live"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not process_gone(alive.pid)
        register(store, name, alive.pid)
        # It keeps heart-beating while the newcomer waits (a fresh heartbeat each time it looks).
        store.redis.hset(rq_adapter.worker_key(name), "last_heartbeat", "2999-01-01T00:00:00.000000Z")
        with pytest.raises(WorkerNameTaken, match="give each worker its own PRUNEBENCH_WORKER_NAME"):
            take_over_name(store, name, store.settings)
        assert rq_adapter.registered_worker(store.redis, name) is not None
        with pytest.raises(ValueError, match="exists an active worker"):
            Worker([store.queue], name=name, connection=store.redis).register_birth()
    finally:
        alive.kill()
        alive.wait()


def test_a_silent_record_from_another_host_is_dead_after_the_reapers_grace(store: JobStore) -> None:
    name = f"{store.prefix}-far"
    register(store, name, 1)
    store.redis.hset(rq_adapter.worker_key(name), "hostname", "some-other-host")
    started = time.monotonic()
    take_over_name(store, name, store.settings)  # its heartbeat goes stale after abandoned_after_s (2 s)
    assert 1.5 <= time.monotonic() - started < 3.5
    assert rq_adapter.registered_worker(store.redis, name) is None


def test_outage_retry_waits_at_least_the_configured_outage(settings: Settings) -> None:
    from prunebench.jobs.store import outage_retry

    for ride_out_s in (1.0, 10.0, 300.0):
        retry = outage_retry(ride_out_s)
        pauses = [retry._backoff.compute(n) for n in range(1, retry._retries + 1)]
        assert ride_out_s <= sum(pauses) <= ride_out_s + 2 * 2.0, (ride_out_s, sum(pauses))
    down = connect(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}), ride_out_s=1.5)
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        down.ping()
    assert time.monotonic() - started >= 1.5
