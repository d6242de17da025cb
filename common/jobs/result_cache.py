"""Identical requests return the stored result instead of recomputing it.

Two jobs are identical when they evaluate the same checkpoint bytes (its sha256 id) on the same
dataset files with the same method, sweep, exclusions, channel-pruning options, evaluation settings and
prunebench version.
The key does not name the worker's device: `device: "auto"` on a CPU worker and on a GPU worker
share a key, so clients that compare devices should ask for one explicitly (`cpu`, `cuda`).

Requests that save pruned models are not served from the cache: artifacts belong to the job that
wrote them. Entries never expire (like results); `use_cache: false` forces a fresh run.
Torch-free: workers look up and remember, the API could too.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import redis

import prunebench
from prunebench.contract import CHANNEL_FIELDS, EvalSettings, JobRequest
from prunebench.datasets.catalog import DatasetSpec

EVAL_FIELDS = tuple(EvalSettings.model_fields)
"""Every evaluation setting is part of the key (img_size, thresholds, device, scorer, ...)."""

_digests: dict[tuple[str, int, int], str] = {}
_digests_lock = threading.Lock()


def file_digest(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for the life of this process.

    rq forks a work-horse per job, so a worker hashes the annotations once per job: 0.02 s measured
    for 25 MB, the size of COCO val2017's instances file; small beside the evaluation.
    """
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _digests_lock:
        if memo_key in _digests:
            return _digests[memo_key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    with _digests_lock:
        _digests[memo_key] = digest.hexdigest()
    return _digests[memo_key]


def dataset_fingerprint(dataset: DatasetSpec) -> dict[str, object]:
    """What identifies a dataset's content: its annotations' bytes and its images folder's state."""
    images = dataset.images_dir.stat()
    return {
        "name": dataset.name,
        "annotations": file_digest(dataset.annotations),
        "images_mtime_ns": images.st_mtime_ns,
        "category_map": dataset.category_map,
    }


def cache_key(request: JobRequest, checkpoint_id: str, dataset: DatasetSpec) -> str:
    identity = {
        "prunebench": prunebench.__version__,
        "checkpoint": checkpoint_id,
        "dataset": dataset_fingerprint(dataset),
        "method": request.method,
        "sweep": request.sweep(),
        "exclude": sorted(request.exclude),
        "settings": {field: getattr(request, field) for field in EVAL_FIELDS},
        "channel": {field: getattr(request, field) for field in CHANNEL_FIELDS},
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def cacheable(request: JobRequest) -> bool:
    return request.use_cache and not request.save_models


class ResultCache:
    """cache key -> id of the job whose stored result answers it."""

    def __init__(self, connection: redis.Redis, prefix: str) -> None:
        self.redis = connection
        self.prefix = prefix

    def _key(self, cache_key: str) -> str:
        return f"{self.prefix}:cache:{cache_key}"

    def lookup(self, cache_key: str) -> str | None:
        value = self.redis.get(self._key(cache_key))
        return value.decode() if isinstance(value, bytes) else value

    def remember(self, cache_key: str, job_id: str) -> None:
        self.redis.set(self._key(cache_key), job_id)

    def forget(self, cache_key: str) -> None:
        self.redis.delete(self._key(cache_key))
