"""A real HTTP receiver for webhook tests: http.server on 127.0.0.1 in a thread.

It answers the queued status codes in order (then 200) and records every request it got.
`allowed_port` reads back which port a stack's PRUNEBENCH_CALLBACK_HOSTS allows for receivers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    url: str
    answers: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def target(self) -> str:
        """`127.0.0.1:port`: the PRUNEBENCH_CALLBACK_HOSTS entry that allows this receiver."""
        return self.url.split("/")[2]

    def wait_for(self, count: int, timeout_s: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} webhook requests within {timeout_s}s, got {len(self.requests)}")


@contextmanager
def webhook_receiver(answers: list[int] | None = None, port: int = 0) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1:`port` (0: a free one); a stack's allow-list names a fixed port."""
    receiver = Receiver(url="", answers=list(answers or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.lock:
                status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.requests.append(Received(self.path, dict(self.headers.items()), body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def allowed_port(callback_hosts: str) -> int:
    """The port of the first `127.0.0.1:port` entry of a PRUNEBENCH_CALLBACK_HOSTS value."""
    for entry in callback_hosts.split(","):
        host, _, port = entry.strip().rpartition(":")
        if host == "127.0.0.1" and port.isdigit():
            return int(port)
    raise AssertionError(f"no 127.0.0.1:port entry in {callback_hosts!r}")
