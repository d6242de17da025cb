"""Load bench for the API: a burst of job submissions, then an accounting check, then polling latency.

1. Burst: `--jobs` POST /v1/jobs from `--concurrency` threads at once (one shared httpx connection pool).
2. Accounting: every 202 must name a distinct job id whose record GET /v1/jobs/{id} returns, queued or
   terminal (or running, with a worker present); the listing's total must equal the number accepted.
   Nothing is allowed to be lost, duplicated or half-stored.
3. Polling: GET /v1/jobs/{id} over the accepted ids at `--rate` requests/s for `--seconds`, paced (open
   loop, so a slow answer does not lower the offered rate); prints p50/p99/max latency.

Without `--url` it starts its own stack on 127.0.0.1: an embedded redis-server and `prunebench serve`
with one API key (and `--workers N` workers; default none, so jobs stay queued and the numbers
measure the API and Redis, not the engine). Everything it starts is stopped by process id.

    .venv/bin/python bench/load_bench.py                       # 1000 jobs, 50 threads, 200 req/s x 10 s
    .venv/bin/python bench/load_bench.py --url http://host:8000 --api-key KEY --jobs 5000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing

from prunebench.infra.processes import Supervisor  # noqa: E402
from prunebench.infra.redis_server import EmbeddedRedis, free_port  # noqa: E402

JOB: dict[str, Any] = {
    "checkpoint": "yolov5n_shapes.pt",
    "dataset": "shapes-val",
    "sparsity": 0.3,
    "img_size": 256,
    "max_images": 8,
    "device": "cpu",
    "use_cache": False,
}
BENCH_KEY = "load-bench-key-0123456789abcdef"
ACCOUNTED = {"queued", "running", "succeeded", "failed", "canceled"}


@dataclass
class BurstReport:
    submitted: int
    accepted: int
    statuses: dict[str, int]
    seconds: float
    distinct_ids: int
    missing_records: list[str] = field(default_factory=list)
    bad_status: dict[str, str] = field(default_factory=dict)
    listed_total: int | None = None

    @property
    def ok(self) -> bool:
        return (
            self.accepted == self.distinct_ids
            and not self.missing_records
            and not self.bad_status
            and (self.listed_total is None or self.listed_total >= self.accepted)
        )


@dataclass
class PollReport:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def client(url: str, api_key: str | None, connections: int) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.Client(base_url=url, headers=headers, timeout=60, limits=limits)


def burst(
    url: str, api_key: str | None, jobs: int, concurrency: int, body: dict[str, Any] | None = None
) -> BurstReport:
    """Submit `jobs` jobs from `concurrency` threads, then account for every accepted one."""
    body = body or JOB
    with client(url, api_key, concurrency) as http:
        start = threading.Barrier(concurrency)

        def submit_many(worker: int) -> list[tuple[int, str | None]]:
            start.wait()  # all threads open fire together: a real burst, not a ramp
            out = []
            for _ in range(worker, jobs, concurrency):
                try:
                    response = http.post("/v1/jobs", json=body)
                except httpx.HTTPError as exc:
                    out.append((0, type(exc).__name__))
                    continue
                out.append((response.status_code, response.json().get("id") if response.status_code == 202 else None))
            return out

        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            answers = [a for chunk in pool.map(submit_many, range(concurrency)) for a in chunk]
        seconds = time.perf_counter() - began

        ids = [job_id for status, job_id in answers if status == 202 and job_id]
        report = BurstReport(
            submitted=jobs,
            accepted=len(ids),
            statuses={str(k): v for k, v in Counter(status for status, _ in answers).items()},
            seconds=seconds,
            distinct_ids=len(set(ids)),
        )

        def check(job_id: str) -> tuple[str, int, str | None]:
            response = http.get(f"/v1/jobs/{job_id}")
            return job_id, response.status_code, response.json().get("status") if response.status_code == 200 else None

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for job_id, code, status in pool.map(check, set(ids)):
                if code != 200:
                    report.missing_records.append(job_id)
                elif status not in ACCOUNTED:
                    report.bad_status[job_id] = str(status)
        listing = http.get("/v1/jobs", params={"limit": 1})
        if listing.status_code == 200:
            report.listed_total = int(listing.json()["total"])
        return report


def poll(url: str, api_key: str | None, ids: list[str], rate: float, seconds: float) -> PollReport:
    """GET /v1/jobs/{id} at `rate` req/s for `seconds`, open loop; latency percentiles in ms."""
    total = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    with client(url, api_key, 64) as http:

        def one(i: int, due: float) -> None:
            nonlocal errors
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            try:
                ok = http.get(f"/v1/jobs/{ids[i % len(ids)]}").status_code == 200
            except httpx.HTTPError:
                ok = False
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(elapsed)
                errors += 0 if ok else 1

        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=64) as pool:
            for i in range(total):
                pool.submit(one, i, began + i / rate)
        wall = time.perf_counter() - began
    return PollReport(
        requests=len(latencies),
        errors=errors,
        seconds=wall,
        p50_ms=statistics.median(latencies) if latencies else float("nan"),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies, default=float("nan")),
    )


@contextlib.contextmanager
def local_stack(workers: int = 0) -> Iterator[tuple[str, str]]:
    """An embedded redis-server, `prunebench serve` and `workers` workers; yields (url, api key)."""
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory(prefix="prunebench-load-") as tmp:
        port = free_port()
        env = {
            **os.environ,
            "PRUNEBENCH_REDIS_URL": server.url,
            "PRUNEBENCH_REDIS_PREFIX": "loadbench",
            "PRUNEBENCH_QUEUE_NAME": "loadbench",
            "PRUNEBENCH_STORE_DIR": str(Path(tmp) / "store"),
            "PRUNEBENCH_API_KEYS": f"bench:{BENCH_KEY}",
            "PRUNEBENCH_LOG_JSON": "0",
            "PRUNEBENCH_LOG_LEVEL": "WARNING",
        }
        env.pop("PRUNEBENCH_AUTH_DISABLED", None)
        me = [sys.executable, "-m", "prunebench.cli"]
        url = f"http://127.0.0.1:{port}"
        with Supervisor(Path(tmp) / "logs", grace_s=30) as children:
            children.start("api", [*me, "serve", "--host", "127.0.0.1", "--port", str(port)], env, cwd=ROOT)
            for n in range(workers):
                children.start(f"worker{n}", [*me, "worker"], env, cwd=ROOT)
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline or children.procs["api"].poll() is not None:
                    raise RuntimeError(f"the API did not start:\n{children.tail('api', 60)}")
                time.sleep(0.2)
            yield url, BENCH_KEY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", help="a running API (default: start a local stack)")
    parser.add_argument("--api-key", default=os.environ.get("PRUNEBENCH_API_KEY"))
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0, help="polling requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="polling duration")
    parser.add_argument("--workers", type=int, default=0, help="workers of the local stack")
    args = parser.parse_args(argv)

    stack = contextlib.nullcontext((args.url, args.api_key)) if args.url else local_stack(args.workers)
    with stack as (url, key):
        report = burst(url, key, args.jobs, args.concurrency)
        print(
            f"burst: {report.accepted}/{report.submitted} accepted in {report.seconds:.1f} s "
            f"({report.submitted / report.seconds:.0f} req/s), statuses {report.statuses}, "
            f"{report.distinct_ids} distinct ids, {len(report.missing_records)} missing records, "
            f"{len(report.bad_status)} bad statuses, listed total {report.listed_total}",
            file=sys.stderr,
        )
        with client(url, key, 4) as http:
            ids = [j["id"] for j in http.get("/v1/jobs", params={"limit": 500}).json()["items"]]
        polled = poll(url, key, ids, args.rate, args.seconds) if ids else None
        if polled:
            print(
                f"poll: {polled.requests} GET /v1/jobs/{{id}} in {polled.seconds:.1f} s "
                f"({polled.requests / polled.seconds:.0f} req/s), {polled.errors} errors, "
                f"p50 {polled.p50_ms:.1f} ms, p99 {polled.p99_ms:.1f} ms, max {polled.max_ms:.1f} ms",
                file=sys.stderr,
            )
        print(json.dumps({"burst": {**asdict(report), "ok": report.ok}, "poll": asdict(polled) if polled else None}))
    return 0 if report.ok and (polled is None or polled.errors == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
