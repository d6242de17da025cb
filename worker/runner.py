"""`prunebench worker [--device N] [--burst]`: one rq worker bound to one GPU.

Process model (the choice this module makes, and why):

- CUDA_VISIBLE_DEVICES is set to N first thing, so the engine inside sees exactly one device
  (`cuda:0`) and several workers on one host never share a GPU by accident.
- rq's default forking Worker. The parent never imports torch: the entry point is named by a path
  string and `prunebench.worker.entry` imports the engine lazily, inside the work-horse. So CUDA is
  never initialised before the fork (forking a CUDA-initialised process is undefined behaviour), each
  job gets a fresh process whose GPU memory is returned on exit, and a leak or a crash dies with it.
  So that a job on a warm worker pays no import, the parent imports the engine's heavy third-party
  libraries (torch, OpenCV, the COCO scorers; `PRELOAD`) once at start, before any
  fork: importing torch does not initialise CUDA (that happens at the first CUDA call, in the horse),
  and no tensor op runs in the parent, so no thread pool or device context crosses a fork. The
  engine itself stays out of the parent (the import boundary); its own modules are small.
  `PRUNEBENCH_WORKER_PRELOAD=0` turns this off. rq's SpawnWorker would give the same isolation with a
  fresh interpreter (and every import again); the fork keeps rq's stop-job path
  (send_stop_job_command -> the parent SIGKILLs the horse) and its timeouts simple and well-trodden.
- Cancel: the API marks the job canceled (the engine sees it at the next batch via should_stop() and
  stops cleanly) and sends rq's stop-job command, which kills the horse if it does not stop by itself.
  Either way nothing is half-written: a result is stored in one MULTI with the `succeeded` status,
  and only while the status is still `running`.
- SIGTERM / SIGINT: rq's warm shutdown (finish the current job, then exit); a second signal is cold.
- A horse that dies (SIGKILL, OOM killer) is retried by rq up to PRUNEBENCH_JOB_RETRIES times; the
  killed-horse handler below puts our record back to `queued`, or `failed` when no retry is left.
- Redis outages: the worker's Redis client (prunebench.jobs.store.connect_worker) retries every
  command with back-off for PRUNEBENCH_WORKER_REDIS_OUTAGE_S, in the parent and in the horse, so a
  busy worker keeps its job through an outage and stores the result when Redis is back.
- A worker restarted under the name of one that was SIGKILLed starts at once
  (prunebench.worker.name_takeover): the dead one's rq record is retired and its jobs requeued.
- A whole worker that dies (SIGKILL of the parent, lost host) stops heart-beating. Every worker
  parent runs a reaper thread (prunebench.jobs.requeue) that requeues a running job whose worker has
  been silent for PRUNEBENCH_ABANDONED_AFTER_S (attempt outcome `abandoned`), within
  PRUNEBENCH_JOB_RETRIES; rq's own clean-up would take minutes. A busy worker heart-beats every
  PRUNEBENCH_HEARTBEAT_S (rq's job_monitoring_interval).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from typing import Any

from rq import Worker

from prunebench.config import Settings, get_settings
from prunebench.contract import JobStatus
from prunebench.infra.identity import worker_name
from prunebench.infra.logging_setup import configure_logging
from prunebench.jobs import rq_adapter
from prunebench.jobs.requeue import Reaper
from prunebench.jobs.store import JobNotFound, JobStore, TransitionRefused, connect, connect_worker
from prunebench.worker.name_takeover import take_over_name

log = logging.getLogger("prunebench.worker")

MAINTENANCE_INTERVAL_S = 60
"""rq's clean-up of registries (expired entries); rq's default is 10 minutes. Dead workers are the reaper's."""


PRELOAD = ("numpy", "cv2", "torch", "torch._dynamo", "torch_pruning", "faster_coco_eval", "pycocotools.cocoeval")
"""Third-party modules the work-horse needs, imported by the parent so every forked horse inherits them.
``torch._dynamo``: torch's FLOP counter (GFLOPs) imports it at first use, ~1 s. Not torchvision: the engine
registers only its NMS kernel, in the horse (``engine.nms.torchvision_nms``)."""


def preload_heavy_imports() -> float:
    """Import ``PRELOAD`` now (no CUDA is touched); returns the seconds it took, i.e. what each job saves."""
    started = time.perf_counter()
    for name in PRELOAD:
        importlib.import_module(name)
    return time.perf_counter() - started


def _crash_handler(store: JobStore) -> Any:
    """rq calls this in the parent when a horse died without finishing (not for stop-job kills)."""

    def handle(job: Any, retpid: int, ret_val: int, rusage: Any) -> None:
        signal_note = f" (signal {os.WTERMSIG(ret_val)})" if ret_val and os.WIFSIGNALED(ret_val) else ""
        reason = f"WorkerCrashed: the work-horse process died{signal_note}"
        try:
            if job.should_retry:
                store.requeue_after_crash(job.id, reason)
            else:
                store.finish_failed(job.id, reason, from_statuses=[JobStatus.RUNNING])
        except (TransitionRefused, JobNotFound):
            pass  # canceled meanwhile, or not ours: nothing to record

    return handle


def build_worker(settings: Settings, device: str | None = None, name: str | None = None) -> Worker:
    connection = connect_worker(settings)
    store = JobStore(connection, settings)
    return Worker(
        [store.queue],
        name=name or settings.worker_name or worker_name(device or "any"),
        connection=connection,
        serializer=rq_adapter.SERIALIZER,
        maintenance_interval=MAINTENANCE_INTERVAL_S,
        job_monitoring_interval=settings.heartbeat_s,
        work_horse_killed_handler=_crash_handler(store),
    )


def run_worker(device: str | None = None, burst: bool = False) -> int:
    if device is not None:
        # Before anything can touch CUDA: the horse (and torch in it) inherits this environment.
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    settings = get_settings()
    configure_logging(settings)  # JSON lines on stderr; the forked horses inherit it
    worker = build_worker(settings, device)
    # A restart under a fixed name after a SIGKILL: rq would refuse the name for minutes.
    take_over_name(JobStore(worker.connection, settings), worker.name, settings)
    if settings.worker_preload:
        log.info("preloaded torch and the engine's libraries in %.1f s (once, not per job)", preload_heavy_imports())
    log.info("worker %s on queue %s (device %s)", worker.name, settings.queue_name, device or "auto")
    # Own connection: the reaper thread shares nothing with the worker loop or the forked horses.
    reaper = Reaper(JobStore(connect(settings), settings), settings.abandoned_after_s, settings.reaper_interval_s)
    reaper.start()
    try:
        worker.work(burst=burst, logging_level=settings.log_level)
    finally:
        reaper.stop()
    return 0
