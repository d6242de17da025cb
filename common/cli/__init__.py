"""The `prunebench` command: serve, worker, demo, eval, plus the HTTP client commands.

The CLI is the composition root: the one place that puts the service, the worker and the engine together.

- `prunebench serve`  the API (uvicorn); SIGTERM/Ctrl-C shut it down gracefully  (cli.server)
- `prunebench worker` one rq worker bound to one device (prunebench.worker.runner) (cli.server)
- `prunebench demo`   the quick start: Redis + API + worker as subprocesses, a sweep job over real
                      HTTP, progress on stderr, a metrics table on stdout          (cli.demo)
- `prunebench eval`   one job in this process, no service                          (cli.evaluate)
- submit/status/result/cancel/upload/jobs: HTTP client commands                    (cli.client_commands)

Tables and progress text come from cli.render. Only `eval` (and the worker's forked work-horse)
import torch, inside the command; import-linter keeps every other CLI module off the engine.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from prunebench.cli.client_commands import add_client_commands
from prunebench.cli.demo import add_demo_command
from prunebench.cli.evaluate import add_eval_command
from prunebench.cli.server import add_server_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunebench", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_server_commands(sub)
    add_demo_command(sub)
    add_eval_command(sub)
    add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
