"""The pipeline's channel-pruning and training-free recovery step for one sweep point.

``prune_channels`` prunes a copy of the unfused dense model with the job's channel options; when bias
compensation is asked it measures, on the unpruned copy, what each consumer loses (the shift is applied
later, so the pruned model can be evaluated before recovery first). ``recover`` then applies the asked
steps in their fixed order (bias compensation, then BatchNorm recalibration, which re-estimates the
statistics the compensated model produces) and leaves the model unfused: fine-tuning trains it with
BatchNorm, and the pipeline fuses it for evaluation.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from prunebench.contract import JobRequest
from prunebench.worker.engine.pruning import ChannelOptions, apply_pruning
from prunebench.worker.engine.pruning.channel import ChannelPlan, GradientFn
from prunebench.worker.engine.recovery import bias_compensation, bn_recalibration


@dataclass
class ChannelPoint:
    """One channel-pruned point, not yet recovered or fused."""

    model: nn.Module  # unfused (BatchNorm present when the checkpoint had it), on the job's device
    pruned_layers: list[str]
    achieved: float
    plan: ChannelPlan | None = None
    compensation: bias_compensation.Compensation | None = None


@dataclass
class Recovered:
    """What ``recover`` did."""

    applied: list[str] = field(default_factory=list)
    calibration_images: int | None = None
    seconds: float = 0.0


def channel_options(request: JobRequest, gradients: GradientFn | None = None) -> ChannelOptions:
    """The request's channel-pruning options (criterion, allocation, cap, rounding)."""
    return ChannelOptions(
        importance=request.importance,
        allocation=request.allocation,
        max_layer_sparsity=request.max_layer_sparsity,
        round_to=request.round_to,
        gradients=gradients,
    )


def prune_channels(
    unfused: nn.Module, request: JobRequest, sparsity: float, gradients: GradientFn | None = None
) -> ChannelPoint:
    """A pruned copy of ``unfused`` at ``sparsity``; raises ValueError for options the model cannot take."""
    model = copy.deepcopy(unfused)
    options = channel_options(request, gradients)
    captured: dict[str, bias_compensation.Compensation] = {}
    if "bias_compensation" in request.recovery:

        def measure(unpruned: nn.Module, plan: ChannelPlan) -> None:
            captured["shifts"] = bias_compensation.measure_shifts(unpruned, plan)

        options.before_prune = measure
    outcome = apply_pruning(model, "channel", sparsity, list(request.exclude), options)
    return ChannelPoint(
        model=outcome.model,
        pruned_layers=list(outcome.pruned_layers),
        achieved=float(outcome.achieved),
        plan=outcome.plan,
        compensation=captured.get("shifts"),
    )


def recover(
    point: ChannelPoint, steps: Iterable[str], calibration: Callable[[], Iterable[torch.Tensor]] | None
) -> Recovered:
    """Apply the training-free ``steps`` to ``point.model`` in place, in the contract's order.

    ``calibration`` yields network-input batches for BatchNorm recalibration (called only when asked).
    Raises ValueError (BiasCompensationError, RecalibrationError) when a step cannot run on this model.
    """
    started = time.perf_counter()
    done = Recovered()
    steps = list(steps)
    if "bias_compensation" in steps and point.plan is not None and point.compensation is not None:
        bias_compensation.apply(point.model, point.plan, point.compensation)
        done.applied.append("bias_compensation")
    if "bn_recalibration" in steps:
        if calibration is None:
            raise bn_recalibration.RecalibrationError("BatchNorm recalibration needs calibration images")
        done.calibration_images = bn_recalibration.recalibrate(point.model, calibration())
        done.applied.append("bn_recalibration")
    done.seconds = time.perf_counter() - started
    return done
