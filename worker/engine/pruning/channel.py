"""Structured channel pruning with torch-pruning's DepGraph: the result is a genuinely smaller dense model.

Sparsity here means the fraction of *output channels* removed from each prunable Conv2d: a conv with C
outputs keeps ``floor(C * (1 - sparsity))`` of them (torch-pruning's local pruning rule), chosen by group
L1 magnitude. Channels that must stay aligned (residual adds in C3 bottlenecks, concatenations) are removed
together, and every consumer loses the matching input channels, so the model stays consistent.

Detect's output convs (``Detect.m``) are never pruned on the output side: their widths are
``anchors * (5 + nc)`` and define the prediction layout ``[B, N, 5 + nc]``; only their inputs shrink.
Anchors and strides are untouched. Excluded layers keep their output width too; a coupled group that
contains an excluded (or Detect output) conv is left whole, so ``pruned_layers`` lists what actually shrank.

Works on fused or unfused models. The pipeline hands over the BN-fused model, so importance is measured on
the folded weights, i.e. each filter's effective scale (an unfused conv's raw weights are rescaled by BN).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from prunebench.worker.engine import measure

DEFINITION = (
    "channel: structured pruning (torch-pruning DepGraph, group L1 importance). Each prunable Conv2d keeps "
    "floor(C * (1 - sparsity)) of its C output channels; coupled channels are removed together and consumers "
    "lose the matching inputs. Detect output convs keep their outputs. The model becomes smaller and dense: "
    "achieved sparsity = fraction of output channels removed over the prunable convs (see params_ratio, "
    "gflops_ratio for the real reduction)."
)

TRACE_SIZE = 128  # any multiple of the largest stride (32) traces the same graph; small keeps it fast


def detect_output_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The prediction convs of every Detect-like head (a module with ``anchors`` and a ``m`` ModuleList)."""
    found: list[nn.Conv2d] = []
    for module in model.modules():
        heads = getattr(module, "m", None)
        if hasattr(module, "anchors") and isinstance(heads, nn.ModuleList):
            found.extend(m for m in heads if isinstance(m, nn.Conv2d))
    return found


def _input_channels(model: nn.Module) -> int:
    cfg = getattr(model, "yaml", None)
    return int(cfg.get("ch", 3)) if isinstance(cfg, dict) else 3


@contextmanager
def _traceable(model: nn.Module) -> Iterator[None]:
    """DepGraph traces autograd: parameters must require grad (fused convs are frozen); restore after."""
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        # Pruning swaps in new Parameter objects under the same names, so restore the flags by name.
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, False))


def prune_model(
    model: nn.Module, convs: dict[str, nn.Conv2d], sparsity: float, trace_size: int = TRACE_SIZE
) -> tuple[list[str], dict[str, Any]]:
    """Remove output channels in place; returns (names of convs that shrank, statistics)."""
    all_convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    before = {name: m.out_channels for name, m in all_convs.items()}
    targets = {id(m) for m in convs.values()}
    ignored: list[nn.Module] = [m for m in all_convs.values() if id(m) not in targets]
    ignored += [m for m in detect_output_convs(model) if id(m) in targets]
    params_before, _ = measure.count_params(model)
    param = next(model.parameters())
    example = torch.zeros(1, _input_channels(model), trace_size, trace_size, device=param.device, dtype=param.dtype)
    flops_before = measure.count_flops(model, example)

    if sparsity > 0.0:
        with _traceable(model):
            pruner = tp.pruner.BasePruner(
                model,
                example,
                importance=tp.importance.GroupMagnitudeImportance(p=1),
                pruning_ratio=sparsity,
                ignored_layers=ignored,
                global_pruning=False,
            )
            pruner.step()

    after = {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    shrunk = [name for name in convs if after[name] < before[name]]
    counted = [name for name in convs if all_convs[name] not in ignored]
    total = sum(before[n] for n in counted)
    removed = sum(before[n] - after[n] for n in counted)
    params_after, _ = measure.count_params(model)
    stats = {
        "channels_before": total,
        "channels_removed": removed,
        "channel_fraction_removed": removed / total if total else 0.0,
        "params_before": params_before,
        "params_after": params_after,
        "params_ratio": params_after / params_before if params_before else 1.0,
        "gflops_ratio": measure.count_flops(model, example) / flops_before if flops_before else 1.0,
    }
    return shrunk, stats
