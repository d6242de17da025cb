"""How many channels each coupled group keeps: the allocation rules of channel pruning, torch-free.

A *group* is a set of output channels that must be removed together (one conv, or several convs tied by
a residual add); ``channels`` is its width and ``convs`` the number of prunable convs whose outputs it
holds, which is how much one removed group channel counts towards the achieved sparsity.

* ``uniform``: every group keeps ``floor(channels * (1 - sparsity))`` (torch-pruning's local rule).
* ``global``: one ranking of all group channels by normalised importance; the lowest go first until
  ``sparsity`` of all (conv-weighted) channels is removed, but no group loses more than
  ``max_layer_sparsity`` of its channels, so no layer is emptied.

Then ``round_kept`` rounds each kept count to the nearest multiple of ``round_to`` (SIMD/tensor-core
friendly widths). Every rule keeps at least one channel (``round_to`` when the group is that wide).

Monotonicity (the property tests check it): for a fixed model, every group's kept count is
non-increasing in ``sparsity``. Uniform: ``floor`` of a decreasing value. Global: the removals are a
prefix of one fixed cap-filtered order, so a larger budget takes a superset. Rounding is monotone. As
widths only shrink, params and FLOPs never grow when the target grows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Float slack so that e.g. 10 * (1 - 0.3) = 6.999... still keeps 7 channels.
_EPS = 1e-9


def uniform_kept(channels: int, sparsity: float) -> int:
    """Channels a group of ``channels`` keeps under uniform allocation (at least one)."""
    return max(1, math.floor(channels * (1.0 - sparsity) + _EPS))


def min_kept(channels: int, max_layer_sparsity: float) -> int:
    """Fewest channels a group may keep when at most ``max_layer_sparsity`` of it may go (at least one)."""
    return max(1, math.ceil(channels * (1.0 - max_layer_sparsity) - _EPS))


def round_kept(kept: int, channels: int, round_to: int, minimum: int = 1) -> int:
    """``kept`` rounded to the nearest multiple of ``round_to`` (halves up), within [minimum, channels].

    A group narrower than ``round_to`` is not rounded. The floor ``minimum`` is itself rounded up to a
    multiple, so the result is a multiple of ``round_to`` unless it equals ``channels`` (group kept whole).
    """
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")
    if round_to > 1 and channels >= round_to:
        kept = round_to * math.floor(kept / round_to + 0.5)
        minimum = round_to * math.ceil(minimum / round_to)
    return max(min(kept, channels), min(minimum, channels))


def global_removed(
    scores: Sequence[Sequence[float]],
    convs: Sequence[int],
    sparsity: float,
    max_layer_sparsity: float,
) -> list[int]:
    """How many channels each group loses under one global ranking of ``scores`` (one list per group).

    The budget is ``sparsity`` of all conv-weighted channels; channels are taken lowest score first (ties:
    group order, then channel order), skipping groups at their cap, and the walk stops at the first channel
    that no longer fits the budget, so a larger ``sparsity`` always removes a superset.
    """
    if len(scores) != len(convs):
        raise ValueError("one conv count per group is needed")
    total = sum(len(s) * w for s, w in zip(scores, convs, strict=True))
    budget = sparsity * total + _EPS
    caps = [len(s) - min_kept(len(s), max_layer_sparsity) for s in scores]
    order = sorted((float(v), g, i) for g, s in enumerate(scores) for i, v in enumerate(s))
    removed = [0] * len(scores)
    spent = 0
    for _, g, _ in order:
        if removed[g] >= caps[g]:
            continue
        if spent + convs[g] > budget:
            break
        removed[g] += 1
        spent += convs[g]
    return removed
