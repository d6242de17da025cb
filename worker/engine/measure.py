"""Model statistics reported per run: parameter counts, sparsity, per-layer zeros, GFLOPs, size on disk.

Conventions (chosen to match what upstream YOLOv5 prints):

* ``global_sparsity`` is zeros over *all* parameters (weights, biases, BN affine), like upstream's
  ``torch_utils.sparsity``; buffers (BN running stats, anchors) are not parameters and are not counted.
* ``conv_sparsity`` and ``layer_report`` look at Conv2d *weights* only: that is what the methods prune.
* ``gflops`` is 2 x multiply-accumulates of one forward pass at ``img_size`` x ``img_size`` (batch 1),
  counted by ``torch.utils.flop_counter`` (convolutions and matmuls; element-wise ops are free), which is
  how upstream's model summary reports GFLOPs (4.5 for a fused YOLOv5n at 640). The pass runs on the
  meta device (shapes only), and ``architecture_key`` says when two models must have equal GFLOPs.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunebench.contract import LayerReport
from prunebench.worker.engine.modules import conv_layers, input_channels


def count_params(model: nn.Module) -> tuple[int, int]:
    """(number of parameters, number of non-zero parameters)."""
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    return total, nonzero


def global_sparsity(model: nn.Module) -> float:
    """Fraction of zeros over all parameters (upstream ``torch_utils.sparsity``)."""
    total, nonzero = count_params(model)
    return (total - nonzero) / total if total else 0.0


def conv_sparsity(model: nn.Module, layer_names: Iterable[str]) -> float:
    """Fraction of zeros over the weights of the named Conv2d layers (the achieved pruning sparsity)."""
    convs = conv_layers(model)
    missing = [n for n in layer_names if n not in convs]
    if missing:
        raise KeyError(f"not Conv2d layers of this model: {', '.join(missing[:5])}")
    zeros = total = 0
    for name in layer_names:
        weight = convs[name].weight.detach()
        total += weight.numel()
        zeros += weight.numel() - int(torch.count_nonzero(weight))
    return zeros / total if total else 0.0


def layer_report(model: nn.Module, pruned: set[str] | Iterable[str]) -> list[LayerReport]:
    """One row per Conv2d (weights only): shape, parameter count, zeros, sparsity, whether it was pruned."""
    pruned_set = set(pruned)
    rows: list[LayerReport] = []
    for name, conv in conv_layers(model).items():
        weight = conv.weight.detach()
        numel = weight.numel()
        zeros = numel - int(torch.count_nonzero(weight))
        rows.append(
            LayerReport(
                name=name,
                shape=list(weight.shape),
                params=numel,
                zeros=zeros,
                sparsity=zeros / numel if numel else 0.0,
                pruned=name in pruned_set,
            )
        )
    return rows


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs (2 x MACs) of one forward pass on ``example``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on torch's meta device (shapes, no data)."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def gflops(model: nn.Module, img_size: int = 640) -> float:
    """GFLOPs of one image at ``img_size`` x ``img_size``.

    Counted on a weightless copy on torch's meta device: the flop counter needs only shapes, so no
    arithmetic runs and no memory is used (a real forward at 640 px cost ~4 s of CPU per point).
    """
    param = next(model.parameters())
    example = torch.zeros(1, input_channels(model), img_size, img_size, device="meta", dtype=param.dtype)
    return count_flops(_meta_copy(model), example) / 1e9


def architecture_key(model: nn.Module) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """What GFLOPs depend on: every module's type and every tensor's shape (never the values)."""
    modules = tuple((name, type(m).__name__, ()) for name, m in model.named_modules())
    tensors = tuple((name, "tensor", tuple(t.shape)) for name, t in model.state_dict().items())
    return modules + tensors


def size_on_disk(target: str | os.PathLike[str] | nn.Module, **save_kwargs: Any) -> int:
    """Bytes of a file, or of ``model`` as a prunebench artifact (``save_kwargs`` go to artifact_size).

    A model's size is counted as the artifact is serialised, without writing a file.
    """
    if not isinstance(target, nn.Module):
        return Path(target).stat().st_size
    from prunebench.worker.engine.artifacts import artifact_size  # lazy: artifacts imports nothing from here

    return artifact_size(target, **save_kwargs)
