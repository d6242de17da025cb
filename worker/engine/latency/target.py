"""What the latency suite measures for one run, and the report rows every runtime fills the same way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench.contract import LatencyReport
from prunebench.worker.engine.device import device_name
from prunebench.worker.engine.latency.protocol import Timing

SEMI_STRUCTURED = "semi_structured_2_4"


@dataclass
class Target:
    """One run's model as each runtime takes it.

    ``model`` is the evaluated PyTorch model on ``device`` (fp16 when ``half``); ``onnx`` the checked
    float32 export; ``onnx_fp16`` makes (once, on first call) the float16 graph TensorRT builds from.
    """

    model: nn.Module
    device: torch.device
    half: bool
    onnx: Path
    onnx_fp16: Callable[[], Path]
    img_size: int
    method: str
    sparsity: float
    warmup: int
    iterations: int
    threads: int
    batches: list[int]
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def is_2_4(self) -> bool:
        return self.method == SEMI_STRUCTURED and self.sparsity > 0.0


def row(
    target: Target,
    runtime: str,
    batch: int,
    *,
    device: torch.device,
    precision: str,
    versions: dict[str, str],
    threads: int | None = None,
    timing: Timing | None = None,
    status: str = "measured",
    reason: str | None = None,
    sparse_tactics: bool | None = None,
    note: str | None = None,
) -> LatencyReport:
    """One LatencyReport; ``timing`` None means not measured (``status`` and ``reason`` say why)."""
    return LatencyReport(
        runtime=runtime,
        status=status if timing is None else "measured",
        reason=reason,
        device=str(device),
        device_name=device_name(device),
        threads=threads,
        precision=precision,
        versions=versions,
        batch=batch,
        img_size=target.img_size,
        warmup=target.warmup,
        iterations=target.iterations,
        median_ms=timing.median_ms if timing else None,
        p90_ms=timing.p90_ms if timing else None,
        ms_per_image=timing.median_ms / batch if timing else None,
        sparse_tactics=sparse_tactics,
        note=note,
    )


def dense_kernels_note(target: Target, runtime: str) -> str | None:
    """For a 2:4 run in a runtime without sparse kernels: why its time is a dense model's time."""
    if not target.is_2_4:
        return None
    return (
        f"{runtime} runs 2:4-sparse weights with dense kernels (the zeros are multiplied like any weight), so no "
        "speed-up over dense is expected here; 2:4 is accelerated only by TensorRT's sparse tactics on an "
        "NVIDIA GPU with sparse tensor cores (Ampere, compute capability 8.0, or newer)"
    )


def unavailable(
    target: Target, runtime: str, precision: str, reason: str, versions: dict[str, str]
) -> list[LatencyReport]:
    """Skipped rows for every batch size, all saying why."""
    device = (
        torch.device("cuda", 0) if runtime in ("onnxruntime_cuda", "tensorrt") and torch.cuda.is_available() else None
    )
    return [
        row(
            target,
            runtime,
            b,
            device=device or torch.device("cpu"),
            precision=precision,
            versions=versions,
            status="skipped",
            reason=reason,
        )
        for b in target.batches
    ]


def failure(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:500]}" if text else type(exc).__name__
