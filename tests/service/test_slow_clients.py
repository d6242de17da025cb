"""Slow or stalled clients are cut off: header and body read timeouts of the API's HTTP server.

A real uvicorn server (TimedH11Protocol, short timeouts) on a loopback port in a thread, a tiny ASGI
app that echoes the request body's size, and raw sockets that misbehave as slowloris clients do.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from prunebench.infra.redis_server import free_port
from prunebench.service.slow_clients import timed_protocol

HEADER_S = 0.6
BODY_S = 0.6


async def echo_size(scope: Scope, receive: Receive, send: Send) -> None:
    """200 with the body's length once the whole body arrived."""
    assert scope["type"] == "http"
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    chosen = free_port()
    config = uvicorn.Config(
        echo_size, host="127.0.0.1", port=chosen, http=timed_protocol(HEADER_S, BODY_S), log_level="warning",
        lifespan="off", timeout_keep_alive=30,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield chosen
    server.should_exit = True
    thread.join(timeout=10)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when (monotonic) it closed."""
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received, time.monotonic()


def read_response(sock: socket.socket) -> bytes:
    """One response: its head and its Content-Length bytes of body."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(4096)
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def test_headers_that_never_finish_get_a_408_and_the_connection_closed(port: int) -> None:
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        answer, closed = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert HEADER_S * 0.9 <= closed - started < HEADER_S + 2.0


def test_headers_trickled_a_byte_at_a_time_are_cut_off_at_the_header_deadline(port: int) -> None:
    with connect(port) as sock:
        started = time.monotonic()
        closed_early = False
        for byte in b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed_early = True
                break
            time.sleep(0.05)  # a byte every 50 ms: never idle as long as the timeout
            if time.monotonic() - started > HEADER_S + 2.0:
                break
        answer = b"" if closed_early else read_until_closed(sock)[0]
    assert time.monotonic() - started < HEADER_S + 2.5
    assert closed_early or answer.startswith(b"HTTP/1.1 408 ")


def test_a_connection_that_sends_nothing_is_closed_too(port: int) -> None:
    with connect(port) as sock:
        started = time.monotonic()
        answer, closed = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and closed - started < HEADER_S + 2.0


def test_a_stalled_body_is_closed_after_the_body_timeout(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        stalled = time.monotonic()
        answer, closed = read_until_closed(sock)
    assert answer == b""  # no response: the app saw a disconnect
    assert BODY_S * 0.9 <= closed - stalled < BODY_S + 2.0


def test_a_slow_but_steady_body_and_keep_alive_requests_are_served(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
        for _ in range(8):  # 8 bytes over ~1.6 s: longer than either timeout in total, never idle that long
            time.sleep(0.2)
            sock.sendall(b"y")
        first = read_response(sock)
        assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"\r\n\r\n8")
        time.sleep(HEADER_S * 1.5)  # idle between requests: the keep-alive timeout (30 s) governs, not ours
        sock.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        second = read_response(sock)
    assert second.startswith(b"HTTP/1.1 200 ") and second.endswith(b"\r\n\r\n0")


@pytest.mark.slow
def test_prunebench_serve_applies_the_configured_header_timeout(tmp_path: Path) -> None:
    chosen = free_port()
    env = {
        **os.environ,
        "PRUNEBENCH_REDIS_URL": "redis://127.0.0.1:1/0",  # not needed for /healthz or a timeout
        "PRUNEBENCH_AUTH_DISABLED": "1",
        "PRUNEBENCH_STORE_DIR": str(tmp_path / "store"),
        "PRUNEBENCH_HTTP_HEADER_TIMEOUT_S": "1",
    }
    argv = [sys.executable, "-m", "prunebench.cli", "serve", "--host", "127.0.0.1", "--port", str(chosen)]
    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{chosen}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        with connect(chosen) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the blank line never comes
            answer, closed = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408 ") and 0.9 <= closed - started < 3.0
    finally:
        server.terminate()
        server.wait(timeout=30)
