"""2:4 semi-structured sparsity: two of every four consecutive input weights are zero.

This is the pattern NVIDIA's sparse tensor cores (Ampere and newer) accelerate, through cuSPARSELt and
TensorRT's sparse tactics (``BuilderFlag.SPARSE_WEIGHTS``). It is defined on the GEMM a convolution
lowers to, whose reduction dimension is ``C_in/groups x kh x kw``. TensorRT's rule for convolutions is
stated per output channel and per kernel position: *for each output channel and each spatial position of
the kernel, every group of four consecutive input channels holds at least two zeros*. So the groups run
along the **input-channel axis** of a Conv2d weight ``[C_out, C_in, kh, kw]``: the four weights
``w[o, 4g:4g+4, r, s]`` form one group, for every ``o``, ``g``, ``r``, ``s``.

In each group the two weights of largest ``|w|`` stay and the other two become zero (magnitude
pruning; ties go to the lower index, as ``torch.topk`` orders them). Biases are kept. Convs that cannot
carry the pattern are left dense and named with the reason: grouped/depthwise convs, and convs whose
input channels are not a multiple of four (YOLOv5's 3-channel stem).

The zero pattern survives BatchNorm folding (fusion scales each output channel by one factor, which
neither moves zeros nor reorders magnitudes within a group), so pruning the fused or the unfused model
chooses the same weights. Fine-tuning keeps it when the trainer re-applies the zero masks after each step.
"""

from __future__ import annotations

import torch
from torch import nn

GROUP = 4
"""Weights per group, consecutive along the input-channel axis."""
KEEP = 2
"""Non-zero weights kept per group."""
SPARSITY = 1.0 - KEEP / GROUP
"""The only sparsity this method produces over a pruned layer: 0.5."""

DEFINITION = (
    "semi_structured_2_4: 2:4 semi-structured sparsity, the pattern Ampere-and-newer sparse tensor cores "
    "accelerate (TensorRT sparse tactics). In each prunable Conv2d weight [C_out, C_in, kh, kw], every group "
    "of 4 consecutive input channels at each (output channel, kernel position) keeps its 2 largest-|w| weights "
    "and zeros the other 2. Sparsity is fixed at 0.5 (a job asks for 0.5; 0 is the dense baseline). Grouped "
    "convs and convs whose input channels are not a multiple of 4 (the 3-channel stem) stay dense. Achieved "
    "sparsity = zero fraction over all prunable layers' weights, so it is a little under 0.5 when some stay dense."
)


def ineligible_reason(conv: nn.Conv2d) -> str | None:
    """Why ``conv`` cannot carry the 2:4 pattern, or None when it can."""
    if conv.groups != 1:
        return f"grouped convolution (groups={conv.groups})"
    if conv.in_channels % GROUP:
        return f"{conv.in_channels} input channels are not a multiple of {GROUP}"
    return None


def _grouped(weight: torch.Tensor) -> torch.Tensor:
    """``[C_out, C_in, kh, kw]`` -> ``[C_out, kh, kw, C_in/4, 4]``: the last axis is one 2:4 group."""
    c_out, c_in, kh, kw = weight.shape
    return weight.permute(0, 2, 3, 1).reshape(c_out, kh, kw, c_in // GROUP, GROUP)


def mask_2_4(weight: torch.Tensor) -> torch.Tensor:
    """Boolean keep-mask, shaped like ``weight`` ``[C_out, C_in, kh, kw]``: in every group of four input
    channels the two largest ``|w|`` are True. ValueError when ``C_in`` is not a multiple of four."""
    if weight.dim() != 4 or weight.shape[1] % GROUP:
        raise ValueError(f"2:4 needs a conv weight with input channels a multiple of {GROUP}, got {list(weight.shape)}")
    groups = _grouped(weight.detach().abs())
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(KEEP, dim=-1).indices, True)
    c_out, c_in, kh, kw = weight.shape
    return keep.reshape(c_out, kh, kw, c_in).permute(0, 3, 1, 2).contiguous()


def satisfies_2_4(weight: torch.Tensor) -> bool:
    """True when every group of four consecutive input weights holds at least two zeros."""
    if weight.dim() != 4 or weight.shape[1] % GROUP:
        return False
    zeros = (_grouped(weight.detach()) == 0).sum(dim=-1)
    return bool((zeros >= GROUP - KEEP).all())


@torch.no_grad()
def prune_layers(convs: dict[str, nn.Conv2d], sparsity: float) -> tuple[list[str], dict[str, str]]:
    """Apply the 2:4 pattern in place to every eligible conv; returns (pruned names, {skipped name: why}).

    ``sparsity`` must be 0 (nothing happens: the dense baseline) or 0.5; anything else is a ValueError.
    """
    if sparsity == 0.0:
        return [], {}
    if sparsity != SPARSITY:
        raise ValueError(
            f"semi_structured_2_4 zeros exactly 2 of every 4 weights: sparsity must be 0.5, got {sparsity}"
        )
    pruned: list[str] = []
    skipped: dict[str, str] = {}
    for name, conv in convs.items():
        reason = ineligible_reason(conv)
        if reason is not None:
            skipped[name] = reason
            continue
        conv.weight.mul_(mask_2_4(conv.weight).to(conv.weight.dtype))
        pruned.append(name)
    return pruned, skipped
