"""Child processes started for a while and stopped for sure: the demo's API and worker, the tests'.

A `Supervisor` starts each child with its output in `logs/<name>.log`, notices when one exits early
(`check`), shows the end of its log, and stops them all in reverse order, by process id: SIGTERM,
then SIGKILL after `grace_s` seconds.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from types import TracebackType


class ChildExited(RuntimeError):
    """A supervised process ended while it should still run; the message holds its log's end."""


class Supervisor:
    """Subprocesses by name, with their logs in `logs`; a context manager that stops them on exit."""

    def __init__(self, logs: Path, grace_s: float = 20.0) -> None:
        self.logs = logs
        self.grace_s = grace_s
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `argv` as child `name` (stdout and stderr appended to logs/<name>.log)."""
        with (self.logs / f"{name}.log").open("ab") as log:
            # The child holds its own descriptor; ours closes with the `with`.
            proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.procs[name] = proc
        return proc

    def check(self) -> None:
        """Raise ChildExited when a child has ended."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ChildExited(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        """The last `lines` lines of child `name`'s log ('' before it wrote any)."""
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def kill(self, name: str) -> None:
        """SIGKILL one child at once (fault tests: a crash, not a graceful stop) and forget it."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self, name: str | None = None) -> None:
        """SIGTERM the child `name` (all children when None, newest first), SIGKILL after `grace_s`."""
        names = [name] if name is not None else list(reversed(self.procs))
        for each in names:
            if self.procs[each].poll() is None:
                self.procs[each].send_signal(signal.SIGTERM)
        for each in names:
            proc = self.procs.pop(each)
            try:
                proc.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
