"""Per-layer schedules: each named Conv2d pruned to its own sparsity (a user's recipe, or a sensitivity result).

A schedule is ``{fnmatch pattern: sparsity}``, matched like ``exclude`` (a conv's name or an ancestor's);
the **first** pattern, in the order given, that matches a layer sets its sparsity, and layers no pattern
matches keep ``default``. Each layer then loses the round(sparsity * numel) smallest-|w| weights of its own
tensor (torch.nn.utils.prune.l1_unstructured, per layer), whichever unstructured method the job names: a
schedule already says how much each layer loses, which is all a global threshold would decide.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune

from prunebench.worker.engine.pruning.selection import check_sparsity, conv_layers, matches

DEFINITION = (
    "layer schedule: each prunable Conv2d loses the round(s * numel) smallest-|w| weights of its own tensor, "
    "s = the sparsity of the first pattern matching it (the default for layers none matches); biases kept."
)


def resolve(layers: list[str], patterns: Mapping[str, float], default: float = 0.0) -> dict[str, float]:
    """layer name -> sparsity for ``layers`` (prunable names, in model order).

    Raises ValueError for a pattern that matches none of ``layers`` (a typo would silently prune nothing)
    or a sparsity outside [0, 1)."""
    default = check_sparsity(default)
    unused = [p for p in patterns if not any(matches(name, p) for name in layers)]
    if unused:
        raise ValueError(f"layer_sparsities pattern(s) match no prunable Conv2d layer: {', '.join(map(repr, unused))}")
    schedule: dict[str, float] = {}
    for name in layers:
        hit = next((p for p in patterns if matches(name, p)), None)
        schedule[name] = check_sparsity(patterns[hit]) if hit is not None else default
    return schedule


@torch.no_grad()
def apply(model: nn.Module, schedule: Mapping[str, float]) -> tuple[list[str], float]:
    """Prune ``model`` in place; returns (names of the layers pruned, zero fraction over the scheduled layers)."""
    convs = conv_layers(model)
    missing = [name for name in schedule if name not in convs]
    if missing:
        raise ValueError(f"schedule names layers this model does not have: {', '.join(missing[:5])}")
    pruned: list[str] = []
    zeros = total = 0
    for name, sparsity in schedule.items():
        conv = convs[name]
        if sparsity > 0.0:
            prune.l1_unstructured(conv, name="weight", amount=sparsity)
            prune.remove(conv, "weight")
            pruned.append(name)
        zeros += int((conv.weight == 0).sum())
        total += conv.weight.numel()
    return pruned, zeros / total if total else 0.0
