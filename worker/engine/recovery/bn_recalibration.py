"""BatchNorm recalibration: re-estimate every BatchNorm's running statistics on calibration images.

Pruning changes what each BatchNorm sees (fewer input channels, shifted activations), so the running mean
and variance stored at training time no longer normalise it. Re-estimating them on a few hundred
unlabelled images (forward passes only, weights untouched) is the data-light recovery used by e.g. NNCF
and Torch-Pruning's examples. The estimate is torch's cumulative average (``momentum=None``): every batch
weighs the same, so the order of the images does not matter much. Fuse the model afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class RecalibrationError(ValueError):
    """Recalibration cannot run (no BatchNorm layers, no images); the message says why."""


@torch.no_grad()
def recalibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset and re-estimate all BatchNorm running statistics of ``model`` from ``batches``, in place.

    ``batches`` yields network inputs ``[B, C, H, W]`` on the model's device and dtype. The rest of the
    model stays in eval mode (Detect decodes as in inference); only BatchNorms switch to training mode for
    the passes and are back in eval mode afterwards. Returns the number of images seen. Raises
    RecalibrationError for a fused model (no BatchNorm) or when ``batches`` is empty.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise RecalibrationError("BatchNorm recalibration needs BatchNorm layers; this model is fused")
    momenta = [bn.momentum for bn in bns]
    was_training = model.training
    seen = 0
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all batches
        bn.train()
    try:
        for images in batches:
            model(images)
            seen += int(images.shape[0])
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
            bn.eval()
        model.train(was_training)
    if seen == 0:
        raise RecalibrationError("BatchNorm recalibration got no calibration images")
    return seen
