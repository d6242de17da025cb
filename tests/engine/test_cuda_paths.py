"""The CUDA paths (fp16, channels_last, cudnn.benchmark, pinned prefetch, one batched NMS call), run
unchanged when a GPU is present; skipped on CPU-only machines."""

from __future__ import annotations

import pytest
import torch

from prunebench.contract import JobRequest
from prunebench.datasets.catalog import BUILTIN_ROOT, builtin_datasets
from prunebench.worker.engine.nms import nms_image, non_max_suppression
from prunebench.worker.engine.pipeline import run_local

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _request(**overrides: object) -> JobRequest:
    fields = dict(checkpoint="yolov5n_shapes.pt", dataset="shapes-val", sparsity=0.3, img_size=320, batch_size=32)
    fields.update(overrides)
    return JobRequest(**fields)  # type: ignore[arg-type]


def test_fp16_sweep_on_cuda_is_close_to_cpu() -> None:
    spec = builtin_datasets()["shapes-val"]
    cpu = run_local(_request(device="cpu", half=False), BUILTIN_ROOT / "yolov5n_shapes.pt", spec)
    gpu = run_local(_request(device="cuda", half=True), BUILTIN_ROOT / "yolov5n_shapes.pt", spec)
    assert gpu.settings["half"] is True and gpu.environment.device.startswith("cuda")
    assert torch.backends.cudnn.benchmark is True
    for a, b in zip(cpu.runs, gpu.runs, strict=True):
        assert b.metrics.map == pytest.approx(a.metrics.map, abs=0.01)  # fp16 is not bit-identical
        assert b.gflops == a.gflops and b.params == a.params


def test_fp32_cuda_sweep_matches_cpu_to_rounding() -> None:
    spec = builtin_datasets()["shapes-val"]
    cpu = run_local(_request(device="cpu", half=False), BUILTIN_ROOT / "yolov5n_shapes.pt", spec)
    gpu = run_local(_request(device="cuda", half=False), BUILTIN_ROOT / "yolov5n_shapes.pt", spec)
    for a, b in zip(cpu.runs, gpu.runs, strict=True):
        assert b.metrics.map == pytest.approx(a.metrics.map, abs=2e-3)


def test_one_batched_nms_call_on_cuda_keeps_the_per_image_detections() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand((8, 3000, 10), generator=gen)
    x[..., :2] *= 320
    x[..., 2:4] = x[..., 2:4] * 40 + 2
    got = non_max_suppression(x.cuda(), 0.001, 0.6, 300)
    same = 0
    for g, xi in zip(got, x, strict=True):
        expected = nms_image(xi, 0.001, 0.6, 300)
        same += g.shape == expected.shape and torch.allclose(g.cpu(), expected, atol=1e-4)
    # float64 IoUs on CUDA may decide an exactly-borderline pair differently (see nms.py): rare.
    assert same >= len(got) - 1
