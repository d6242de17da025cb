"""Gradients for ``taylor`` importance: the YOLOv5 training loss on a few labelled, un-augmented batches.

First-order Taylor importance (Molchanov et al. 2019) scores a channel by ``|Σ w · ∂L/∂w|``-style
products, so it needs ``∂L/∂w`` of a real detection loss. Here ``L`` is the project's YOLOv5 loss
(``train.loss.YoloLoss``, upstream's ComputeLoss) summed over the first ``images`` images of a decoded,
labelled dataset (the job's calibration split: see ``calibration`` in the job request), each
letterboxed to a square ``img_size`` input exactly as evaluation would, without augmentation.
BatchNorm layers stay in eval mode (the statistics inference uses; nothing is updated) while the rest
of the model is in training mode, so the Detect head returns the raw per-level maps the loss takes.
Gradients accumulate over the batches in ``.grad``; the pruner reads and clears them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from prunebench.worker.engine.data import DecodedDataset, input_gain, letterbox, to_chw_rgb
from prunebench.worker.engine.pruning.channel import GradientFn
from prunebench.worker.engine.train.data import collate, to_normalised_xywh
from prunebench.worker.engine.train.loss import YoloLoss

MAX_IMAGES = 64
"""Images taylor takes gradients on at most: "a few labelled batches" (two batches of 32)."""


class TaylorError(ValueError):
    """``taylor`` importance cannot run (no labelled images); the message says why."""


def _sample(
    image_index: int, dataset: DecodedDataset, classes: dict[int, int], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One image letterboxed to ``size`` x ``size`` (CHW RGB uint8) and its boxes as class + normalised xywh."""
    image = dataset.images[image_index]
    boxed = letterbox(image.pixels, (size, size))
    gain = input_gain(image, boxed.gain)
    rows = [
        [classes[t.category_id], *(v * gain + boxed.pad[i % 2] for i, v in enumerate(t.box))]
        for t in image.truths
        if t.category_id in classes and not t.iscrowd
    ]
    boxes = np.asarray(rows, dtype=np.float32).reshape(-1, 5)
    return to_chw_rgb(boxed.pixels), to_normalised_xywh(boxes, size)


def labelled_batches(
    dataset: DecodedDataset, class_map: Sequence[int], img_size: int, batch_size: int, images: int = MAX_IMAGES
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Up to ``images`` images (in the dataset's order) as (uint8 images ``[B,3,S,S]``, targets ``[n,6]``).

    ``class_map`` is the model's class -> dataset category id (-1: none), as the pipeline builds it.
    Raises TaylorError when no chosen image has a box of a model class.
    """
    classes = {category: cls for cls, category in enumerate(class_map) if category >= 0}
    chosen = list(range(min(images, len(dataset.images))))
    batches = [
        collate([_sample(i, dataset, classes, img_size) for i in chosen[start : start + batch_size]])
        for start in range(0, len(chosen), batch_size)
    ]
    if not any(len(targets) for _, targets in batches):
        raise TaylorError(
            f"taylor importance needs labelled images; {dataset.name!r} has no boxes of the model's classes"
        )
    return batches


def gradient_fn(batches: list[tuple[torch.Tensor, torch.Tensor]], img_size: int) -> GradientFn:
    """A ``ChannelOptions.gradients`` hook: forward and backward of the YOLOv5 loss over ``batches``."""

    def fill(model: nn.Module) -> None:
        loss = YoloLoss.for_model(model, img_size)
        param = next(model.parameters())
        was_training = model.training
        model.train()
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()  # inference statistics; running stats must not move
        try:
            for images, targets in batches:
                x = images.to(device=param.device, dtype=param.dtype) / 255
                loss(model(x), targets).total.backward()
        finally:
            model.train(was_training)

    return fill
