"""Bias compensation: a removed channel's expected activation is folded into its consumers' biases.

A channel whose BatchNorm scale γ is small outputs nearly the constant ``act(β)`` on every input (Ye et
al. 2018, "Rethinking the smaller-norm-less-informative assumption in channel pruning", absorb it into
the next layer). Removing it therefore shifts every consumer's pre-activation by the constant
``Σ_k W[o, c, k] · E[x_c]``; adding that constant back keeps the next layer's mean where it was.

``E[x_c]`` is the *mean-field* value of the consumer's input channel: a forward pass in which every
BatchNorm outputs its shift β (the mean of a normalised channel is β) and everything between BatchNorms
(activations, residual adds, concatenations, upsampling, max-pooling) acts on those constants as it does
on data. So coupled channels are handled by the network itself: a residual channel ``x + y`` carries
``act(β_x) + act(β_y)``, a concatenated channel its own producer's value, an SPPF max-pool the same
constant. No data are needed.

Where the shift goes (``fold_shift``): a consumer conv followed by its own BatchNorm (YOLOv5's ``Conv``)
gets it as ``running_mean -= shift`` (``BN(z + s)`` with mean μ equals ``BN(z)`` with mean ``μ - s`` in
eval mode, and fusing then carries it into the conv bias); a conv with a bias (the Detect head's
prediction convs, fused convs) adds it to the bias; any other conv gets a new bias. Border pixels, where
zero padding meets the removed channel, are not corrected (the constant is an interior value).

Two steps, so the pruned model can be evaluated before compensation too: ``measure_shifts`` on the
unpruned model (channel pruning's ``before_prune`` hook), ``apply`` on the pruned one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunebench.worker.engine.modules import conv_layers, input_channels
from prunebench.worker.engine.pruning.channel import ChannelPlan

TRACE_SIZE = 64  # constants are spatially uniform, so any size that survives the strides (32) will do


class BiasCompensationError(ValueError):
    """Bias compensation cannot run (the model has no BatchNorm to read β from); the message says why."""


def _owning_batchnorm(model: nn.Module) -> dict[int, nn.BatchNorm2d]:
    """conv id -> the BatchNorm applied directly to that conv's output (modules with ``conv`` and ``bn``)."""
    found: dict[int, nn.BatchNorm2d] = {}
    for module in model.modules():
        conv, bn = getattr(module, "conv", None), module._modules.get("bn")
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels:
            found[id(conv)] = bn
    return found


@torch.no_grad()
def mean_field_inputs(model: nn.Module, trace_size: int = TRACE_SIZE) -> dict[str, torch.Tensor]:
    """Per Conv2d name: the constant each input channel carries when every BatchNorm outputs its β.

    Returns float32 vectors of length ``in_channels``. Raises BiasCompensationError for a model without
    BatchNorm layers (a fused model has no β left to read).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise BiasCompensationError("bias compensation needs BatchNorm layers; this model is fused")
    values: dict[str, torch.Tensor] = {}

    def constant_shift(bn: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
        shift = bn.bias if bn.bias is not None else torch.zeros(bn.num_features, device=output.device)
        return shift.view(1, -1, 1, 1).to(output.dtype).expand_as(output)

    def record(name: str) -> Any:
        def hook(_conv: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            values[name] = inputs[0].float().mean(dim=(0, 2, 3))

        return hook

    handles = [bn.register_forward_hook(constant_shift) for bn in bns]
    handles += [
        m.register_forward_pre_hook(record(name)) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)
    ]
    was_training = model.training
    param = next(model.parameters())
    try:
        model.eval()
        model(torch.zeros(1, input_channels(model), trace_size, trace_size, device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return values


def input_shift(conv: nn.Conv2d, channels: list[int], values: torch.Tensor) -> torch.Tensor:
    """Per output channel: what input ``channels`` holding constants ``values[channels]`` add to ``conv``.

    ``Σ_c Σ_k W[o, c, k] · values[c]`` (interior pixels), shape ``[out_channels]``; only for ungrouped convs.
    """
    weight = conv.weight.detach().float()[:, channels].sum(dim=(2, 3))  # [out, len(channels)]
    return weight @ values[channels].to(weight.device)


def fold_shift(conv: nn.Conv2d, shift: torch.Tensor, batchnorm: nn.BatchNorm2d | None) -> None:
    """Add ``shift`` (``[out_channels]``) to ``conv``'s output before its BatchNorm, in place."""
    if batchnorm is not None and batchnorm.running_mean is not None:
        batchnorm.running_mean.sub_(shift.to(batchnorm.running_mean))
    elif conv.bias is not None:
        conv.bias.data.add_(shift.to(conv.bias))
    else:
        conv.bias = nn.Parameter(shift.to(conv.weight), requires_grad=conv.weight.requires_grad)


@dataclass
class Compensation:
    """Per consumer conv: the shift its removed inputs contributed, over its *unpruned* output channels."""

    shifts: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def max_shift(self) -> float:
        return max((float(s.abs().max()) for s in self.shifts.values() if s.numel()), default=0.0)


@torch.no_grad()
def measure_shifts(model: nn.Module, plan: ChannelPlan) -> Compensation:
    """What every consumer of ``plan`` loses, measured on the *unpruned* model (before channels go).

    Run it as channel pruning's ``before_prune`` hook: the plan's indices are in this model's
    coordinates. Grouped (depthwise) consumers are skipped: a depthwise conv loses the output channel
    with its input. Raises BiasCompensationError for a model without BatchNorm.
    """
    compensation = Compensation()
    if not plan.consumer_inputs:
        return compensation
    values = mean_field_inputs(model)
    convs = conv_layers(model)
    for name, channels in plan.consumer_inputs.items():
        conv = convs[name]
        if conv.groups == 1 and channels:
            compensation.shifts[name] = input_shift(conv, channels, values[name]).cpu()
    return compensation


def _kept_outputs(plan: ChannelPlan) -> dict[str, list[int]]:
    """conv name -> its surviving output channels (unpruned indices), for convs the plan narrows."""
    kept: dict[str, list[int]] = {}
    for cut in plan.cuts:
        gone = set(cut.removed)
        for name in cut.convs:
            kept[name] = [i for i in range(cut.channels) if i not in gone]
    return kept


@torch.no_grad()
def apply(model: nn.Module, plan: ChannelPlan, compensation: Compensation) -> int:
    """Fold ``compensation`` into the *pruned* ``model`` (the one ``plan`` was applied to); returns the
    number of consumer convs changed. Each shift is cut down to the consumer's surviving outputs."""
    convs = conv_layers(model)
    batchnorms = _owning_batchnorm(model)
    kept = _kept_outputs(plan)
    for name, shift in compensation.shifts.items():
        conv = convs[name]
        if name in kept:
            shift = shift[kept[name]]
        if shift.numel() != conv.out_channels:
            raise BiasCompensationError(f"{name}: {shift.numel()} shifts for {conv.out_channels} outputs")
        fold_shift(conv, shift, batchnorms.get(id(conv)))
    return len(compensation.shifts)
