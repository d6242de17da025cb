"""What a process calls itself in job records, logs and results."""

from __future__ import annotations

import os
import socket


def worker_name(device: str | None = None) -> str:
    """`host:pid`, or `host:pid:device` for a worker bound to a device (`any` when it is not bound).

    rq requires worker names unique among live workers; host and pid make them so.
    """
    base = f"{socket.gethostname()}:{os.getpid()}"
    return base if device is None else f"{base}:{device}"
