"""Header and body read timeouts for `prunebench serve`: slow or stalled clients cannot hold connections.

uvicorn's only read timeout is `timeout_keep_alive`, between two requests. A client that opens a
connection and sends its request line and headers a byte at a time (or never finishes them), or
stops half-way through a body, holds the connection, its buffers and, for a body, the request's task
forever ("slowloris"). `TimedH11Protocol` is uvicorn's own h11 protocol with two deadlines:

- **header timeout** (`PRUNEBENCH_HTTP_HEADER_TIMEOUT_S`): a request's line and headers must be
  complete within this many seconds of the connection opening, or of the first byte of a later
  request on a kept-alive connection. Else the server answers `408 Request Timeout` and closes.
- **body timeout** (`PRUNEBENCH_HTTP_BODY_TIMEOUT_S`): while a request body is incomplete, the
  client must send some of it at least this often (an idle timeout, so a large upload over a slow
  but steady link is fine). Else the connection is closed; the app sees a client disconnect. Time
  the server itself stops reading (flow control while the app is busy) does not count.

The same values as nginx's `client_header_timeout` / `client_body_timeout` (60 s) are too lax for an
API whose requests are a few kB; the defaults here are 10 s and 30 s.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class TimedH11Protocol(H11Protocol):
    """uvicorn's H11Protocol plus the header and body deadlines above (class attributes, seconds)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, self._headers_timed_out)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle until the next request's first byte: uvicorn's keep-alive timer owns that wait.
        self._disarm()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """After each chunk: which deadline applies now that h11 has parsed what it could."""
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._read_timer is None and self.conn.trailing_data[0]:
                # The first bytes of a request on a kept-alive connection: its headers' deadline starts.
                self._arm(self.header_timeout_s, self._headers_timed_out)
        elif state is h11.SEND_BODY:
            self._arm(self.body_timeout_s, self._body_timed_out)  # restarted by every chunk
        else:
            self._disarm()

    def _arm(self, delay_s: float, callback: Any) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(delay_s, callback)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _headers_timed_out(self) -> None:
        self._read_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers took over %.0f s", self.header_timeout_s)
            self.transport.write(TIMEOUT_408)
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._read_timer = None
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            return
        if self.flow.read_paused:
            # The server stopped reading (the app has not consumed the body yet): not the client's fault.
            self._arm(self.body_timeout_s, self._body_timed_out)
            return
        self.logger.info("closing a connection whose request body stalled for %.0f s", self.body_timeout_s)
        self.transport.close()


def timed_protocol(header_timeout_s: float, body_timeout_s: float) -> type[TimedH11Protocol]:
    """A TimedH11Protocol class with these deadlines, for `uvicorn.run(http=...)`."""
    return type(
        "TimedH11Protocol",
        (TimedH11Protocol,),
        {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s},
    )
