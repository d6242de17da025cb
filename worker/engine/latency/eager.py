"""PyTorch eager latency: the evaluated model itself, on the job's device and in its precision."""

from __future__ import annotations

import torch

from prunebench.contract import LatencyReport
from prunebench.worker.engine.device import synchronize
from prunebench.worker.engine.latency.protocol import input_batch, time_step
from prunebench.worker.engine.latency.target import Target, dense_kernels_note, failure, row

RUNTIME = "torch"


def measure(target: Target) -> list[LatencyReport]:
    device = target.device
    on_cpu = device.type == "cpu"
    dtype = torch.float16 if target.half else torch.float32
    precision = "fp16" if target.half else "fp32"
    versions = {"torch": str(torch.__version__)}
    if device.type == "cuda" and torch.version.cuda:
        versions["cuda"] = str(torch.version.cuda)
    threads = target.threads if on_cpu else None
    previous = torch.get_num_threads()
    rows: list[LatencyReport] = []
    model = target.model.eval()
    try:
        if on_cpu:
            torch.set_num_threads(target.threads)
        for batch in target.batches:
            x = input_batch(batch, target.img_size).to(device=device, dtype=dtype)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)  # as the evaluation feeds CUDA models

            def step(x: torch.Tensor = x) -> None:
                with torch.no_grad():
                    model(x)
                synchronize(device)

            try:
                timing = time_step(step, target.warmup, target.iterations)
            except torch.OutOfMemoryError as exc:
                rows.append(
                    row(
                        target,
                        RUNTIME,
                        batch,
                        device=device,
                        precision=precision,
                        versions=versions,
                        threads=threads,
                        status="failed",
                        reason=failure(exc),
                    )
                )
                torch.cuda.empty_cache()
                continue
            rows.append(
                row(
                    target,
                    RUNTIME,
                    batch,
                    device=device,
                    precision=precision,
                    versions=versions,
                    threads=threads,
                    timing=timing,
                    note=dense_kernels_note(target, "PyTorch eager"),
                )
            )
    finally:
        torch.set_num_threads(previous)
    return rows
