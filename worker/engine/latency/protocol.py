"""The timing protocol every latency figure follows, whatever the runtime.

1. ``warmup`` untimed iterations (allocations, kernel selection, caches);
2. ``iterations`` timed iterations, each one complete batch: wall time from before the call until its
   result is ready (``time.perf_counter``; GPU runtimes synchronise the device inside ``step``);
3. median and 90th percentile of those times (``numpy.percentile``, linear interpolation), in ms.

The input is one fixed tensor per batch size (seeded uniform noise in [0, 1) at ``[B, 3, img, img]``):
convolution time does not depend on pixel values, and the same bytes go to every runtime. Only the
network's forward pass is timed (the exported graph's ``images -> output0``), never decoding or NMS.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

INPUT_SEED = 0


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float
    samples: int


def time_step(step: Callable[[], object], warmup: int, iterations: int) -> Timing:
    """Run ``step`` ``warmup`` times untimed, then ``iterations`` times timed; median and p90 in ms."""
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    for _ in range(warmup):
        step()
    times = np.empty(iterations, dtype=np.float64)
    for i in range(iterations):
        start = time.perf_counter()
        step()
        times[i] = (time.perf_counter() - start) * 1000.0
    return Timing(median_ms=float(np.median(times)), p90_ms=float(np.percentile(times, 90)), samples=iterations)


def input_batch(batch: int, img_size: int, channels: int = 3) -> torch.Tensor:
    """The fixed timing input: float32 ``[batch, channels, img_size, img_size]``, uniform [0, 1), seeded."""
    generator = torch.Generator().manual_seed(INPUT_SEED)
    return torch.rand(batch, channels, img_size, img_size, generator=generator)


def cpu_threads(requested: int | None) -> int:
    """The CPU thread count used for every CPU figure of a job: the request's, else this worker's cores."""
    if requested is not None:
        return int(requested)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
