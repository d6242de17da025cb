"""Will a job fit this worker? A job that would not fails before loading, with the sizes that do not fit.

Estimated from the checkpoint's config (`prunebench.checkpoints.limits.estimate_architecture`, no module
is built) and the request: weights (the file's tensors as torch.load inflates them, then three float32
copies: the loaded model, its unfused copy, the fused dense model, plus one pruned copy per point in
flight) and activations (``img_size`` x batch at float32: no-grad inference for evaluation and latency,
every layer output kept for fine-tuning). On CUDA the activations are checked against the device's
memory, on CPU against the worker's: ``PRUNEBENCH_WORKER_MEMORY_BYTES``, else the cgroup limit, else
physical RAM. Estimates err high on purpose; the margin (`HEADROOM`) leaves room for the interpreter,
the decoded images and the allocator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from prunebench.checkpoints.architectures import official_config
from prunebench.checkpoints.inspect import CheckpointError, CheckpointMeta
from prunebench.checkpoints.limits import ArchEstimate, ArchitectureError, estimate_architecture
from prunebench.contract import JobRequest

HEADROOM = 0.8
"""Share of the memory a job's estimate may take."""
WEIGHT_COPIES = 4
"""Float32 copies of the weights a job holds at once (loaded, unfused, dense fused, one pruned point)."""

_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


class JobTooLarge(ValueError):
    """The job would not fit this worker's memory; the message gives the estimate and the budget."""


def host_memory_bytes(configured: int | None = None) -> int:
    """Memory this worker's jobs may use: `configured`, else the cgroup limit, else physical RAM."""
    if configured:
        return configured
    limits = []
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            limits.append(int(text))
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kib = int(meminfo.split("MemTotal:")[1].split()[0])
        limits.append(kib * 1024)
    except (OSError, IndexError, ValueError):
        pass
    return min(limits) if limits else 8 * 1024**3


@dataclass(frozen=True)
class JobFootprint:
    weights: int
    activations: int
    what: str  # which pass the activations are for, e.g. "inference at img_size 640 x batch 32"


def _gib(n: float) -> str:
    return f"{n / 1024**3:.1f} GiB"


def footprint(request: JobRequest, meta: CheckpointMeta) -> JobFootprint:
    """Bytes a job needs: weights and its largest activation pass (CheckpointError for a config it cannot size)."""
    try:
        if meta.yaml is not None:
            est: ArchEstimate = estimate_architecture(meta.yaml, nc=meta.num_classes)
        else:
            est = estimate_architecture(official_config(meta.arch or "yolov5s", meta.num_classes))
    except (ArchitectureError, KeyError) as exc:
        raise CheckpointError(f"cannot size the model: {exc}") from None
    weights = meta.tensor_bytes + est.parameters * 4 * WEIGHT_COPIES
    size, batch = request.img_size, request.batch_size
    passes = [(est.inference_bytes(size, batch), _pass("inference", size, batch))]
    if request.latency is not None:
        biggest = max(request.latency.batches(batch))
        passes.append((est.inference_bytes(size, biggest), _pass("latency", size, biggest)))
    if request.finetune is not None:
        ft_size, ft_batch = request.finetune.img_size, request.finetune.batch_size
        passes.append((est.training_bytes(ft_size, ft_batch), _pass("fine-tuning", ft_size, ft_batch)))
    activations, what = max(passes)
    return JobFootprint(weights, activations, what)


def _pass(kind: str, img_size: int, batch: int) -> str:
    return f"{kind} at img_size {img_size} x batch {batch}"


def check_job_fits(
    request: JobRequest, meta: CheckpointMeta, device: torch.device, host_bytes: int | None = None
) -> JobFootprint:
    """Raise JobTooLarge when the job's estimate exceeds HEADROOM of the memory it would use."""
    need = footprint(request, meta)
    host = host_memory_bytes(host_bytes)
    if device.type == "cuda":
        gpu = torch.cuda.get_device_properties(device).total_memory
        if need.activations + need.weights > gpu * HEADROOM:
            raise JobTooLarge(
                f"the job needs about {_gib(need.activations + need.weights)} on {device} "
                f"({need.what}: {_gib(need.activations)}), which has {_gib(gpu)}; lower img_size or batch_size"
            )
        on_host = need.weights
    else:
        on_host = need.weights + need.activations
    if on_host > host * HEADROOM:
        raise JobTooLarge(
            f"the job needs about {_gib(on_host)} of memory (weights {_gib(need.weights)}, "
            f"{need.what}: {_gib(need.activations if device.type != 'cuda' else 0)}), this worker has "
            f"{_gib(host)}; lower img_size or batch_size"
        )
    return need
