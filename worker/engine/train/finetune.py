"""Fine-tuning one pruned model of a sweep: what the pipeline calls between pruning and evaluation.

The pipeline prunes unstructured methods on the BN-fused model (upstream's flow, for parity), but
training wants BatchNorm. So a fused, unstructured-pruned model (or the fused dense point) is trained
as the *unfused* dense model carrying the same zeros: each pruned conv's zero pattern is copied onto
the unfused conv weight (fusing scales each output channel by a non-zero factor, so zeros stay zeros
and the fused result equals the pruned model), and masks keep those weights at zero throughout
training. A model that still has its BatchNorm layers is trained as it is, in its own (for
``channel``: smaller) shape; a channel-pruned model that was pruned fused trains without BatchNorm.
The result is fused again for evaluation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench.contract import FinetuneSettings, TrainLossPoint
from prunebench.datasets.catalog import DatasetSpec
from prunebench.worker.engine.reporting import Reporter
from prunebench.worker.engine.train.augment import AugmentSettings
from prunebench.worker.engine.train.data import TrainSet
from prunebench.worker.engine.train.trainer import TrainConfig, TrainOutcome, train, weight_masks

__all__ = ["loss_curve", "make_train_set", "run_finetune", "train_config", "trainable_model"]


def train_config(settings: FinetuneSettings) -> TrainConfig:
    return TrainConfig(
        epochs=settings.epochs,
        img_size=settings.img_size,
        batch_size=settings.batch_size,
        lr0=settings.lr0,
        lrf=settings.lrf,
        cos_lr=settings.cos_lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        warmup_epochs=settings.warmup_epochs,
        ema=settings.ema,
        seed=settings.seed,
    )


def make_train_set(
    spec: DatasetSpec,
    class_map: list[int],
    settings: FinetuneSettings,
    on_progress: Callable[[int, int], None] | None = None,
) -> TrainSet:
    """The training samples of ``spec``; ``class_map[i]`` is model class i's category id (-1: none)."""
    class_of = {category: cls for cls, category in enumerate(class_map) if category >= 0}
    augment = AugmentSettings(mosaic=1.0 if settings.mosaic else 0.0)
    return TrainSet(
        spec,
        class_of,
        settings.img_size,
        augment,
        seed=settings.seed,
        max_images=settings.max_images,
        on_progress=on_progress,
    )


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def trainable_model(
    pruned: nn.Module, unfused_dense: nn.Module | None, pruned_layers: list[str], unstructured: bool
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The model to train for a pruned model, and the masks that keep its pruned weights at zero.

    A BN-fused model whose convs all have the unfused dense model's shapes (unstructured pruning, or
    the dense point) is trained as that unfused model with the pruned zeros copied in; any other model
    (BatchNorm still present, or channel-pruned while fused) is trained as it is.
    """
    model = pruned
    if not _has_batchnorm(pruned) and unfused_dense is not None and _same_conv_shapes(pruned, unfused_dense):
        model = copy.deepcopy(unfused_dense)
        fused = dict(pruned.named_modules())
        ours = dict(model.named_modules())
        with torch.no_grad():
            for name in pruned_layers if unstructured else []:
                target = ours[name].weight
                target.mul_((fused[name].weight != 0).to(target.device))
    masks = weight_masks(model, pruned_layers) if unstructured else {}
    return model, masks


def _same_conv_shapes(a: nn.Module, b: nn.Module) -> bool:
    convs_a = {n: tuple(m.weight.shape) for n, m in a.named_modules() if isinstance(m, nn.Conv2d)}
    convs_b = {n: tuple(m.weight.shape) for n, m in b.named_modules() if isinstance(m, nn.Conv2d)}
    return convs_a == convs_b


def run_finetune(
    pruned: nn.Module,
    unfused_dense: nn.Module | None,
    pruned_layers: list[str],
    unstructured: bool,
    data: TrainSet,
    settings: FinetuneSettings,
    device: torch.device,
    *,
    checkpoint: Path | None = None,
    reporter: Reporter | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainOutcome:
    """Train the pruned model (see the module docstring); the outcome's model is fused, eval, on CPU."""
    model, masks = trainable_model(pruned, unfused_dense, pruned_layers, unstructured)
    outcome = train(
        model,
        data,
        train_config(settings),
        device,
        masks=masks,
        checkpoint=checkpoint,
        reporter=reporter,
        on_progress=on_progress,
    )
    fused = outcome.model.float().cpu().eval()
    fuse = getattr(fused, "fuse", None)
    if callable(fuse) and _has_batchnorm(fused):
        fused = fuse()
    outcome.model = fused
    return outcome


def loss_curve(outcome: TrainOutcome) -> list[TrainLossPoint]:
    return [
        TrainLossPoint(epoch=h.epoch, box=h.box, obj=h.obj, cls=h.cls, total=h.total, seconds=h.seconds)
        for h in outcome.history
    ]
