"""Identical requests return the stored result instead of recomputing it.

Two jobs are identical when they evaluate the same checkpoint bytes (its sha256 id) on the same
dataset content (the annotations' and every listed image's sha256: prunebench.datasets.digests, memoised
per path + size + mtime_ns) with the same method, sweep, exclusions, channel-pruning options, evaluation settings
and prunebench version. An image rewritten in place is therefore a new key.
The key does not name the worker's device: `device: "auto"` on a CPU worker and on a GPU worker
share a key, so clients that compare devices should ask for one explicitly (`cpu`, `cuda`).

Requests that save pruned models or export ONNX are not served from the cache: artifacts belong to
the job that wrote them. Latency settings are part of the key (a job that asked for latency gets its
rows). Entries never expire (like results); `use_cache: false` forces a fresh run.
Torch-free: workers look up and remember, the API could too.
"""

from __future__ import annotations

import hashlib
import json

import redis

import prunebench
from prunebench.contract import CHANNEL_FIELDS, TARGET_FIELDS, EvalSettings, JobRequest
from prunebench.datasets.catalog import DatasetSpec
from prunebench.datasets.digests import DigestMemo, dataset_digest
from prunebench.datasets.yolo import label_path
from prunebench.jobs.keys import Keys

EVAL_FIELDS = tuple(EvalSettings.model_fields)
"""Every evaluation setting is part of the key (img_size, thresholds, device, scorer, ...)."""


def dataset_fingerprint(dataset: DatasetSpec, memo: DigestMemo | None = None) -> dict[str, object]:
    """What identifies a dataset: its content (annotations and every listed image) and its category map;
    for a YOLO split the annotations are its data.yaml, and every label file's content counts too."""
    memo = memo or DigestMemo()
    names = [str(entry["file_name"]) for entry in dataset.instances["images"]]
    fingerprint: dict[str, object] = {
        "name": dataset.name,
        "content": dataset_digest(dataset.annotations, dataset.images_dir, names, memo),
        "category_map": dataset.category_map,
    }
    if dataset.yolo is not None:
        labels = [label_path(image) for image in dataset.yolo.images]
        whole = hashlib.sha256()
        for path, sha in zip(labels, memo.digests(labels), strict=True):
            whole.update(f"{path}:{sha}\n".encode())
        fingerprint["labels"] = whole.hexdigest()
    return fingerprint


def cache_key(
    request: JobRequest,
    checkpoint_id: str,
    dataset: DatasetSpec,
    memo: DigestMemo | None = None,
    train_dataset: DatasetSpec | None = None,
    calibration_dataset: DatasetSpec | None = None,
) -> str:
    identity: dict[str, object] = {
        "prunebench": prunebench.__version__,
        "checkpoint": checkpoint_id,
        "dataset": dataset_fingerprint(dataset, memo),
        "method": request.method,
        "sweep": request.sweep(),
        "exclude": sorted(request.exclude),
        "settings": {field: getattr(request, field) for field in EVAL_FIELDS},
        "channel": request.model_dump(mode="json", include=set(CHANNEL_FIELDS)),
        "latency": request.latency.model_dump() if request.latency is not None else None,
    }
    if request.finetune is not None:
        # Fine-tuned results depend on every training setting and on the training data.
        identity["finetune"] = request.finetune.model_dump()
        identity["train_dataset"] = dataset_fingerprint(train_dataset, memo) if train_dataset is not None else None
    if request.target is not None:
        # A target job's answer depends on its budget and on how the search was asked to run.
        identity["target"] = request.model_dump(mode="json", include={"target", *TARGET_FIELDS})
    if request.layer_sparsities:
        identity["layer_sparsities"] = list((request.layer_sparsities or {}).items())  # order matters: first match wins
    if calibration_dataset is not None:
        # Recalibrated BatchNorm statistics (and taylor's gradients) depend on the calibration images.
        identity["calibration_dataset"] = dataset_fingerprint(calibration_dataset, memo)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def cacheable(request: JobRequest) -> bool:
    return request.use_cache and not request.save_models and request.export is None


class ResultCache:
    """cache key -> id of the job whose stored result answers it."""

    def __init__(self, connection: redis.Redis, keys: Keys) -> None:
        self.redis = connection
        self.keys = keys

    def lookup(self, cache_key: str) -> str | None:
        value = self.redis.get(self.keys.cache(cache_key))
        return value.decode() if isinstance(value, bytes) else value

    def remember(self, cache_key: str, job_id: str) -> None:
        self.redis.set(self.keys.cache(cache_key), job_id)

    def forget(self, cache_key: str) -> None:
        self.redis.delete(self.keys.cache(cache_key))
