"""Fan-out speed-up: one sweep job through real rq workers, with 1 worker and with N.

    .venv/bin/python bench/fanout_bench.py                     # demo sweep 0/0.3/0.5/0.7, 120 images, img 320
    .venv/bin/python bench/fanout_bench.py --workers 2 --threads 1

Starts its own redis-server and `prunebench worker` processes (warm: started and preloaded before the
clock runs), submits the job through the job store (what the API does), and times submit -> succeeded.
Each configuration runs twice: the first fills the host's decode cache, the second (timed) is what a
warm deployment sees. ``--threads`` sets each worker's torch threads (OMP_NUM_THREADS): on a CPU host
the cores are shared, so compare "1 worker x all cores" with "N workers x cores/N". One run's figures.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prunebench.config import Settings
from prunebench.contract import JobRequest, JobStatus
from prunebench.infra.redis_server import EmbeddedRedis
from prunebench.jobs.store import JobStore, connect


def _workers(count: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for k in range(count):
        with (logs / f"worker{k}.log").open("ab") as log:
            procs.append(
                subprocess.Popen([sys.executable, "-m", "prunebench.cli", "worker"], env=env, stdout=log, stderr=log)
            )
    return procs


def _wait_workers(store: JobStore, count: int, timeout_s: float = 120) -> None:
    from rq import Worker

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(Worker.all(queue=store.queue)) >= count:
            return
        time.sleep(0.2)
    raise SystemExit(f"{count} workers did not start")


def _run_job(store: JobStore, request: JobRequest) -> float:
    started = time.perf_counter()
    job = store.create(request, owner="bench")
    while True:
        status = store.status(job.id)
        if status is not None and status.is_terminal:
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    if status != JobStatus.SUCCEEDED:
        raise SystemExit(f"job {job.id} {status}: {store.get(job.id).error}")
    return seconds


def measure(count: int, threads: int, fanout: bool, request: JobRequest, root: Path, url: str) -> float:
    prefix = f"bench-{count}-{threads}-{int(fanout)}"
    settings = Settings(redis_url=url, redis_prefix=prefix, queue_name=prefix, store_dir=root / "store")
    env = {
        **os.environ,
        "PRUNEBENCH_REDIS_URL": url,
        "PRUNEBENCH_REDIS_PREFIX": prefix,
        "PRUNEBENCH_QUEUE_NAME": prefix,
        "PRUNEBENCH_STORE_DIR": str(root / "store"),
        "PRUNEBENCH_CACHE_DIR": str(root / "cache"),
        "PRUNEBENCH_FANOUT": "1" if fanout else "0",
        "PRUNEBENCH_LOG_JSON": "0",
        "OMP_NUM_THREADS": str(threads),
    }
    store = JobStore(connect(settings), settings)
    procs = _workers(count, env, root)
    try:
        _wait_workers(store, count)
        _run_job(store, request)  # fills the decode cache; warm-up
        return _run_job(store, request)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: cores / workers)")
    parser.add_argument("--sparsities", default="0.3,0.5,0.7")
    parser.add_argument("--img-size", type=int, default=320)
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    request = JobRequest(
        checkpoint="yolov5n_shapes.pt",
        dataset="shapes-val",
        sparsities=[float(s) for s in args.sparsities.split(",")],
        img_size=args.img_size,
        batch_size=32,
        device="cpu",
        use_cache=False,
    )
    with (
        tempfile.TemporaryDirectory(prefix="prunebench-fanout-") as scratch,
        EmbeddedRedis(workdir=Path(scratch) / "redis") as server,
    ):
        root = Path(scratch)
        per_worker = args.threads or max(1, cores // args.workers)
        one = measure(1, cores, False, request, root, server.url)
        many = measure(args.workers, per_worker, True, request, root, server.url)
        print(f"{len(request.sweep())}-point sweep, 120 images, img {args.img_size}, batch 32, {cores} cores")
        print("| workers | torch threads each | fan-out | seconds | speed-up |")
        print("|---:|---:|---|---:|---:|")
        print(f"| 1 | {cores} | no | {one:.1f} | 1.00x |")
        print(f"| {args.workers} | {per_worker} | yes | {many:.1f} | {one / many:.2f}x |")


if __name__ == "__main__":
    main()
