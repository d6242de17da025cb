"""Fine-tune a YOLOv5 detector the way upstream's ``train.py`` trains one (its documented defaults).

* **Optimizer**: SGD, momentum 0.937, Nesterov, three parameter groups: biases (no weight decay),
  conv/linear weights (weight decay 5e-4), normalisation-layer weights (no decay).
* **Nominal batch 64**: gradients are accumulated over ``round(64 / batch_size)`` batches before a step
  and the weight decay is scaled by ``batch_size * accumulate / 64``; gradients are clipped to norm 10.
* **Warm-up** over ``max(round(warmup_epochs * batches_per_epoch), 100)`` iterations: the bias group's
  lr falls from 0.1 and the others' rise from 0 to the scheduled lr, momentum rises 0.8 -> 0.937, and
  accumulation rises from 1 to its nominal value.
* **Schedule** per epoch: linear ``(1 - e/E)(1 - lrf) + lrf`` or cosine ``((1 - cos(pi e/E))/2)(lrf - 1) + 1``
  times ``lr0`` (lr0 0.01, lrf 0.01).
* **EMA** of every floating-point weight and buffer after each step, decay ``0.9999 (1 - exp(-u/2000))``
  for the u-th update; the EMA model is the result, as upstream keeps it.
* **AMP** (float16 autocast + gradient scaling) on CUDA only.

prunebench additions: unstructured pruning masks are re-applied after every optimizer step, so pruned
weights stay exactly zero; every finished epoch is checkpointed (atomically), and a run given the same
checkpoint file resumes after its last finished epoch and ends with the same weights an uninterrupted
run would have had; progress and cancellation go through the engine's ``Reporter``.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunebench.worker.engine.artifacts import atomic_save
from prunebench.worker.engine.reporting import JobCanceled, NullReporter, Reporter
from prunebench.worker.engine.train.data import TrainSet, collate
from prunebench.worker.engine.train.loss import LossGains, YoloLoss

CHECKPOINT_VERSION = 1
EMA_DECAY = 0.9999
EMA_TAU = 2000.0
MIN_WARMUP_ITERATIONS = 100
MAX_LOADER_WORKERS = 8


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters; defaults are upstream's (hyp.scratch-low.yaml, train.py)."""

    epochs: int = 10
    img_size: int = 640
    batch_size: int = 16
    lr0: float = 0.01
    lrf: float = 0.01
    cos_lr: bool = False
    momentum: float = 0.937
    weight_decay: float = 0.0005
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    ema: bool = True
    seed: int = 0
    nominal_batch: int = 64
    max_grad_norm: float = 10.0
    gains: LossGains = field(default_factory=LossGains)
    loader_workers: int | None = None
    """Data-loading processes; None: none on CPU (the model's threads use every core), up to 8 on CUDA.
    Samples depend only on (seed, epoch, image), so this never changes the result."""

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of lr0 for ``epoch`` (0-based)."""
        if self.cos_lr:
            return ((1 - math.cos(epoch * math.pi / self.epochs)) / 2) * (self.lrf - 1) + 1
        return (1 - epoch / self.epochs) * (1.0 - self.lrf) + self.lrf


@dataclass
class EpochLoss:
    """Mean loss components over one epoch's batches (upstream's ``mloss``), and the epoch's seconds."""

    epoch: int
    box: float
    obj: float
    cls: float
    total: float
    seconds: float


@dataclass
class TrainOutcome:
    model: nn.Module  # the EMA model (or the trained model when EMA is off), eval mode, on the device
    history: list[EpochLoss]
    resumed_from: int | None  # epochs already done by an earlier attempt, when it resumed
    seconds: float
    images: int
    instances: int


# ---------------------------------------------------------------------------------------------------------
# Optimizer and EMA


def parameter_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """(biases, decayed weights, normalisation weights), upstream's three groups."""
    biases, weights, norm_weights = [], [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if name == "bias":
                biases.append(param)
            elif name == "weight" and isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm):
                norm_weights.append(param)
            else:
                weights.append(param)
    return biases, weights, norm_weights


def make_optimizer(model: nn.Module, config: TrainConfig, weight_decay: float) -> torch.optim.SGD:
    biases, weights, norm_weights = parameter_groups(model)
    # Group order matters: warm-up treats group 0 (biases) differently.
    return torch.optim.SGD(
        [
            {"params": biases, "weight_decay": 0.0},
            {"params": weights, "weight_decay": weight_decay},
            {"params": norm_weights, "weight_decay": 0.0},
        ],
        lr=config.lr0,
        momentum=config.momentum,
        nesterov=True,
    )


class ModelEMA:
    """Exponential moving average of a model's floating-point state (parameters and buffers)."""

    def __init__(self, model: nn.Module, updates: int = 0) -> None:
        self.ema = copy.deepcopy(model).eval()
        self.updates = updates
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def decay(self) -> float:
        # Ramps up from 0 so early updates follow the model closely (upstream's tau = 2000).
        return EMA_DECAY * (1 - math.exp(-self.updates / EMA_TAU))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay()
        current = model.state_dict()
        for name, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(current[name].detach(), alpha=1 - d)


# ---------------------------------------------------------------------------------------------------------
# Masks


def weight_masks(model: nn.Module, layer_names: list[str]) -> dict[str, torch.Tensor]:
    """For each named Conv2d, where its weight is non-zero now (what must stay zero while training)."""
    modules = dict(model.named_modules())
    return {name: modules[name].weight.detach() != 0 for name in layer_names}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        weight = modules[name].weight
        weight.mul_(mask.to(weight.device, weight.dtype))


# ---------------------------------------------------------------------------------------------------------
# Checkpoints


def _identity(config: TrainConfig, model: nn.Module, images: int) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed: settings, data size and every tensor's shape."""
    settings = asdict(config)
    settings["gains"] = asdict(config.gains)
    settings.pop("loader_workers")  # how samples are made, not what they are
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return {"settings": settings, "images": images, "shapes": shapes}


def load_checkpoint(path: Path | None, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The saved training state at ``path`` if it belongs to this very run, else None (start over)."""
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a torn or foreign file: training from the start is always correct
        return None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION or state.get("identity") != identity:
        return None
    return state


# ---------------------------------------------------------------------------------------------------------
# The loop

ProgressFn = Callable[[dict[str, Any]], None]
"""Called with {epoch, epochs, iteration, iterations, box, obj, cls} (epoch 1-based) during training."""


@dataclass
class _Run:
    model: nn.Module
    config: TrainConfig
    data: TrainSet
    device: torch.device
    loss: YoloLoss
    optimizer: torch.optim.SGD
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None
    masks: Mapping[str, torch.Tensor]
    reporter: Reporter
    on_progress: ProgressFn | None
    nominal_accumulate: int
    batches: int
    warmup: int
    amp: bool
    loader_workers: int
    last_step: int = -1


def _warm_up(run: _Run, ni: int, epoch: int) -> int:
    """Warm-up lrs and momentum for iteration ``ni``; returns how many batches to accumulate."""
    if ni > run.warmup:
        return run.nominal_accumulate
    c = run.config
    xi = [0, run.warmup]
    for j, group in enumerate(run.optimizer.param_groups):
        start = c.warmup_bias_lr if j == 0 else 0.0
        group["lr"] = float(np.interp(ni, xi, [start, c.lr0 * c.lr_factor(epoch)]))
        group["momentum"] = float(np.interp(ni, xi, [c.warmup_momentum, c.momentum]))
    return max(1, int(np.interp(ni, xi, [1, c.nominal_batch / c.batch_size]).round()))


def _step(run: _Run, ni: int) -> None:
    run.scaler.unscale_(run.optimizer)
    nn.utils.clip_grad_norm_(run.model.parameters(), max_norm=run.config.max_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad()
    apply_masks(run.model, run.masks)
    if run.ema is not None:
        run.ema.update(run.model)
    run.last_step = ni


class _EpochSamples(torch.utils.data.Dataset[tuple[np.ndarray, np.ndarray]]):
    """One epoch's samples by index, for DataLoader workers."""

    def __init__(self, data: TrainSet, epoch: int) -> None:
        self.data, self.epoch = data, epoch

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.data.sample(index, self.epoch)


def _loader_workers(config: TrainConfig, device: torch.device) -> int:
    if config.loader_workers is not None:
        return config.loader_workers
    return min(MAX_LOADER_WORKERS, os.cpu_count() or 1) if device.type == "cuda" else 0


def _batches(run: _Run, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The epoch's batches in its shuffled order (seeded by epoch): in this process on CPU, where the
    model's own threads use every core, or from DataLoader worker processes when training on CUDA."""
    size = run.config.batch_size
    order = np.random.default_rng([run.config.seed, epoch, 1 << 20]).permutation(len(run.data))
    chunks = [order[i * size : (i + 1) * size].tolist() for i in range(run.batches)]
    if run.loader_workers == 0:
        for chunk in chunks:
            yield collate([run.data.sample(k, epoch) for k in chunk])
        return
    yield from torch.utils.data.DataLoader(
        _EpochSamples(run.data, epoch),
        batch_sampler=chunks,
        num_workers=run.loader_workers,
        collate_fn=collate,
        pin_memory=run.device.type == "cuda",
    )


def _epoch(run: _Run, epoch: int) -> EpochLoss:
    started = time.perf_counter()
    c = run.config
    run.model.train()
    for group in run.optimizer.param_groups:
        group["lr"] = c.lr0 * c.lr_factor(epoch)
    sums = np.zeros(3)
    run.optimizer.zero_grad()
    for i, (images, targets) in enumerate(_batches(run, epoch)):
        if run.reporter.should_stop():
            raise JobCanceled()
        ni = i + run.batches * epoch
        accumulate = _warm_up(run, ni, epoch)
        images = images.to(run.device, non_blocking=True).float() / 255
        with torch.autocast(device_type=run.device.type, dtype=torch.float16, enabled=run.amp):
            preds = run.model(images)
        parts = run.loss(preds, targets)
        run.scaler.scale(parts.total).backward()
        if ni - run.last_step >= accumulate:
            _step(run, ni)
        sums += [float(parts.box), float(parts.obj), float(parts.cls)]
        if run.on_progress is not None:
            box, obj, cls = (float(v) for v in sums / (i + 1))
            run.on_progress(
                {"epoch": epoch + 1, "epochs": c.epochs, "iteration": i + 1, "iterations": run.batches,
                 "box": box, "obj": obj, "cls": cls}
            )  # fmt: skip
    box, obj, cls = (float(v) for v in sums / max(run.batches, 1))
    return EpochLoss(epoch + 1, box, obj, cls, box + obj + cls, time.perf_counter() - started)


def _checkpoint(run: _Run, path: Path, epoch: int, history: list[EpochLoss], identity: dict[str, Any]) -> None:
    atomic_save(
        {
            "version": CHECKPOINT_VERSION,
            "identity": identity,
            "epoch": epoch,  # epochs finished
            "model": run.model.state_dict(),
            "ema": run.ema.ema.state_dict() if run.ema is not None else None,
            "ema_updates": run.ema.updates if run.ema is not None else 0,
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict(),
            "last_step": run.last_step,
            "history": [asdict(h) for h in history],
        },
        path,
    )


def _restore(run: _Run, state: dict[str, Any]) -> tuple[int, list[EpochLoss]]:
    run.model.load_state_dict(state["model"])
    if run.ema is not None and state.get("ema") is not None:
        run.ema.ema.load_state_dict(state["ema"])
        run.ema.updates = int(state["ema_updates"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    run.last_step = int(state["last_step"])
    return int(state["epoch"]), [EpochLoss(**h) for h in state["history"]]


def train(
    model: nn.Module,
    data: TrainSet,
    config: TrainConfig,
    device: torch.device,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    checkpoint: Path | None = None,
    reporter: Reporter | None = None,
    on_progress: ProgressFn | None = None,
) -> TrainOutcome:
    """Train ``model`` (a DetectionModel, fused or not) on ``data`` for ``config.epochs`` epochs.

    ``masks`` (Conv2d name -> bool tensor) keep pruned weights at zero. With ``checkpoint``, each
    finished epoch is saved there and a matching earlier save is resumed from. Raises JobCanceled when
    the reporter says stop (checked before every batch). The model is trained in place.
    """
    started = time.perf_counter()
    reporter = reporter or NullReporter()
    model = model.to(device).float()
    masks = {name: mask.to(device) for name, mask in (masks or {}).items()}
    model.requires_grad_(True)  # fused convs come frozen from inference
    apply_masks(model, masks)
    batches = math.ceil(len(data) / config.batch_size)
    nominal = max(round(config.nominal_batch / config.batch_size), 1)
    weight_decay = config.weight_decay * config.batch_size * nominal / config.nominal_batch
    amp = device.type == "cuda"
    run = _Run(
        model=model,
        config=config,
        data=data,
        device=device,
        loss=YoloLoss.for_model(model, config.img_size, config.gains),
        optimizer=make_optimizer(model, config, weight_decay),
        scaler=torch.amp.GradScaler(device.type, enabled=amp),
        ema=ModelEMA(model) if config.ema else None,
        masks=masks,
        reporter=reporter,
        on_progress=on_progress,
        nominal_accumulate=nominal,
        batches=batches,
        warmup=max(round(config.warmup_epochs * batches), MIN_WARMUP_ITERATIONS),
        amp=amp,
        loader_workers=_loader_workers(config, device),
    )
    identity = _identity(config, model, len(data))
    saved = load_checkpoint(checkpoint, identity)
    done, history = _restore(run, saved) if saved is not None else (0, [])
    resumed_from = done if saved is not None else None

    for epoch in range(done, config.epochs):
        history.append(_epoch(run, epoch))
        if checkpoint is not None:
            _checkpoint(run, checkpoint, epoch + 1, history, identity)

    result = run.ema.ema if run.ema is not None else model
    apply_masks(result, masks)
    return TrainOutcome(
        model=result.eval(),
        history=history,
        resumed_from=resumed_from,
        seconds=time.perf_counter() - started,
        images=len(data),
        instances=data.instances,
    )
