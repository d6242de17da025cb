"""Global magnitude pruning: one |w| threshold shared by all prunable Conv2d weights.

Layers whose weights are small overall lose more of them than layers with large weights, so per-layer
sparsity varies while the overall zero fraction over the pruned layers is ``round(sparsity * total)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

DEFINITION = (
    "global_magnitude: the round(sparsity * N) smallest-|w| weights among all N weights of the prunable "
    "Conv2d layers are set to zero (one global L1 threshold, torch.nn.utils.prune.global_unstructured); "
    "per-layer sparsity differs; biases kept. Achieved sparsity = zero fraction over those layers' weights."
)


@torch.no_grad()
def prune_layers(convs: dict[str, nn.Conv2d], sparsity: float) -> list[str]:
    """Zero the globally smallest weights in place; returns the names of the layers considered."""
    if not convs:
        return []
    params = [(conv, "weight") for conv in convs.values()]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    for conv in convs.values():
        prune.remove(conv, "weight")
    return list(convs)
