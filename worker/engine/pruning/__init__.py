"""Pruning methods applied to a detector before it is measured.

``apply_pruning(model, method, sparsity, exclude, channel_options)`` is the single entry point. The
unstructured methods zero weights in place (same object back); ``channel`` removes channels in place and
returns a smaller model (``channel_options``: importance criterion, allocation, ``round_to``, hooks).
What each method means by "sparsity" is spelled out in ``PruneOutcome.definition``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunebench.worker.engine.pruning import channel, global_magnitude, l1_unstructured, semi_structured
from prunebench.worker.engine.pruning.channel import ChannelOptions, ChannelPlan
from prunebench.worker.engine.pruning.selection import check_sparsity, conv_layers, prunable_layers

__all__ = ["DEFINITIONS", "METHODS", "ChannelOptions", "PruneOutcome", "apply_pruning", "prunable_layers"]

METHODS: tuple[str, ...] = ("l1_unstructured", "global_magnitude", "channel", "semi_structured_2_4")

DEFINITIONS: dict[str, str] = {
    "l1_unstructured": l1_unstructured.DEFINITION,
    "global_magnitude": global_magnitude.DEFINITION,
    "channel": channel.DEFINITION,
    "semi_structured_2_4": semi_structured.DEFINITION,
}


@dataclass
class PruneOutcome:
    model: nn.Module  # the pruned model (the input object, modified in place)
    pruned_layers: list[str]  # Conv2d names that were pruned (channel: those whose outputs shrank)
    method: str
    sparsity_target: float
    definition: str
    achieved: float = 0.0  # the method's own sparsity measure, comparable to sparsity_target
    stats: dict[str, Any] = field(default_factory=dict)  # channel: params_ratio, gflops_ratio, ...
    plan: ChannelPlan | None = None  # channel: which group channels went (unpruned coordinates)


def _zero_fraction(convs: Iterable[nn.Conv2d]) -> float:
    zeros = total = 0
    for conv in convs:
        zeros += int((conv.weight == 0).sum())
        total += conv.weight.numel()
    return zeros / total if total else 0.0


def _unstructured(model: nn.Module, method: str, sparsity: float, targets: dict[str, nn.Conv2d]) -> PruneOutcome:
    prune_fn: Callable[[dict[str, nn.Conv2d], float], list[str]] = (
        l1_unstructured.prune_layers if method == "l1_unstructured" else global_magnitude.prune_layers
    )
    pruned = prune_fn(targets, sparsity)
    return PruneOutcome(
        model=model,
        pruned_layers=pruned,
        method=method,
        sparsity_target=sparsity,
        definition=DEFINITIONS[method],
        achieved=_zero_fraction(targets.values()),
    )


def _channel(
    model: nn.Module, sparsity: float, targets: dict[str, nn.Conv2d], options: ChannelOptions | None
) -> PruneOutcome:
    shrunk, stats, plan = channel.prune_model(model, targets, sparsity, options)
    return PruneOutcome(
        model=model,
        pruned_layers=shrunk,
        method="channel",
        sparsity_target=sparsity,
        definition=DEFINITIONS["channel"],
        achieved=float(stats["channel_fraction_removed"]),
        stats=stats,
        plan=plan,
    )


def _semi_structured(model: nn.Module, sparsity: float, targets: dict[str, nn.Conv2d]) -> PruneOutcome:
    pruned, skipped = semi_structured.prune_layers(targets, sparsity)
    return PruneOutcome(
        model=model,
        pruned_layers=pruned,
        method="semi_structured_2_4",
        sparsity_target=sparsity,
        definition=DEFINITIONS["semi_structured_2_4"],
        achieved=_zero_fraction(targets.values()),
        stats={"dense_layers": skipped},  # prunable convs that cannot carry the pattern, with the reason
    )


def apply_pruning(
    model: nn.Module,
    method: str,
    sparsity: float,
    exclude: Iterable[str] | None = None,
    channel_options: ChannelOptions | None = None,
) -> PruneOutcome:
    """Prune ``model`` in place with ``method`` at ``sparsity``, leaving layers matched by ``exclude`` alone.

    ``channel_options`` only applies to ``channel`` (defaults: l1, uniform, round_to 8).
    Raises ValueError for an unknown method, a sparsity outside [0, 1), a bad/unmatched exclude pattern, or
    channel options the model cannot support (``channel.ChannelPruningError``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
    sparsity = check_sparsity(sparsity)
    convs = conv_layers(model)
    targets = {name: convs[name] for name in prunable_layers(model, exclude)}
    if method == "channel":
        return _channel(model, sparsity, targets, channel_options)  # traces autograd, so not under no_grad
    with torch.no_grad():
        if method == "semi_structured_2_4":
            return _semi_structured(model, sparsity, targets)
        return _unstructured(model, method, sparsity, targets)
