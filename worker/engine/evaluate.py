"""One evaluation pass of one model over a decoded dataset: letterbox, infer, NMS, with stage timings.

The loop mirrors upstream ``val.py``: rectangular batches, uint8 -> float (fp16 on CUDA when asked) / 255,
a single forward per batch, NMS. The flow of one batch:

1. **load** (a background thread, one batch ahead): letterbox each image to the batch shape, CHW RGB,
   stack into one uint8 tensor, pinned memory on CUDA. Batch k+1 is prepared while batch k infers.
2. **preprocess** (timed): copy to the device (``non_blocking``), uint8 -> float/half, / 255; on CUDA
   also channels_last. This is what upstream's ``val.py`` times as pre-process; as there, letterboxing
   belongs to the loader and is not in the speed figures (it overlaps inference).
3. **inference** (timed): one forward of the batch (the floor: everything else is overhead).
4. **NMS** (timed): ``non_max_suppression`` on the device, one batched call.

Stage timings are wall clock, CUDA-synchronised on GPU. Hooks for other features: ``infer`` (the
forward call: runtimes, fault injection) and the ``EvalOutput`` detections. Additions a service needs:

* progress after every batch and a cancellation check before each (``JobCanceled``);
* CUDA out-of-memory back-off: a batch that does not fit is split into halves of the *same* letterbox
  shape and retried, down to one image, so the detections are unchanged; later batches keep the
  smaller chunk size;
* the forward call is a parameter (``infer``), so tests can inject failures on CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from prunebench.contract import Progress
from prunebench.worker.engine.data import (
    Batch,
    DecodedDataset,
    Letterboxed,
    input_gain,
    letterbox,
    make_batches,
    to_chw_rgb,
)
from prunebench.worker.engine.nms import non_max_suppression
from prunebench.worker.engine.reporting import JobCanceled, NullReporter, Reporter
from prunebench.worker.engine.scoring import ImageDetections

InferFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def default_infer(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Inference output [B, N, 5 + nc] of an eval-mode detector (which returns (pred, feature maps))."""
    out = model(images)
    return out[0] if isinstance(out, tuple | list) else out


@dataclass
class EvalConfig:
    batch_size: int = 32
    conf_thres: float = 0.001
    iou_thres: float = 0.6
    max_det: int = 300
    half: bool = False  # fp16; the caller only sets it on CUDA
    stride: int = 32  # batch-shape grid: max(model max stride, 32)


@dataclass
class StageTimes:
    """Seconds summed over the pass; ``preprocess`` as upstream defines it (see the module docstring)."""

    preprocess: float = 0.0
    inference: float = 0.0
    nms: float = 0.0

    @property
    def total(self) -> float:
        return self.preprocess + self.inference + self.nms


@dataclass
class EvalOutput:
    detections: list[ImageDetections]
    times: StageTimes
    images: int
    seconds: float
    batch_size_used: int
    oom_backoffs: int = 0
    chunk_sizes: list[int] = field(default_factory=list)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc)


class _Clock:
    """Wall clock that first waits for queued CUDA work, so each stage is charged its own GPU time."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _release_cuda_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


class _ChunkedInfer:
    """Runs a batch in chunks of ``chunk`` images, halving ``chunk`` on every out-of-memory error."""

    def __init__(self, infer: InferFn, batch_size: int, device: torch.device) -> None:
        self.infer = infer
        self.chunk = batch_size
        self.device = device
        self.backoffs = 0

    def __call__(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        start = 0
        while start < images.shape[0]:
            part = images[start : start + self.chunk]
            try:
                outputs.append(self.infer(model, part))
            except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                if not is_oom(exc) or self.chunk == 1:
                    raise
                del exc  # drop the traceback's references to the failed chunk's tensors first
                _release_cuda_memory(self.device)
                self.chunk = max(1, self.chunk // 2)
                self.backoffs += 1
                continue  # retry the same images with a smaller chunk
            start += part.shape[0]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, 0)


@dataclass
class LoadedBatch:
    """One batch as the loader leaves it: uint8 NCHW on the host, and how each image was boxed."""

    batch: Batch
    host: torch.Tensor
    boxed: list[Letterboxed]


def load_batch(dataset: DecodedDataset, batch: Batch, pin: bool) -> LoadedBatch:
    """The loader's work for one batch: each image letterboxed to ``batch.shape``, CHW RGB, stacked uint8."""
    boxed = [letterbox(dataset.images[i].pixels, batch.shape) for i in batch.indices]
    host = torch.from_numpy(np.stack([to_chw_rgb(b.pixels) for b in boxed]))
    if pin:
        host = host.pin_memory()  # lets the copy to the GPU run asynchronously
    return LoadedBatch(batch, host, boxed)


def _prefetched(dataset: DecodedDataset, batches: list[Batch], pin: bool) -> Iterator[LoadedBatch]:
    """Yield loaded batches in order, each prepared on a worker thread while the previous one runs."""
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prunebench-loader") as pool:
        pending = pool.submit(load_batch, dataset, batches[0], pin)
        for following in [*batches[1:], None]:
            loaded = pending.result()
            if following is not None:
                pending = pool.submit(load_batch, dataset, following, pin)
            yield loaded


def to_input(host: torch.Tensor, device: torch.device, half: bool) -> torch.Tensor:
    """Upstream's pre-process: to the device, uint8 -> float (half when asked), / 255 (channels_last on CUDA)."""
    images = host.to(device, non_blocking=True)
    images = images.half() if half else images.float()
    images /= 255
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return images


EVAL_SHARE = 0.9
"""Share of one sweep point's progress spent evaluating; scoring and saving take the rest."""


def _report(
    reporter: Reporter, base: Progress, done: int, total: int, span: tuple[float, float] = (0.0, EVAL_SHARE)
) -> None:
    runs = max(base.runs_total, 1)
    start, end = span
    percent = 100.0 * (base.run_index + start + (end - start) * done / max(total, 1)) / runs
    reporter.progress(
        base.model_copy(update={"stage": "evaluating", "images_done": done, "images_total": total, "percent": percent})
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: DecodedDataset,
    config: EvalConfig,
    device: torch.device,
    reporter: Reporter | None = None,
    progress: Progress | None = None,
    infer: InferFn = default_infer,
    span: tuple[float, float] = (0.0, EVAL_SHARE),
) -> EvalOutput:
    """Detections (network-input pixels) for every image, stage timings, and OOM back-off counts.

    ``model`` must already be on ``device`` in eval mode (and half when ``config.half``). ``span`` is the
    (start, end) share of the sweep point's progress this pass fills.
    """
    reporter = reporter or NullReporter()
    base = progress or Progress()
    clock = _Clock(device)
    runner = _ChunkedInfer(infer, config.batch_size, device)
    batches = make_batches(dataset, config.batch_size, config.stride)
    total = len(dataset.images)
    times = StageTimes()
    detections: list[ImageDetections] = []
    chunk_sizes: list[int] = []
    done = 0
    started = time.perf_counter()
    _report(reporter, base, 0, total, span)
    for loaded in _prefetched(dataset, batches, pin=device.type == "cuda"):
        if reporter.should_stop():
            raise JobCanceled()
        batch = loaded.batch

        t0 = clock.now()
        images = to_input(loaded.host, device, config.half)
        t1 = clock.now()
        pred = runner(model, images)
        t2 = clock.now()
        # NMS in float32 even after fp16 inference: class offsets (cls x 7680) overflow fp16's 65504.
        per_image = non_max_suppression(pred.float(), config.conf_thres, config.iou_thres, config.max_det)
        t3 = clock.now()

        times.preprocess += t1 - t0
        times.inference += t2 - t1
        times.nms += t3 - t2
        chunk_sizes.append(runner.chunk)
        for i, det, box in zip(batch.indices, per_image, loaded.boxed, strict=True):
            gain = input_gain(dataset.images[i], box.gain)
            detections.append(ImageDetections(index=i, boxes=det.detach().cpu(), gain=gain, pad=box.pad))
        done += len(batch.indices)
        _report(reporter, base, done, total, span)

    return EvalOutput(
        detections=detections,
        times=times,
        images=total,
        seconds=time.perf_counter() - started,
        batch_size_used=min(chunk_sizes, default=config.batch_size),
        oom_backoffs=runner.backoffs,
        chunk_sizes=chunk_sizes,
    )
