"""`prunebench serve` (the API under uvicorn) and `prunebench worker` (one rq worker).

Neither imports torch: the API image has none, and a worker parent must not initialise CUDA before
it forks its work-horses (prunebench.worker.runner explains why).
"""

from __future__ import annotations

import argparse
from typing import Any


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from prunebench.config import get_settings
    from prunebench.infra.logging_setup import configure_logging
    from prunebench.service.slow_clients import timed_protocol

    settings = get_settings()
    configure_logging(settings)
    uvicorn.run(
        "prunebench.service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        # uvicorn's h11 protocol with header and body read timeouts: a slow client cannot hold a connection.
        http=timed_protocol(settings.http_header_timeout_s, settings.http_body_timeout_s),
        log_level=settings.log_level.lower(),
        log_config=None,  # keep configure_logging's one handler: uvicorn's lines as JSON too
        # Let in-flight requests finish on SIGTERM, but not forever.
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from prunebench.worker.runner import run_worker

    return run_worker(args.device, args.burst)


def add_server_commands(sub: Any) -> None:
    """Register `serve` and `worker` on an argparse subparsers object."""
    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run one rq worker bound to one device")
    worker.add_argument("--device", default=None, help="GPU index this worker owns (sets CUDA_VISIBLE_DEVICES)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.set_defaults(func=cmd_worker)
