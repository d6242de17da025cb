"""Calibration images: a fixed, spread-out subset of a decoded dataset, batched like evaluation batches.

The subset is the first ``images`` files by name (the order upstream lists a split, so it is stable
across runs and workers); batches are upstream's rectangular letterboxed batches of ``batch_size``,
scaled to [0, 1] like evaluation inputs. Labels are not used.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from prunebench.worker.engine.data import DecodedDataset, aspect_order, letterbox, make_batches, to_chw_rgb


def subset(dataset: DecodedDataset, images: int) -> DecodedDataset:
    """The first ``images`` images by file name, back in aspect-ratio order (all of them if fewer)."""
    chosen = sorted(dataset.images, key=lambda im: im.file_name)[: max(0, images)]
    order = aspect_order([im.orig_hw for im in chosen])
    return DecodedDataset(name=dataset.name, img_size=dataset.img_size, images=[chosen[i] for i in order])


def batches(
    dataset: DecodedDataset, batch_size: int, stride: int, device: torch.device, dtype: torch.dtype
) -> Iterator[torch.Tensor]:
    """Network inputs ``[B, 3, H, W]`` (RGB, /255) over ``dataset``, one rectangular batch at a time."""
    for batch in make_batches(dataset, batch_size, stride):
        pixels = [to_chw_rgb(letterbox(dataset.images[i].pixels, batch.shape).pixels) for i in batch.indices]
        yield torch.from_numpy(np.stack(pixels)).to(device=device, dtype=dtype) / 255
