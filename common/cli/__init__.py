"""The `prunebench` command: serve, worker, demo, eval, plus the HTTP client commands.

- `prunebench serve`  the API (uvicorn); SIGTERM/Ctrl-C shut it down gracefully.
- `prunebench worker` one rq worker bound to one device (see prunebench.worker.runner).
- `prunebench demo`   the quick start: Redis (existing or embedded) + API + worker as subprocesses,
                      a sweep job over real HTTP, progress on stderr, a metrics table on stdout.
- `prunebench eval`   one job in this process, no service (prunebench.worker.engine.pipeline.run_local).
- submit/status/result/cancel/upload/jobs: HTTP client commands (prunebench.cli.client_commands).

Only `eval` and `worker`'s horse need torch; it is imported inside those commands, never here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from prunebench.contract import SCORER_NAMES, Progress

DEMO_SPARSITIES = [0.2, 0.3]
"""With the dense baseline the demo evaluates 0, 0.2 and 0.3: the bundled reference's points."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- serve / worker ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from prunebench.config import get_settings
    from prunebench.infra.logging_setup import configure_logging

    configure_logging(get_settings())
    uvicorn.run(
        "prunebench.service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=get_settings().log_level.lower(),
        log_config=None,  # keep configure_logging's one handler: uvicorn's lines as JSON too
        # Let in-flight requests finish on SIGTERM, but not forever.
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from prunebench.worker.runner import run_worker

    return run_worker(args.device, args.burst)


# -- demo -------------------------------------------------------------------------------------------


def format_table(result: dict[str, Any]) -> str:
    from prunebench.cli.client_commands import format_result_table

    return format_result_table(result)


def progress_line(job: dict[str, Any]) -> str:
    progress = Progress.model_validate(job.get("progress") or {})
    parts = [f"{job.get('status', '?'):9s}", f"{progress.percent:5.1f}%", progress.stage]
    if progress.runs_total:
        parts.append(f"run {min(progress.run_index + 1, progress.runs_total)}/{progress.runs_total}")
    if progress.sparsity is not None:
        parts.append(f"sparsity {progress.sparsity:.2f}")
    if progress.images_total:
        parts.append(f"{progress.images_done}/{progress.images_total} images")
    return "  ".join(parts)


class _Children:
    """Subprocesses the demo starts; stopped in reverse order, by process id, on exit."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()  # the child holds its own descriptor
        self.procs.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _free_port() -> int:
    from prunebench.infra.redis_server import free_port

    return free_port()


def _wait_ready(http: httpx.Client, children: _Children, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children.check()
        with contextlib.suppress(httpx.HTTPError):
            ready = http.get("/readyz")
            if ready.status_code == 200 and ready.json().get("workers", 0) >= 1:
                return
        time.sleep(0.3)
    raise RuntimeError("the API and worker did not become ready in time")


@contextlib.contextmanager
def _demo_redis(url: str) -> Iterator[str]:
    from prunebench.infra.redis_server import EmbeddedRedis, redis_answers

    if redis_answers(url):
        _say(f"using Redis at {url}")
        yield url
        return
    _say(f"no Redis answers at {url}; starting an embedded redis-server")
    with EmbeddedRedis() as server:
        _say(f"embedded Redis at {server.url}")
        yield server.url


def cmd_demo(args: argparse.Namespace) -> int:
    from prunebench.config import get_settings

    settings = get_settings()
    tag = f"prunebench-demo-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="prunebench-demo-") as tmp, _demo_redis(settings.redis_url) as redis_url:
        logs = Path(tmp) / "logs"
        logs.mkdir()
        port = args.port or _free_port()
        env = {
            **os.environ,
            "PRUNEBENCH_REDIS_URL": redis_url,
            # Own prefix and queue: a deployment sharing this Redis never sees, or runs, the demo's job.
            "PRUNEBENCH_REDIS_PREFIX": tag,
            "PRUNEBENCH_QUEUE_NAME": tag,
            "PRUNEBENCH_STORE_DIR": str(Path(tmp) / "store"),
            "PRUNEBENCH_BUILTIN_ASSETS": "1",
            # Everything listens on 127.0.0.1 only, for the demo's lifetime.
            "PRUNEBENCH_AUTH_DISABLED": "1",
            "PRUNEBENCH_LOG_JSON": "0",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("PRUNEBENCH_API_KEYS", None)
        children = _Children(logs)
        me = [sys.executable, "-m", "prunebench.cli"]
        try:
            children.start("api", [*me, "serve", "--host", "127.0.0.1", "--port", str(port)], env)
            children.start("worker", [*me, "worker", *(["--device", args.device] if args.device else [])], env)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                _say("starting the API and a worker ...")
                _wait_ready(http, children)
                request = {
                    "checkpoint": "yolov5n_shapes.pt",
                    "dataset": "shapes-val",
                    "sparsities": DEMO_SPARSITIES,
                    "img_size": 320,
                    "batch_size": 32,
                    "device": args.eval_device,
                }
                submitted = http.post("/v1/jobs", json=request)
                if submitted.status_code != 202:
                    raise RuntimeError(f"submit refused ({submitted.status_code}): {submitted.text}")
                job_id = submitted.json()["id"]
                _say(f"job {job_id}: sweep 0 (dense), {', '.join(map(str, DEMO_SPARSITIES))}")
                job = _follow(http, job_id, children)
                if job["status"] != "succeeded":
                    raise RuntimeError(f"job {job['status']}: {job.get('error')}\n{children.tail('worker')}")
                result = http.get(f"/v1/jobs/{job_id}/result").raise_for_status().json()
            if args.json:
                print(json.dumps(result, indent=2))
            else:
                print(format_table(result))
            return 0
        except (RuntimeError, httpx.HTTPError) as exc:
            _say(f"demo failed: {exc}")
            return 1
        except KeyboardInterrupt:
            _say("interrupted")
            return 130
        finally:
            _say("shutting down ...")
            children.stop()
            if redis_url == settings.redis_url:
                _drop_demo_keys(redis_url, tag)


def _follow(http: httpx.Client, job_id: str, children: _Children, poll_s: float = 0.5) -> dict[str, Any]:
    last = ""
    while True:
        children.check()
        job = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        line = progress_line(job)
        if line != last:
            _say(line)
            last = line
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(poll_s)


def _drop_demo_keys(url: str, prefix: str) -> None:
    """Leave a shared Redis as the demo found it: our records, and rq's keys for our queue and jobs."""
    import redis

    with contextlib.suppress(redis.exceptions.RedisError):
        client = redis.Redis.from_url(url)
        # The demo's queue is named after its prefix; rq keys its jobs by our job ids.
        job_ids = [raw.decode() for raw in client.zrange(f"{prefix}:jobs", 0, -1)]
        for pattern in (f"{prefix}:*", f"rq:*{prefix}*", *(f"rq:*{job_id}*" for job_id in job_ids)):
            keys = list(client.scan_iter(match=pattern, count=500))
            if keys:
                client.delete(*keys)
        client.srem("rq:queues", f"rq:queue:{prefix}")
        client.close()


# -- eval -------------------------------------------------------------------------------------------


class _StderrReporter:
    """Progress of a local run on stderr, at most twice a second."""

    def __init__(self) -> None:
        self._last = 0.0

    def progress(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._last >= 0.5 or progress.stage == "done":
            self._last = now
            _say(progress_line({"status": "running", "progress": progress.model_dump()}))

    def should_stop(self) -> bool:
        return False


def parse_sparsities(text: str) -> list[float]:
    try:
        return [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from exc


def cmd_eval(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from prunebench.config import get_settings
    from prunebench.contract import JobRequest
    from prunebench.datasets.catalog import CatalogError, DatasetSpec, UnknownDataset, load_catalog, resolve_dataset

    settings = get_settings()
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        _say(f"no such checkpoint file: {checkpoint}")
        return 2
    try:
        if args.images or args.annotations:
            if not (args.images and args.annotations):
                _say("--images and --annotations go together")
                return 2
            dataset = DatasetSpec(
                name=Path(args.images).name or "local",
                images_dir=Path(args.images).resolve(),
                annotations=Path(args.annotations).resolve(),
                category_map=args.category_map,
            )
        else:
            dataset = resolve_dataset(load_catalog(settings.datasets, settings.builtin_assets), args.dataset)
    except UnknownDataset as exc:
        _say(f"unknown dataset {exc.name!r}")
        return 2
    except CatalogError as exc:
        _say(str(exc))
        return 2
    fields: dict[str, Any] = {
        "checkpoint": checkpoint.name,
        "dataset": dataset.name,
        "method": args.method,
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "device": args.device,
        "max_images": args.max_images,
        "scorer": args.scorer,
        "include_dense": not args.no_dense,
        "save_models": args.save_dir is not None,
    }
    if args.sparsity is not None:
        fields["sparsity"] = args.sparsity
    else:
        fields["sparsities"] = args.sparsities
    try:
        request = JobRequest.model_validate(fields)
    except ValidationError as exc:
        _say(f"invalid job: {exc}")
        return 2

    from prunebench.datasets.digests import DigestMemo
    from prunebench.worker.engine.decode_cache import DecodeCache
    from prunebench.worker.engine.pipeline import run_local

    # The host's decode cache, as a worker would use it: a second run on the same images decodes nothing.
    cache = DecodeCache(settings.decode_cache_dir, settings.decode_cache_bytes, DigestMemo(settings.digest_memo))
    try:
        result = run_local(request, checkpoint, dataset, _StderrReporter(), args.save_dir, decode_cache=cache)
    except Exception as exc:
        from prunebench.worker.entry import one_line

        _say(f"evaluation failed: {one_line(exc)}")
        return 1
    data = result.model_dump(mode="json")
    print(json.dumps(data, indent=2) if args.json else format_table(data))
    return 0


# -- parser -----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunebench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run one rq worker bound to one device")
    worker.add_argument("--device", default=None, help="GPU index this worker owns (sets CUDA_VISIBLE_DEVICES)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.set_defaults(func=cmd_worker)

    demo = sub.add_parser("demo", help="quick start: Redis + API + worker, a sweep job, a metrics table")
    demo.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    demo.add_argument("--device", default=None, help="GPU index for the demo worker")
    demo.add_argument("--eval-device", default="auto", help="job device: auto, cpu, cuda, cuda:N")
    demo.add_argument("--json", action="store_true", help="print the JobResult JSON instead of the table")
    demo.set_defaults(func=cmd_demo)

    ev = sub.add_parser("eval", help="prune and evaluate one checkpoint in this process (no service)")
    ev.add_argument("--checkpoint", required=True, help="checkpoint file")
    where = ev.add_mutually_exclusive_group()
    where.add_argument("--dataset", default="shapes-val", help="dataset name from the catalog")
    where.add_argument("--images", help="folder of images (with --annotations)")
    ev.add_argument("--annotations", help="COCO instances JSON (with --images)")
    ev.add_argument("--category-map", choices=["auto", "coco80", "ordered"], default="auto")
    points = ev.add_mutually_exclusive_group()
    points.add_argument("--sparsity", type=float)
    points.add_argument("--sparsities", type=parse_sparsities, default=[0.2, 0.3], help="e.g. 0.2,0.3,0.5")
    ev.add_argument("--no-dense", action="store_true", help="skip the dense baseline")
    ev.add_argument("--method", default="l1_unstructured", choices=["l1_unstructured", "global_magnitude", "channel"])
    ev.add_argument("--img-size", type=int, default=640)
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--max-images", type=int, default=None)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--scorer", choices=SCORER_NAMES, default="faster_coco_eval", help="COCOeval implementation")
    ev.add_argument("--save-dir", type=Path, default=None, help="keep each pruned model here")
    ev.add_argument("--json", action="store_true", help="print the JobResult JSON")
    ev.set_defaults(func=cmd_eval)

    # HTTP client commands (submit, status, result, cancel, upload, jobs) live in their own module.
    from prunebench.cli.client_commands import add_client_commands

    add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
