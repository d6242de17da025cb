"""A real service stack for tests: API and worker processes over a real Redis, and helpers around it.

Nothing is mocked. `Service` runs `prunebench serve` and `prunebench worker` as subprocesses with their own
key prefix, queue and store folder, so tests never see another run's data. Everything is stopped by id.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

from prunebench.config import Settings
from prunebench.infra.processes import Supervisor
from prunebench.infra.redis_server import free_port
from prunebench.jobs.keys import Keys
from tests.support.paths import DEMO_DIR, ROOT


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc): a worker's forked work-horses."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


TERMINAL = ("succeeded", "failed", "canceled")
API_KEYS = {
    "alice": "test-key-alice-0123456789",
    "bob": "test-key-bob-0123456789",
    "admin": "test-key-admin-0123456789",
}
"""The stacks run with authentication on: `Service.http` is alice's; `Service.client(owner)` anyone's."""


def unique_prefix() -> str:
    return f"pbtest-{uuid.uuid4().hex[:10]}"


def drop_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=Keys(prefix).pattern, count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class Service:
    """A running API + worker over a real Redis. `http` talks to the API."""

    def __init__(self, redis_url: str, root: Path, extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.prefix = unique_prefix()
        self.redis_url = redis_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PRUNEBENCH_REDIS_URL": redis_url,
            "PRUNEBENCH_REDIS_PREFIX": self.prefix,
            "PRUNEBENCH_QUEUE_NAME": self.prefix,
            "PRUNEBENCH_STORE_DIR": str(root / "store"),
            "PRUNEBENCH_CACHE_DIR": str(root / "cache"),
            "PRUNEBENCH_BUILTIN_ASSETS": "1",
            "PRUNEBENCH_API_KEYS": ",".join(f"{owner}:{key}" for owner, key in API_KEYS.items()),
            "PRUNEBENCH_LOG_JSON": "0",
            "PRUNEBENCH_JOB_RETRIES": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("PRUNEBENCH_AUTH_DISABLED", None)
        self.env.update(extra_env or {})
        self.api_key = API_KEYS["alice"]
        # Children by name (api, worker, ...), logs in logs/<name>.log, stopped by id (prunebench.infra.processes).
        self.children = Supervisor(self.logs, grace_s=30)
        self.http = self.client("alice")

    @property
    def api(self) -> subprocess.Popen[bytes] | None:
        return self.children.procs.get("api")

    @property
    def worker(self) -> subprocess.Popen[bytes] | None:
        return self.children.procs.get("worker")

    def client(self, owner: str | None) -> httpx.Client:
        """An HTTP client with `owner`'s API key (None: no key at all). The caller closes it."""
        headers = {"Authorization": f"Bearer {API_KEYS[owner]}"} if owner else {}
        return httpx.Client(base_url=self.url, timeout=30, headers=headers)

    @property
    def settings(self) -> Settings:
        return Settings(
            redis_url=self.redis_url, redis_prefix=self.prefix, queue_name=self.prefix, store_dir=self.root / "store"
        )

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start `prunebench <args>` as child `name` (its output in logs/<name>.log)."""
        return self.children.start(name, [sys.executable, "-m", "prunebench.cli", *args], self.env, cwd=ROOT)

    def start_api(self) -> None:
        self._spawn("api", "serve", "--host", "127.0.0.1", "--port", str(self.port))
        self.wait_ready(workers=0)

    def start_worker(self) -> None:
        self._spawn("worker", "worker")
        self.wait_ready(workers=1)

    def kill_api(self) -> None:
        """SIGKILL, not a graceful stop: the API must hold no state a crash could lose."""
        self.children.kill("api")

    def wait_ready(self, workers: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for proc in (self.api, self.worker):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"a service process exited ({proc.args!r}):\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                ready = self.http.get("/readyz")
                if ready.status_code == 200 and ready.json()["workers"] >= workers:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"service not ready within {timeout_s}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            out.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def submit(self, **body: Any) -> dict[str, Any]:
        response = self.http.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        job: dict[str, Any] = response.json()
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def wait(self, job_id: str, until: tuple[str, ...] = TERMINAL, timeout_s: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in until:
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} not {until} within {timeout_s}s: {self.job(job_id)}\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM every child (newest first; SIGKILL after 30 s), then drop this stack's Redis keys."""
        self.http.close()
        self.children.stop()
        drop_prefix(self.redis_url, self.prefix)


def write_catalog(root: Path) -> Path:
    """A catalog with one broken dataset: readable annotations, no images (a deterministic job failure)."""
    (root / "no-images").mkdir(parents=True, exist_ok=True)
    catalog = root / "catalog.json"
    annotations = DEMO_DIR / "shapes-val" / "instances_val2017.json"
    catalog.write_text(json.dumps({"broken-images": {"images": "no-images", "annotations": str(annotations)}}))
    return catalog
