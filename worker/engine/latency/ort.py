"""ONNX Runtime latency: the checked float32 export, on the CPU execution provider (always) and on the
CUDA execution provider (when this worker has a CUDA device and an onnxruntime build that has it).

CPU sessions: all graph optimisations, sequential execution, ``intra_op_num_threads`` = the job's thread
count, one inter-op thread. CUDA sessions bind input and output to device memory (IO binding), so the
time is the network's, not host-device copies'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from prunebench.contract import LatencyReport
from prunebench.worker.engine.export import INPUT_NAME, OUTPUT_NAME, cpu_session
from prunebench.worker.engine.latency.protocol import input_batch, time_step
from prunebench.worker.engine.latency.target import Target, dense_kernels_note, failure, row, unavailable

if TYPE_CHECKING:  # loaded on first use (see prunebench.worker.engine.export)
    import onnxruntime as ort

CPU = "onnxruntime_cpu"
CUDA = "onnxruntime_cuda"
CUDA_PROVIDER = "CUDAExecutionProvider"


def _versions() -> dict[str, str]:
    import onnxruntime as ort

    return {"onnxruntime": ort.__version__}


def measure_cpu(target: Target) -> list[LatencyReport]:
    device = torch.device("cpu")
    session = cpu_session(target.onnx, target.threads)
    rows = []
    for batch in target.batches:
        feed = {INPUT_NAME: input_batch(batch, target.img_size).numpy()}

        def step(feed: dict[str, np.ndarray] = feed) -> None:
            session.run([OUTPUT_NAME], feed)

        timing = time_step(step, target.warmup, target.iterations)
        rows.append(
            row(
                target,
                CPU,
                batch,
                device=device,
                precision="fp32",
                versions=_versions(),
                threads=target.threads,
                timing=timing,
                note=dense_kernels_note(target, "ONNX Runtime (CPU)"),
            )
        )
    return rows


def cuda_unavailable_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device on this worker: ONNX Runtime's CUDA execution provider needs an NVIDIA GPU"
    import onnxruntime as ort

    if CUDA_PROVIDER not in ort.get_available_providers():
        return (
            f"this onnxruntime build ({ort.__version__}) has no {CUDA_PROVIDER}; "
            "GPU workers install onnxruntime-gpu (prunebench's gpu extra)"
        )
    return None


def measure_cuda(target: Target) -> list[LatencyReport]:
    reason = cuda_unavailable_reason()
    if reason is not None:
        return unavailable(target, CUDA, "fp32", reason, _versions())
    device = target.device if target.device.type == "cuda" else torch.device("cuda", 0)
    index = device.index or 0
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(target.onnx), options, providers=[(CUDA_PROVIDER, {"device_id": index}), "CPUExecutionProvider"]
    )
    if session.get_providers()[0] != CUDA_PROVIDER:
        # ORT falls back to CPU when the CUDA libraries do not load; timing that as "CUDA" would be a lie.
        return unavailable(target, CUDA, "fp32", f"{CUDA_PROVIDER} did not load (CUDA/cuDNN libraries)", _versions())
    rows = []
    for batch in target.batches:
        x = input_batch(batch, target.img_size).to(device)
        try:
            binding = session.io_binding()
            binding.bind_input(INPUT_NAME, "cuda", index, np.float32, list(x.shape), x.data_ptr())
            binding.bind_output(OUTPUT_NAME, "cuda", index)

            def step(binding: ort.IOBinding = binding) -> None:
                session.run_with_iobinding(binding)
                torch.cuda.synchronize(device)

            timing = time_step(step, target.warmup, target.iterations)
        except Exception as exc:  # an ORT failure at one batch size (e.g. out of memory) is that row's result
            rows.append(
                row(
                    target,
                    CUDA,
                    batch,
                    device=device,
                    precision="fp32",
                    versions=_versions(),
                    status="failed",
                    reason=failure(exc),
                )
            )
            continue
        rows.append(
            row(
                target,
                CUDA,
                batch,
                device=device,
                precision="fp32",
                versions=_versions(),
                timing=timing,
                note=dense_kernels_note(target, "ONNX Runtime (CUDA)"),
            )
        )
    return rows
