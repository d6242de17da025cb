"""Starting a worker under the name of one that died without saying so (SIGKILL, OOM killer, lost host).

rq refuses a worker name while its record still looks alive, and a SIGKILLed worker's record looks
alive until it expires minutes later; a worker with a fixed PRUNEBENCH_WORKER_NAME (a pod or unit
name) restarted after a kill would crash-loop that long. `take_over_name` decides whether the record
is a dead worker's, retires it through rq (prunebench.jobs.rq_adapter) and requeues the jobs the
dead worker left `running`, so the new one starts at once. A name held by a live worker is refused.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from prunebench.config import Settings
from prunebench.jobs import rq_adapter
from prunebench.jobs.requeue import requeue_jobs_of
from prunebench.jobs.store import JobStore, utcnow

log = logging.getLogger("prunebench.worker")


class WorkerNameTaken(RuntimeError):
    """A live worker already runs under this name."""


def process_gone(pid: int) -> bool:
    """True when no process `pid` runs on this host (a zombie counts as gone: it runs nothing)."""
    if pid == os.getpid():
        return True  # the record is from an earlier life of this very pid (a container's pid 1)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # someone else's live process
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def record_is_dead(record: rq_adapter.WorkerRecord, abandoned_after_s: float) -> bool:
    """Dead when it ran on this host and its process is gone, or when it has been silent too long.

    "Too long" is the reaper's own criterion (PRUNEBENCH_ABANDONED_AFTER_S without a heartbeat).
    """
    if record.hostname == socket.gethostname() and record.pid is not None and process_gone(record.pid):
        return True
    if record.last_heartbeat is None:
        return True
    return (utcnow() - record.last_heartbeat).total_seconds() >= abandoned_after_s


def take_over_name(store: JobStore, name: str, settings: Settings) -> list[str]:
    """Make `name` free for this worker; returns the ids of the jobs a dead worker of that name left.

    Waits at most PRUNEBENCH_ABANDONED_AFTER_S plus one heartbeat for a record on another host to go
    silent. Raises WorkerNameTaken when a worker by that name keeps heart-beating.
    """
    deadline = time.monotonic() + settings.abandoned_after_s + settings.heartbeat_s
    record = rq_adapter.registered_worker(store.redis, name)
    while record is not None and not record_is_dead(record, settings.abandoned_after_s):
        if time.monotonic() > deadline:
            raise WorkerNameTaken(
                f"a live worker named {name!r} (pid {record.pid} on {record.hostname}) is heart-beating; "
                "give each worker its own PRUNEBENCH_WORKER_NAME"
            )
        time.sleep(min(1.0, settings.heartbeat_s))
        record = rq_adapter.registered_worker(store.redis, name)
    if record is not None:
        log.warning("worker %s: the previous worker of this name (pid %s) died; taking over", name, record.pid)
        rq_adapter.retire_worker(store.redis, name)
    reason = f"WorkerLost: worker {name} died and was restarted"
    return requeue_jobs_of(store, name, reason)
