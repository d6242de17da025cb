"""Logging for the API and the workers: one JSON object per line on stderr, or plain text.

`configure_logging(settings)` installs one stderr handler on the root logger; every library logger
(uvicorn, rq, ours) propagates to it, so all lines of a process share one format. With
PRUNEBENCH_LOG_JSON=1 (the default) each line is a JSON object:

    {"ts": "2026-11-25T06:01:02.345Z", "level": "INFO", "logger": "prunebench.worker",
     "msg": "job 3f..: succeeded", "job_id": "3f.."}

plus `exc` (the formatted traceback) when the record carries an exception. `job_id` is present when
the code that logged knew which job it was working on: the worker entry sets it for the whole job,
the API for each request whose path names a job. It travels in a contextvar, so it needs no
threading through call signatures, and FastAPI's thread pool copies it into sync route handlers.

PRUNEBENCH_LOG_JSON=0 gives `ts level logger [job_id] msg` text lines for humans, with control
characters escaped (a request path cannot forge lines) and tracebacks indented.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import ParamSpec, TextIO, TypeVar

from prunebench.config import Settings

P = ParamSpec("P")
R = TypeVar("R")

job_id_var: ContextVar[str | None] = ContextVar("prunebench_job_id", default=None)
"""The job the current code works on (None outside a job)."""


@contextlib.contextmanager
def bound_job(job_id: str | None) -> Iterator[None]:
    """Tag every log line emitted inside the block with `job_id`."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)


class JobIdFilter(logging.Filter):
    """Copies the contextvar onto each record, where both formatters look for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id_var.get()
        return True


def _timestamp(record: logging.LogRecord) -> str:
    # UTC with milliseconds and a Z: sorts as text and needs no time zone guessing downstream.
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id:
            entry["job_id"] = job_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        # default=str: a log line must never fail because an argument is not JSON-serialisable.
        return json.dumps(entry, ensure_ascii=False, default=str)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_control(text: str) -> str:
    """Control characters (CR, LF, NUL, ..., U+2028) as Python escapes (`\\n`, `\\x00`): one record, one line.

    Request paths reach log messages URL-decoded (`/v1/jobs/x%0A...` is a real newline), so without
    this a client could append forged lines to a plain-text log.
    """
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        job = f" [{escape_control(str(job_id))}]" if job_id else ""
        line = f"{_timestamp(record)} {record.levelname} {record.name}{job} {escape_control(record.getMessage())}"
        if record.exc_info:
            # A traceback keeps its lines, each indented: no continuation line can pass for a record.
            trace = self.formatException(record.exc_info)
            line += "".join(f"\n    {escape_control(part)}" for part in trace.splitlines())
        return line


def configure_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Route every logger of this process to one stderr handler in the configured format.

    Replaces plain stream handlers already on the root logger (basicConfig's, a previous call's;
    not pytest's capture handlers, which are subclasses) and removes the ones uvicorn and rq attach
    to their own loggers, which would otherwise print each line twice.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_json else TextFormatter())
    handler.addFilter(JobIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "rq.worker", "rq.scheduler"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return handler


def tagged_with_job(func: Callable[P, R]) -> Callable[P, R]:
    """Decorator for a function whose first argument is a job id: its log lines carry that id."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        job_id = args[0] if args else kwargs.get("job_id")
        with bound_job(str(job_id) if job_id is not None else None):
            return func(*args, **kwargs)

    return wrapper
