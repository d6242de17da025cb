"""`prunebench demo`: the quick start, end to end over real processes.

Redis (the configured one when it answers, else an embedded redis-server), the API and one worker
as subprocesses on 127.0.0.1, the bundled checkpoint pruned at 0.2 and 0.3 (plus the dense baseline)
over real HTTP, progress on stderr, the metrics table on stdout. On a shared Redis the demo uses its
own key prefix and queue, and removes both when it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from prunebench.cli.arguments import say
from prunebench.cli.render import format_result_table, progress_line
from prunebench.contract import TERMINAL_STATUSES
from prunebench.infra.processes import ChildExited, Supervisor

DEMO_SPARSITIES = [0.2, 0.3]
"""With the dense baseline the demo evaluates 0, 0.2 and 0.3: the bundled reference's points."""
READY_TIMEOUT_S = 90.0


def cmd_demo(args: argparse.Namespace) -> int:
    from prunebench.config import get_settings

    settings = get_settings()
    tag = f"prunebench-demo-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="prunebench-demo-") as tmp, _demo_redis(settings.redis_url) as redis_url:
        children = Supervisor(Path(tmp) / "logs")
        try:
            port = args.port or _free_port()
            _start_stack(children, _demo_env(redis_url, tag, Path(tmp)), port, args.device)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                say("starting the API and a worker ...")
                wait_ready(http, children)
                job_id = _submit(http, args.eval_device)
                result = _result_when_done(http, job_id, children)
            print(json.dumps(result, indent=2) if args.json else format_result_table(result))
            return 0
        except (RuntimeError, httpx.HTTPError) as exc:
            say(f"demo failed: {exc}")
            return 1
        except KeyboardInterrupt:
            say("interrupted")
            return 130
        finally:
            say("shutting down ...")
            children.stop()
            if redis_url == settings.redis_url:
                _drop_demo_keys(redis_url, tag)


@contextlib.contextmanager
def _demo_redis(url: str) -> Iterator[str]:
    """The configured Redis when it answers PING, else an embedded one for the demo's lifetime."""
    from prunebench.infra.redis_server import EmbeddedRedis, redis_answers

    if redis_answers(url):
        say(f"using Redis at {url}")
        yield url
        return
    say(f"no Redis answers at {url}; starting an embedded redis-server")
    with EmbeddedRedis() as server:
        say(f"embedded Redis at {server.url}")
        yield server.url


def _free_port() -> int:
    from prunebench.infra.redis_server import free_port

    return free_port()


def _demo_env(redis_url: str, tag: str, tmp: Path) -> dict[str, str]:
    """The API's and worker's environment: own prefix, queue and store; no auth; 127.0.0.1 only."""
    env = {
        **os.environ,
        "PRUNEBENCH_REDIS_URL": redis_url,
        # Own prefix and queue: a deployment sharing this Redis never sees, or runs, the demo's job.
        "PRUNEBENCH_REDIS_PREFIX": tag,
        "PRUNEBENCH_QUEUE_NAME": tag,
        "PRUNEBENCH_STORE_DIR": str(tmp / "store"),
        "PRUNEBENCH_BUILTIN_ASSETS": "1",
        # Everything listens on 127.0.0.1 only, for the demo's lifetime.
        "PRUNEBENCH_AUTH_DISABLED": "1",
        "PRUNEBENCH_LOG_JSON": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PRUNEBENCH_API_KEYS", None)
    return env


def _start_stack(children: Supervisor, env: dict[str, str], port: int, device: str | None) -> None:
    me = [sys.executable, "-m", "prunebench.cli"]
    children.start("api", [*me, "serve", "--host", "127.0.0.1", "--port", str(port)], env)
    children.start("worker", [*me, "worker", *(["--device", device] if device else [])], env)


def wait_ready(http: httpx.Client, children: Supervisor, workers: int = 1, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until /readyz counts ``workers`` workers; raises RuntimeError when a child exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check(children)
        with contextlib.suppress(httpx.HTTPError):
            ready = http.get("/readyz")
            if ready.status_code == 200 and ready.json().get("workers", 0) >= workers:
                return
        time.sleep(0.3)
    raise RuntimeError(f"the API and {workers} worker(s) did not become ready in time")


def _check(children: Supervisor) -> None:
    try:
        children.check()
    except ChildExited as exc:
        raise RuntimeError(str(exc)) from exc


def _submit(http: httpx.Client, eval_device: str) -> str:
    """Submit the demo sweep on the bundled checkpoint and dataset; returns the job id."""
    request = {
        "checkpoint": "yolov5n_shapes.pt",
        "dataset": "shapes-val",
        "sparsities": DEMO_SPARSITIES,
        "img_size": 320,
        "batch_size": 32,
        "device": eval_device,
    }
    submitted = http.post("/v1/jobs", json=request)
    if submitted.status_code != 202:
        raise RuntimeError(f"submit refused ({submitted.status_code}): {submitted.text}")
    job_id = str(submitted.json()["id"])
    say(f"job {job_id}: sweep 0 (dense), {', '.join(map(str, DEMO_SPARSITIES))}")
    return job_id


def _result_when_done(http: httpx.Client, job_id: str, children: Supervisor) -> dict[str, Any]:
    """Follow the job's progress on stderr; its JobResult once it succeeded, else RuntimeError."""
    job = _follow(http, job_id, children)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['status']}: {job.get('error')}\n{children.tail('worker')}")
    result: dict[str, Any] = http.get(f"/v1/jobs/{job_id}/result").raise_for_status().json()
    return result


def _follow(http: httpx.Client, job_id: str, children: Supervisor, poll_s: float = 0.5) -> dict[str, Any]:
    last = ""
    while True:
        _check(children)
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        line = progress_line(job)
        if line != last:
            say(line)
            last = line
        if job["status"] in TERMINAL_STATUSES:
            return job
        time.sleep(poll_s)


def _drop_demo_keys(url: str, prefix: str) -> None:
    """Leave a shared Redis as the demo found it: our records, and rq's keys for our queue and jobs."""
    import redis

    from prunebench.infra.redis_values import text
    from prunebench.jobs import rq_adapter
    from prunebench.jobs.keys import Keys

    keys = Keys(prefix)
    with contextlib.suppress(redis.exceptions.RedisError):
        client = redis.Redis.from_url(url)
        job_ids = [text(raw) for raw in client.zrange(keys.jobs, 0, -1)]
        ours = list(client.scan_iter(match=keys.pattern, count=500))
        if ours:
            client.delete(*ours)
        # The demo's queue is named after its prefix; rq keys its jobs by our job ids.
        rq_adapter.forget_queue(client, prefix, job_ids)
        client.close()


def add_demo_command(sub: Any) -> None:
    demo = sub.add_parser("demo", help="quick start: Redis + API + worker, a sweep job, a metrics table")
    demo.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    demo.add_argument("--device", default=None, help="GPU index for the demo worker")
    demo.add_argument("--eval-device", default="auto", help="job device: auto, cpu, cuda, cuda:N")
    demo.add_argument("--json", action="store_true", help="print the JobResult JSON instead of the table")
    demo.set_defaults(func=cmd_demo)
