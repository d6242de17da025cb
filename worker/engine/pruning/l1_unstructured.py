"""Per-layer L1 unstructured pruning, the same operation as upstream YOLOv5's ``utils.torch_utils.prune``.

Each prunable Conv2d loses the ``round(amount * numel)`` smallest-magnitude weights of its own tensor (torch's
``prune.l1_unstructured`` rounding), so every layer ends at the same sparsity. Biases are never touched.
The mask is made permanent right away (``prune.remove``): the result is a plain dense model with zeros.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

DEFINITION = (
    "l1_unstructured: in each prunable Conv2d, the round(sparsity * numel) weights of smallest |w| are set "
    "to zero (torch.nn.utils.prune.l1_unstructured, as upstream YOLOv5 utils.torch_utils.prune); biases kept. "
    "Achieved sparsity = zero fraction of those layers' weights."
)


@torch.no_grad()
def prune_layers(convs: dict[str, nn.Conv2d], sparsity: float) -> list[str]:
    """Zero the smallest weights of each conv in place; returns the names pruned."""
    for conv in convs.values():
        prune.l1_unstructured(conv, name="weight", amount=sparsity)
        prune.remove(conv, "weight")
    return list(convs)
