"""How the engine reports progress and learns it should stop, without knowing about Redis or rq."""

from __future__ import annotations

from typing import Protocol

from prunebench.contract import Progress


class JobCanceled(Exception):
    """Raised inside the engine when the job was canceled; the pipeline stops at the next batch."""


class Reporter(Protocol):
    def progress(self, progress: Progress) -> None:
        """Record where the job is; called at most a few times per second."""

    def should_stop(self) -> bool:
        """True once the job was canceled; the engine then raises JobCanceled."""


class NullReporter:
    """For local runs (`prunebench eval`, tests, benchmarks): prints nothing, never stops."""

    def __init__(self) -> None:
        self.last: Progress | None = None

    def progress(self, progress: Progress) -> None:
        self.last = progress

    def should_stop(self) -> bool:
        return False


def one_line(exc: BaseException) -> str:
    """`ExceptionClass: message` on one line, for the job record and the API."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
