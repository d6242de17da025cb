"""ONNX export round trips (ONNX Runtime equals PyTorch) and the latency suite's report rows.

Dense, unstructured and channel-pruned demo models are exported once each (64 px keeps it quick) and
checked on real images of the bundled dataset. Latency tests assert the rows' shape and meaning, never
their speed: speed is measured in bench/runtime_bench.py.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from prunebench.contract import RUNTIMES, LatencyReport, RunResult
from prunebench.datasets.catalog import load_catalog, resolve_dataset
from prunebench.worker.engine import export
from prunebench.worker.engine.checkpoints import load_model
from prunebench.worker.engine.data import decode_dataset
from prunebench.worker.engine.latency import Target, measure_latency, time_step
from prunebench.worker.engine.pruning import ChannelOptions, apply_pruning
from prunebench.worker.engine.runtimes import speedups
from tests.support.paths import DEMO_CHECKPOINT

IMG = 64
PRUNINGS = {"dense": None, "l1_unstructured": 0.5, "channel": 0.3}


@pytest.fixture(scope="module")
def unfused() -> nn.Module:
    return load_model(DEMO_CHECKPOINT).model.float().eval()


@pytest.fixture(scope="module")
def dense(unfused: nn.Module) -> nn.Module:
    return copy.deepcopy(unfused).fuse()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    spec = resolve_dataset(load_catalog(None, include_builtin=True), "shapes-val")
    return export.check_images(decode_dataset(spec, IMG, max_images=3), 3, IMG)


@pytest.fixture(scope="module")
def exported(
    unfused: nn.Module, dense: nn.Module, images: torch.Tensor, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple]:
    """Each model kind exported and checked once: name -> (model, report, path). Pruned as a job prunes:
    channels on the unfused model (then fused), weights on the fused one."""
    out = {}
    for name, sparsity in PRUNINGS.items():
        if name == "channel":
            model = apply_pruning(copy.deepcopy(unfused), name, sparsity, channel_options=ChannelOptions()).model
            model = model.fuse().eval()
        else:
            model = copy.deepcopy(dense)
        if name == "l1_unstructured":
            model = apply_pruning(model, name, sparsity).model.eval()
        path = tmp_path_factory.mktemp("onnx") / f"{name}.onnx"
        out[name] = (model, export.export_checked(model, path, images), path)
    return out


@pytest.mark.parametrize("name", list(PRUNINGS))
def test_onnx_runtime_reproduces_pytorch_at_any_batch(
    name: str, exported: dict[str, tuple], images: torch.Tensor
) -> None:
    model, report, path = exported[name]
    assert report.max_scaled_diff <= report.tolerance == 1e-4
    assert report.check_images == 3 and report.size_bytes == path.stat().st_size
    assert report.opset >= 17 and report.simplified and report.simplify_note is None
    assert set(report.versions) == {"torch", "onnx", "onnxruntime", "onnxslim"}

    graph = onnx.load(str(path)).graph
    (inp,), (out,) = graph.input, graph.output
    assert inp.name == "images" and out.name == "output0"
    assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims[1:] == [3, IMG, IMG] and isinstance(dims[0], str), "batch is a named, dynamic dimension"

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (images[:1], images):  # batch 1 and batch 3 through the one graph
        got = session.run(["output0"], {"images": batch.numpy()})[0]
        with torch.no_grad():
            expected = model(batch)[0].numpy()
        nc = model.nc
        assert got.shape == expected.shape and got.shape[0] == len(batch) and got.shape[2] == 5 + nc
        assert np.all(np.abs(got - expected) <= 1e-4 * np.maximum(1.0, np.abs(expected)))


def test_channel_pruned_export_is_smaller_and_unstructured_keeps_its_zeros(exported: dict[str, tuple]) -> None:
    assert exported["channel"][1].size_bytes < 0.8 * exported["dense"][1].size_bytes
    weights = [
        onnx.numpy_helper.to_array(t)
        for t in onnx.load(exported["l1_unstructured"][2]).graph.initializer
        if len(t.dims) == 4
    ]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert zeros == pytest.approx(0.5, abs=0.01)


def test_a_mismatch_fails_the_check_naming_the_difference(exported: dict[str, tuple], images: torch.Tensor) -> None:
    model, _, path = exported["dense"]
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.model[-1].m[0].bias.add_(0.5)  # shifts one level's predictions
    with pytest.raises(export.ExportError, match=r"differs from PyTorch by .* at image \d+, prediction \d+, column "):
        export.compare(path, other, images)


# --- latency ----------------------------------------------------------------------------------------------


def _target(model: nn.Module, path: Path, method: str = "l1_unstructured", sparsity: float = 0.0) -> Target:
    def no_fp16() -> Path:
        raise AssertionError("only TensorRT asks for the fp16 graph, and only on a GPU")

    return Target(
        model=model,
        device=torch.device("cpu"),
        half=False,
        onnx=path,
        onnx_fp16=no_fp16,
        img_size=IMG,
        method=method,
        sparsity=sparsity,
        warmup=1,
        iterations=3,
        threads=1,
        batches=[1, 2],
    )


def test_latency_rows_cover_every_runtime_and_batch(exported: dict[str, tuple]) -> None:
    model, _, path = exported["dense"]
    rows = measure_latency(_target(model, path), list(RUNTIMES))
    assert [(r.runtime, r.batch) for r in rows] == [(rt, b) for rt in RUNTIMES for b in (1, 2)]
    for r in rows:
        assert r.img_size == IMG and r.warmup == 1 and r.iterations == 3
        if r.status == "measured":
            assert r.versions and r.median_ms is not None and r.p90_ms is not None and 0 < r.median_ms <= r.p90_ms
            assert r.ms_per_image == pytest.approx(r.median_ms / r.batch) and r.reason is None
        else:
            assert r.median_ms is None and r.reason
    cpu_rows = [r for r in rows if r.runtime in ("torch", "onnxruntime_cpu")]
    assert all(
        r.status == "measured" and r.device == "cpu" and r.threads == 1 and r.precision == "fp32" for r in cpu_rows
    )
    gpu_rows = [r for r in rows if r.runtime in ("onnxruntime_cuda", "tensorrt")]
    assert {r.precision for r in gpu_rows if r.runtime == "tensorrt"} == {"fp16"}
    if not torch.cuda.is_available():
        assert all(r.status == "skipped" and "no CUDA device" in (r.reason or "") for r in gpu_rows)


def test_a_2_4_run_says_why_cpu_runtimes_cannot_speed_it_up(exported: dict[str, tuple]) -> None:
    model, _, path = exported["dense"]
    rows = measure_latency(_target(model, path, "semi_structured_2_4", 0.5), ["onnxruntime_cpu", "tensorrt"])
    assert all("dense kernels" in (r.note or "") for r in rows if r.runtime == "onnxruntime_cpu")
    if not torch.cuda.is_available():
        assert all("2:4" in (r.reason or "") for r in rows if r.runtime == "tensorrt")


def test_the_protocol_runs_warmup_then_timed_iterations() -> None:
    calls: list[int] = []
    timing = time_step(lambda: calls.append(1), warmup=4, iterations=7)
    assert len(calls) == 11 and timing.samples == 7 and timing.median_ms <= timing.p90_ms


def test_speedups_compare_each_runtime_and_batch_with_dense() -> None:
    def run(rows: list[tuple[str, int, float | None]]) -> RunResult:
        return RunResult.model_construct(
            latency=[
                LatencyReport.model_construct(runtime=rt, batch=b, median_ms=ms, status="measured" if ms else "skipped")
                for rt, b, ms in rows
            ]
        )

    dense = run([("onnxruntime_cpu", 1, 10.0), ("onnxruntime_cpu", 32, 200.0), ("tensorrt", 1, None)])
    pruned = run([("onnxruntime_cpu", 1, 5.0), ("onnxruntime_cpu", 32, 250.0), ("tensorrt", 1, None)])
    assert speedups(pruned, dense) == {"onnxruntime_cpu@1": 2.0, "onnxruntime_cpu@32": 0.8}
