"""A run's deployment figures: its ONNX export (checked against PyTorch) and its latency in each runtime.

The pipeline calls ``export_run`` before evaluation (on the pruned CPU float32 model) and ``time_run``
after it (on the evaluated model). The ONNX file is kept as ``artifacts_dir/run-{k}.onnx`` when the job
asked for ``export``; when it asked only for ``latency`` it lives in a scratch folder for the run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from prunebench.contract import ExportSettings, JobRequest, LatencyReport, OnnxExport, RunResult
from prunebench.worker.engine import export
from prunebench.worker.engine.data import DecodedDataset
from prunebench.worker.engine.latency import Target, cpu_threads, measure_latency


def wants_onnx(request: JobRequest) -> bool:
    return request.export is not None or request.latency is not None


def onnx_artifact(run_index: int) -> str:
    """The artifact's relative name in a result (the worker turns it into the download path)."""
    return f"runs/{run_index}/onnx"


def export_run(
    request: JobRequest,
    model: nn.Module,
    decoded: DecodedDataset,
    run_index: int,
    scratch: Path,
    artifacts_dir: Path | None,
) -> tuple[OnnxExport, Path]:
    """Export ``model`` (CPU float32, unchanged), check it on real images; the report and the file's path."""
    settings = request.export or ExportSettings()
    keep = request.export is not None and artifacts_dir is not None
    path = artifacts_dir / f"run-{run_index}.onnx" if keep and artifacts_dir else scratch / "model.onnx"
    images = export.check_images(decoded, settings.check_images, request.img_size)
    report = export.export_checked(model, path, images, opset=settings.opset, simplify_graph=settings.simplify)
    if keep:
        report.artifact = onnx_artifact(run_index)
    return report, path


def time_run(
    request: JobRequest,
    model: nn.Module,
    device: torch.device,
    half: bool,
    onnx_path: Path,
    scratch: Path,
    sparsity: float,
) -> list[LatencyReport]:
    """The latency suite on the evaluated ``model`` (on ``device``) and its checked export."""
    settings = request.latency
    if settings is None:
        return []
    fp16_path = scratch / "model.fp16.onnx"

    def onnx_fp16() -> Path:
        if not fp16_path.is_file():
            export.export_onnx(model, fp16_path, request.img_size, opset=onnx_opset(request), half=True)
        return fp16_path

    target = Target(
        model=model,
        device=device,
        half=half,
        onnx=onnx_path,
        onnx_fp16=onnx_fp16,
        img_size=request.img_size,
        method=request.method,
        sparsity=sparsity,
        warmup=settings.warmup,
        iterations=settings.iterations,
        threads=cpu_threads(settings.threads),
        batches=settings.batches(request.batch_size),
    )
    return measure_latency(target, settings.runtimes)


def onnx_opset(request: JobRequest) -> int:
    return (request.export or ExportSettings()).opset


def speedups(run: RunResult, dense: RunResult) -> dict[str, float]:
    """``'runtime@batch'`` -> dense median / this run's median, for every pair measured in both."""
    baseline = {(r.runtime, r.batch): r.median_ms for r in dense.latency if r.median_ms}
    found: dict[str, float] = {}
    for r in run.latency:
        base = baseline.get((r.runtime, r.batch))
        if base and r.median_ms:
            found[f"{r.runtime}@{r.batch}"] = base / r.median_ms
    return found
