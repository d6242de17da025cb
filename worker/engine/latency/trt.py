"""TensorRT latency: an fp16 engine per batch size, built with sparse tactics enabled, on a CUDA device.

TensorRT 11 builds strongly typed networks only (``BuilderFlag.FP16`` is gone), so precision comes from
the graph: the fp16 ONNX export holds float16 weights and computes in float16 between a float32 ``images``
input and a float32 ``output0``. Every engine is built with ``BuilderFlag.SPARSE_WEIGHTS``, dense models
included (the same protocol for every point): TensorRT then picks 2:4 sparse kernels (cuSPARSELt-style
sparse tensor-core tactics, compute capability 8.0 and newer) for layers whose weights hold the pattern
wherever they are faster, and dense kernels everywhere else. Its ``(Sparsity)`` log lines say which layers
were eligible and which got a sparse kernel; they are kept in the row's ``note``.

Each engine has one optimisation profile with min = opt = max = ``[B, 3, img, img]``: each batch size gets
the kernels tuned for it. Input and output live in device memory (torch tensors); a step is one
``execute_async_v3`` on a private stream followed by a stream synchronisation.

Nothing here is imported unless a CUDA device is present, and a missing ``tensorrt`` package skips the
runtime with the reason (the ``gpu`` extra installs it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prunebench.contract import LatencyReport
from prunebench.worker.engine.latency.protocol import input_batch, time_step
from prunebench.worker.engine.latency.target import Target, failure, row, unavailable

RUNTIME = "tensorrt"
WORKSPACE_BYTES = 4 << 30
SPARSE_CAPABILITY = (8, 0)  # sparse tensor cores: Ampere and newer


def _trt() -> Any:
    import tensorrt

    return tensorrt


def unavailable_reason() -> str | None:
    if not torch.cuda.is_available():
        return (
            "no CUDA device on this worker: TensorRT runs only on NVIDIA GPUs (so 2:4 sparsity's speed-up "
            "cannot be measured here)"
        )
    try:
        _trt()
    except ImportError as exc:
        return f"the tensorrt package is not installed on this worker ({exc}); install prunebench's gpu extra"
    return None


def _versions() -> dict[str, str]:
    versions = {"tensorrt": str(_trt().__version__)}
    if torch.version.cuda:
        versions["cuda"] = str(torch.version.cuda)
    return versions


def _logger(messages: list[str]) -> Any:
    trt = _trt()

    class Recorder(trt.ILogger):  # type: ignore[name-defined]
        """Keeps warnings and errors, and TensorRT's (Sparsity) report lines, instead of printing them."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.WARNING) or "Sparsity" in msg:
                messages.append(msg.strip())

    return Recorder()


def build_engine(onnx_path: Path, batch: int, img_size: int, messages: list[str]) -> Any:
    """A deserialised ICudaEngine for ``[batch, 3, img_size, img_size]``; RuntimeError with TensorRT's words."""
    trt = _trt()
    logger = _logger(messages)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # strongly typed: TensorRT 11's only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    shape = (batch, 3, img_size, img_size)
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, shape, shape, shape)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed: " + " | ".join(messages[-3:]))
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None:
        raise RuntimeError("TensorRT could not deserialise the engine it built")
    return engine


def _time_engine(engine: Any, target: Target, batch: int, device: torch.device) -> Any:
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    trt = _trt()
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    x = input_batch(batch, target.img_size).to(device)
    context.set_input_shape(inputs[0], tuple(x.shape))
    buffers = {inputs[0]: x}
    for name in names:
        if name not in buffers:
            buffers[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=torch.float32, device=device)
    for name, tensor in buffers.items():
        context.set_tensor_address(name, tensor.data_ptr())
    stream = torch.cuda.Stream(device)

    def step() -> None:
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()

    return time_step(step, target.warmup, target.iterations)


def _note(target: Target, device: torch.device, messages: list[str]) -> str | None:
    parts = [m for m in messages if "Sparsity" in m][-2:]  # eligible layers, then those given sparse kernels
    if target.is_2_4 and torch.cuda.get_device_capability(device) < SPARSE_CAPABILITY:
        parts.insert(0, f"{torch.cuda.get_device_name(device)} has no sparse tensor cores: 2:4 runs dense here")
    return " | ".join(parts)[:2000] or None


def measure(target: Target) -> list[LatencyReport]:
    reason = unavailable_reason()
    if reason is not None:
        return unavailable(target, RUNTIME, "fp16", reason, {})
    device = target.device if target.device.type == "cuda" else torch.device("cuda", 0)
    versions = _versions()
    rows = []
    try:
        onnx_fp16 = target.onnx_fp16()
    except Exception as exc:
        return unavailable(target, RUNTIME, "fp16", f"fp16 ONNX export failed: {failure(exc)}", versions)
    with torch.cuda.device(device):
        for batch in target.batches:
            messages: list[str] = []
            try:
                engine = build_engine(onnx_fp16, batch, target.img_size, messages)
                timing = _time_engine(engine, target, batch, device)
            except Exception as exc:  # a build or run failure at one batch size is that row's result
                rows.append(
                    row(
                        target,
                        RUNTIME,
                        batch,
                        device=device,
                        precision="fp16",
                        versions=versions,
                        status="failed",
                        reason=failure(exc),
                        sparse_tactics=True,
                    )
                )
                continue
            rows.append(
                row(
                    target,
                    RUNTIME,
                    batch,
                    device=device,
                    precision="fp16",
                    versions=versions,
                    timing=timing,
                    sparse_tactics=True,
                    note=_note(target, device, messages),
                )
            )
    return rows
