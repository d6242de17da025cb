"""Structured logs: one JSON object per line with the job id from the context, or plain text."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from prunebench.config import Settings
from prunebench.infra.logging_setup import bound_job, configure_logging, tagged_with_job


@pytest.fixture(autouse=True)
def _restore_root_level() -> Iterator[None]:
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def _capture(log_json: bool) -> tuple[io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = configure_logging(Settings(log_json=log_json, log_level="DEBUG"), stream=stream)
    return stream, handler


def test_json_lines_carry_the_job_id_when_known() -> None:
    stream, handler = _capture(log_json=True)
    try:
        log = logging.getLogger("prunebench.test")
        log.info("outside %s", "a job")
        with bound_job("abc123"):
            log.warning("inside")
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("failed")
        # A thread started outside the block does not inherit the id.
        worker = threading.Thread(target=lambda: log.info("other thread"))
        worker.start()
        worker.join()
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [entry["msg"] for entry in lines] == ["outside a job", "inside", "failed", "other thread"]
    assert [entry.get("job_id") for entry in lines] == [None, "abc123", "abc123", None]
    first = lines[0]
    assert set(first) == {"ts", "level", "logger", "msg"}
    assert first["level"] == "INFO" and first["logger"] == "prunebench.test" and first["ts"].endswith("Z")
    assert "ValueError: boom" in lines[2]["exc"]


def test_plain_text_when_json_is_off() -> None:
    stream, handler = _capture(log_json=False)
    try:
        with bound_job("j1"):
            logging.getLogger("prunebench.test").info("hello")
    finally:
        logging.getLogger().removeHandler(handler)
    line = stream.getvalue().strip()
    assert line.endswith("INFO prunebench.test [j1] hello")
    assert not line.startswith("{")


def test_tagged_with_job_binds_the_first_argument_for_the_call_only() -> None:
    stream, handler = _capture(log_json=True)
    log = logging.getLogger("prunebench.test")

    @tagged_with_job
    def run(job_id: str, extra: int = 0) -> int:
        log.info("running")
        return extra + 1

    try:
        assert run("j-42", extra=1) == 2
        log.info("after")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["msg"], e.get("job_id")) for e in lines] == [("running", "j-42"), ("after", None)]
