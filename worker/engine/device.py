"""Pick the compute device for a job and describe the machine a result was measured on.

Nothing here touches CUDA at import time: workers fork, and an initialised CUDA context does not
survive a fork.
"""

from __future__ import annotations

import re

import torch

import prunebench
from prunebench.contract import Environment
from prunebench.infra.identity import worker_name

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d{1,2})$")


class DeviceError(ValueError):
    """The requested device does not exist on this worker."""


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> first CUDA device if there is one, else CPU; ``cuda[:N]`` must exist."""
    spec = (spec or "auto").strip().lower()
    if not _DEVICE_PATTERN.match(spec):
        raise DeviceError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    if spec == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if spec == "auto":
        return torch.device("cuda:0") if available else torch.device("cpu")
    if not available:
        raise DeviceError(f"device {spec!r} requested but this worker has no usable CUDA device")
    index = int(spec.split(":")[1]) if ":" in spec else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device {spec!r} requested but this worker has {count} CUDA device(s)")
    return torch.device("cuda", index)


def use_half(requested: bool, device: torch.device) -> bool:
    """fp16 only where upstream uses it: on CUDA."""
    return bool(requested) and device.type == "cuda"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_name()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


def environment(device: torch.device, worker: str | None = None) -> Environment:
    return Environment(
        device=str(device),
        device_name=device_name(device),
        torch=torch.__version__,
        cuda=torch.version.cuda if device.type == "cuda" else None,
        worker=worker or worker_name(),
        prunebench=prunebench.__version__,
    )


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU), so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
