"""Structured channel pruning with torch-pruning's DepGraph: the result is a genuinely smaller dense model.

Steps (one call of ``prune_model``):

1. trace the model into a ``tp.DependencyGraph`` and list its coupled groups: channels that must go
   together (a conv, its BatchNorm, every consumer's matching input channels; residual adds in C3
   bottlenecks tie several convs into one group; concatenations map consumer indices by offset);
2. score every group channel with the chosen importance criterion (``importance.py``);
3. decide how many channels each group keeps (``allocation.py``: uniform or global, ``round_to``);
4. hand the plan to an optional ``before_prune`` hook (bias compensation reads which consumer input
   channels disappear, in the unpruned model's coordinates), then remove the lowest-scoring channels.

Detect's output convs (``Detect.m``) are never pruned on the output side: their widths are
``anchors * (5 + nc)`` and define the prediction layout ``[B, N, 5 + nc]``; only their inputs shrink.
Anchors and strides are untouched. Excluded convs keep their output width, and a coupled group that
contains one is left whole, so ``pruned_layers`` lists what actually shrank.

Meant for the *unfused* model (BatchNorm present, so ``bn_scale`` and BN recalibration can use the BN
statistics); fuse afterwards for evaluation. It also runs on a fused model (criteria other than
``bn_scale``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from prunebench.worker.engine import measure
from prunebench.worker.engine.modules import conv_layers, input_channels
from prunebench.worker.engine.pruning import allocation
from prunebench.worker.engine.pruning.importance import NEEDS_BATCHNORM, NEEDS_GRADIENTS, make_importance

DEFINITION = (
    "channel: structured pruning (torch-pruning DepGraph). Each coupled channel group is scored by the "
    "importance criterion; uniform allocation keeps floor(C * (1 - sparsity)) of a group's C channels, "
    "global allocation removes the lowest-ranked channels across all groups (at most max_layer_sparsity of "
    "any group); kept counts are rounded to multiples of round_to. Coupled channels go together and "
    "consumers lose the matching inputs; Detect output convs keep their outputs. The model becomes smaller "
    "and dense: achieved sparsity = fraction of output channels removed over the prunable convs (see "
    "params_ratio, gflops_ratio for the real reduction)."
)

TRACE_SIZE = 128  # any multiple of the largest stride (32) traces the same graph; small keeps it fast


class ChannelPruningError(ValueError):
    """Channel pruning cannot run as asked (e.g. ``bn_scale`` on a fused model); the message says why."""


@dataclass
class GroupCut:
    """One coupled group's decision: its root conv, width, the prunable convs it holds, what goes."""

    root: str
    channels: int
    convs: list[str]
    removed: list[int]  # root output-channel indices, ascending

    @property
    def kept(self) -> int:
        return self.channels - len(self.removed)


@dataclass
class ChannelPlan:
    """What one pruning step removes, in the unpruned model's coordinates."""

    cuts: list[GroupCut]
    consumer_inputs: dict[str, list[int]]  # conv name -> input-channel indices it loses (ascending)


GradientFn = Callable[[nn.Module], None]
"""Fills ``.grad`` of the model's parameters (forward and backward of a loss); for ``taylor``."""
PlanHook = Callable[[nn.Module, ChannelPlan], None]
"""Called with the unpruned model and the plan right before channels are removed."""


@dataclass
class ChannelOptions:
    """How channels are chosen; defaults are the contract's (``JobRequest``)."""

    importance: str = "l1"
    allocation: str = "uniform"
    max_layer_sparsity: float = 0.9
    round_to: int = 8
    gradients: GradientFn | None = None
    before_prune: PlanHook | None = field(default=None, repr=False)


def detect_output_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The prediction convs of every Detect-like head (a module with ``anchors`` and a ``m`` ModuleList)."""
    found: list[nn.Conv2d] = []
    for module in model.modules():
        heads = getattr(module, "m", None)
        if hasattr(module, "anchors") and isinstance(heads, nn.ModuleList):
            found.extend(m for m in heads if isinstance(m, nn.Conv2d))
    return found


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@contextmanager
def _traceable(model: nn.Module) -> Iterator[None]:
    """DepGraph traces autograd: parameters must require grad (fused convs are frozen); restore after."""
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(True)
    try:
        # Also when the caller runs under inference_mode/no_grad: without autograd the trace finds no graph.
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        # Pruning swaps in new Parameter objects under the same names, so restore the flags by name.
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, False))
            p.grad = None


def _check(options: ChannelOptions, model: nn.Module) -> None:
    make_importance(options.importance)  # raises for an unknown criterion
    if options.allocation not in ("uniform", "global"):
        raise ChannelPruningError(f"unknown allocation {options.allocation!r}; choose uniform or global")
    if not 0.0 < options.max_layer_sparsity < 1.0:
        raise ChannelPruningError(f"max_layer_sparsity must be in (0, 1), got {options.max_layer_sparsity}")
    if options.round_to < 1:
        raise ChannelPruningError(f"round_to must be >= 1, got {options.round_to}")
    if options.importance in NEEDS_BATCHNORM and not has_batchnorm(model):
        raise ChannelPruningError(f"importance {options.importance!r} needs BatchNorm layers; this model is fused")
    if options.importance in NEEDS_GRADIENTS and options.gradients is None:
        raise ChannelPruningError(f"importance {options.importance!r} needs labelled batches to take gradients on")


def _group_convs(graph: tp.DependencyGraph, group: Any, names: dict[nn.Module, str], counted: set[str]) -> list[str]:
    """Names of the counted (prunable) convs whose output channels this group removes."""
    found: list[str] = []
    for dep, _ in group:
        module = dep.target.module
        if isinstance(module, nn.Conv2d) and graph.is_out_channel_pruning_fn(dep.handler):
            name = names[module]
            if name in counted and name not in found:
                found.append(name)
    return found


def _consumer_inputs(
    graph: tp.DependencyGraph, group: Any, removed: set[int], names: dict[nn.Module, str]
) -> dict[str, set[int]]:
    """For a full-index group: which input channels of which convs go when root channels ``removed`` go."""
    cuts: dict[str, set[int]] = {}
    for item in group.items:
        dep, idxs = item.dep, item.idxs
        module = dep.target.module
        if not (isinstance(module, nn.Conv2d) and graph.is_in_channel_pruning_fn(dep.handler)):
            continue
        for idx, root in zip(idxs, item.root_idxs, strict=True):
            if root is not None and root in removed:
                cuts.setdefault(names[module], set()).add(int(idx))
    return cuts


def _kept_counts(
    scores: list[torch.Tensor], conv_counts: list[int], sparsity: float, options: ChannelOptions
) -> list[int]:
    widths = [len(s) for s in scores]
    if options.allocation == "global":
        removed = allocation.global_removed(
            [s.tolist() for s in scores], conv_counts, sparsity, options.max_layer_sparsity
        )
        raw = [w - r for w, r in zip(widths, removed, strict=True)]
        floors = [allocation.min_kept(w, options.max_layer_sparsity) for w in widths]
    else:
        raw = [allocation.uniform_kept(w, sparsity) for w in widths]
        floors = [1] * len(widths)
    return [allocation.round_kept(k, w, options.round_to, f) for k, w, f in zip(raw, widths, floors, strict=True)]


class ChannelPruner:
    """One model's dependency graph and channel scores, from which plans for any sparsity are cut.

    Building the graph and scoring (a trace, and for ``taylor`` a backward pass) happen once here;
    ``plan(sparsity)`` is then cheap, and ``apply(plan)`` removes the channels in place (once).
    ``convs`` are the prunable convs (after ``exclude``); every other conv keeps its output width.
    """

    def __init__(
        self, model: nn.Module, convs: dict[str, nn.Conv2d], options: ChannelOptions, trace_size: int = TRACE_SIZE
    ) -> None:
        _check(options, model)
        self.model = model
        self.options = options
        self.names = {m: n for n, m in model.named_modules()}
        all_convs = conv_layers(model)
        targets = {id(m) for m in convs.values()}
        self.ignored: list[nn.Module] = [m for m in all_convs.values() if id(m) not in targets]
        self.ignored += [m for m in detect_output_convs(model) if id(m) in targets]
        self.counted = [name for name in convs if all_convs[name] not in self.ignored]
        with _traceable(model):
            param = next(model.parameters())
            self.example = torch.zeros(
                1, input_channels(model), trace_size, trace_size, device=param.device, dtype=param.dtype
            )
            self.graph = tp.DependencyGraph().build_dependency(model, example_inputs=self.example)
            if options.importance in NEEDS_GRADIENTS and options.gradients is not None:
                model.zero_grad(set_to_none=True)
                options.gradients(model)
            self._score()
        if self.counted and not self.groups:
            raise ChannelPruningError("no channel group can be pruned (each holds an excluded conv, or no graph)")

    def _score(self) -> None:
        importance = make_importance(self.options.importance)
        counted = set(self.counted)
        self.groups: list[tuple[Any, list[str]]] = []
        self.scores: list[torch.Tensor] = []
        self.roots: dict[str, tuple[nn.Module, Any]] = {}  # root conv name -> (module, its pruning handler)
        for group in self.graph.get_all_groups(ignored_layers=self.ignored, root_module_types=[nn.Conv2d]):
            convs = _group_convs(self.graph, group, self.names, counted)
            score = importance(group) if convs else None
            if score is None:  # e.g. bn_scale on a group without BatchNorm: nothing to rank it by
                continue
            self.groups.append((group, convs))
            self.scores.append(score.detach().float().cpu())
            root = group[0].dep.target.module
            self.roots[self.names[root]] = (root, group[0].dep.handler)

    def plan(self, sparsity: float) -> ChannelPlan:
        """Which channels go at ``sparsity`` (no change to the model)."""
        if sparsity <= 0.0 or not self.groups:
            return ChannelPlan(cuts=[], consumer_inputs={})
        kept = _kept_counts(self.scores, [len(c) for _, c in self.groups], sparsity, self.options)
        cuts: list[GroupCut] = []
        consumer_inputs: dict[str, set[int]] = {}
        for (group, convs), score, keep in zip(self.groups, self.scores, kept, strict=True):
            # Lowest scores go; a stable sort breaks ties by channel index so plans are reproducible.
            order = torch.argsort(score, stable=True)
            removed = sorted(int(i) for i in order[: len(score) - keep])
            root = self.names[group[0].dep.target.module]
            cuts.append(GroupCut(root=root, channels=len(score), convs=convs, removed=removed))
            for name, idxs in _consumer_inputs(self.graph, group, set(removed), self.names).items():
                consumer_inputs.setdefault(name, set()).update(idxs)
        return ChannelPlan(cuts=cuts, consumer_inputs={n: sorted(v) for n, v in consumer_inputs.items()})

    def apply(self, plan: ChannelPlan) -> None:
        """Remove the plan's channels in place (the ``before_prune`` hook first sees the unpruned model)."""
        with _traceable(self.model):
            if self.options.before_prune is not None and plan.cuts:
                with torch.no_grad():
                    self.options.before_prune(self.model, plan)
            # Groups are rebuilt just before each removal: earlier removals shift concat offsets of consumers.
            for cut in plan.cuts:
                if not cut.removed:
                    continue
                root, handler = self.roots[cut.root]
                group = self.graph.get_pruning_group(root, handler, cut.removed)
                if not self.graph.check_pruning_group(group):  # allocation never empties a layer
                    raise ChannelPruningError(f"pruning would empty a layer coupled to {cut.root}")
                group.prune()


def prune_model(
    model: nn.Module,
    convs: dict[str, nn.Conv2d],
    sparsity: float,
    options: ChannelOptions | None = None,
    trace_size: int = TRACE_SIZE,
) -> tuple[list[str], dict[str, Any], ChannelPlan]:
    """Remove output channels in place; returns (names of convs that shrank, statistics, the plan).

    Raises ChannelPruningError for options the model cannot support.
    """
    options = options or ChannelOptions()
    _check(options, model)
    before = {name: m.out_channels for name, m in conv_layers(model).items()}
    params_before, _ = measure.count_params(model)
    plan = ChannelPlan(cuts=[], consumer_inputs={})
    counted = [name for name in convs if name in before]
    if sparsity > 0.0:
        pruner = ChannelPruner(model, convs, options, trace_size)
        counted = pruner.counted
        plan = pruner.plan(sparsity)
        pruner.apply(plan)
    after = {name: m.out_channels for name, m in conv_layers(model).items()}
    shrunk = [name for name in convs if after[name] < before[name]]
    total = sum(before[n] for n in counted)
    removed = sum(before[n] - after[n] for n in counted)
    params_after, _ = measure.count_params(model)
    stats = {
        "importance": options.importance,
        "allocation": options.allocation,
        "round_to": options.round_to,
        "channels_before": total,
        "channels_removed": removed,
        "channel_fraction_removed": removed / total if total else 0.0,
        "params_before": params_before,
        "params_after": params_after,
        "params_ratio": params_after / params_before if params_before else 1.0,
    }
    return shrunk, stats, plan
