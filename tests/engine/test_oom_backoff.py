"""The evaluation loop: OOM back-off keeps results identical, cancellation and progress work (CPU only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from prunebench.contract import Progress
from prunebench.worker.engine.data import DecodedDataset, DecodedImage, resize_long_side
from prunebench.worker.engine.evaluate import EVAL_SHARE, EvalConfig, default_infer, evaluate, is_oom
from prunebench.worker.engine.reporting import JobCanceled, NullReporter

CPU = torch.device("cpu")


class TinyDetector(nn.Module):
    """Deterministic per-image 'detector': one box per image whose score depends on the pixels."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, _, h, w = x.shape
        mean = x.mean((1, 2, 3))
        rows = torch.zeros(b, 2, 7)
        rows[:, 0, :4] = torch.tensor([w / 2, h / 2, w / 4, h / 4])
        rows[:, 0, 4] = 0.5 + mean / 4
        rows[:, 0, 5] = mean
        rows[:, 0, 6] = 1 - mean
        rows[:, 1, :4] = torch.tensor([w / 4, h / 4, 8.0, 8.0])
        rows[:, 1, 4] = 0.9
        rows[:, 1, 5] = 0.3
        return rows, []


def _dataset(n: int = 11) -> DecodedDataset:
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        h, w = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        pixels = resize_long_side(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), 64)
        images.append(DecodedImage(image_id=i + 1, file_name=f"{i}.jpg", pixels=pixels, orig_hw=(h, w)))
    images.sort(key=lambda im: im.orig_hw[0] / im.orig_hw[1])
    return DecodedDataset(name="tiny", img_size=64, images=images)


def _oom_above(limit: int, error: type[Exception] = torch.cuda.OutOfMemoryError):
    calls: list[int] = []

    def infer(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        calls.append(images.shape[0])
        if images.shape[0] > limit:
            raise error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return default_infer(model, images)

    return infer, calls


def _same(a, b) -> None:
    assert [d.index for d in a.detections] == [d.index for d in b.detections]
    for x, y in zip(a.detections, b.detections, strict=True):
        assert torch.equal(x.boxes, y.boxes)
        assert (x.gain, x.pad) == (y.gain, y.pad)


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, RuntimeError])
def test_oom_splits_batches_and_keeps_results(error: type[Exception]) -> None:
    data = _dataset()
    config = EvalConfig(batch_size=8, conf_thres=0.001, iou_thres=0.6)
    clean = evaluate(TinyDetector(), data, config, CPU)
    infer, calls = _oom_above(2, error)
    backed_off = evaluate(TinyDetector(), data, config, CPU, infer=infer)
    _same(clean, backed_off)
    assert clean.oom_backoffs == 0 and clean.batch_size_used == 8
    assert backed_off.oom_backoffs == 2  # 8 -> 4 -> 2
    assert backed_off.batch_size_used == 2
    assert calls[:3] == [8, 4, 2]
    assert max(calls[3:]) == 2  # later batches start at the reduced size


def test_oom_at_one_image_is_raised() -> None:
    infer, _ = _oom_above(0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        evaluate(TinyDetector(), _dataset(3), EvalConfig(batch_size=4), CPU, infer=infer)


def test_other_errors_are_not_treated_as_oom() -> None:
    def infer(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        evaluate(TinyDetector(), _dataset(3), EvalConfig(batch_size=4), CPU, infer=infer)
    assert is_oom(RuntimeError("CUDA out of memory")) and not is_oom(ValueError("out of memory"))


class _Recorder(NullReporter):
    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.seen: list[Progress] = []
        self.checks = 0
        self.stop_after = stop_after

    def progress(self, progress: Progress) -> None:
        super().progress(progress)
        self.seen.append(progress)

    def should_stop(self) -> bool:
        self.checks += 1
        return self.stop_after is not None and self.checks > self.stop_after


def test_progress_every_batch() -> None:
    reporter = _Recorder()
    base = Progress(stage="evaluating", run_index=1, runs_total=2, sparsity=0.5)
    out = evaluate(TinyDetector(), _dataset(11), EvalConfig(batch_size=4), CPU, reporter, base)
    assert [p.images_done for p in reporter.seen] == [0, 4, 8, 11]
    assert all(p.images_total == 11 and p.stage == "evaluating" and p.sparsity == 0.5 for p in reporter.seen)
    # The last of two runs: evaluation fills its share of the second half; scoring takes the rest.
    assert reporter.seen[-1].percent == pytest.approx(50.0 + 50.0 * EVAL_SHARE)
    assert reporter.seen[0].percent == pytest.approx(50.0)
    assert out.images == 11 and len(out.detections) == 11
    assert out.times.total > 0


def test_cancel_between_batches() -> None:
    reporter = _Recorder(stop_after=1)
    with pytest.raises(JobCanceled):
        evaluate(TinyDetector(), _dataset(11), EvalConfig(batch_size=4), CPU, reporter)
    assert reporter.seen[-1].images_done == 4


def test_device_resolution_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from prunebench.worker.engine.device import DeviceError, environment, resolve_device, use_half

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU and resolve_device("cpu") == CPU
    with pytest.raises(DeviceError, match="no usable CUDA"):
        resolve_device("cuda:0")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    assert use_half(True, CPU) is False and use_half(True, torch.device("cuda", 0)) is True
    env = environment(CPU, worker="w1")
    assert env.device == "cpu" and env.cuda is None and env.worker == "w1" and env.torch == torch.__version__
