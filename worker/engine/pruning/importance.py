"""Channel importance criteria, each one of torch-pruning's importance classes.

Every criterion scores each channel of a coupled group (all convs and BatchNorms whose channels are
removed together, reduced by the group mean) and divides by a per-group normaliser so that scores of
different groups can be ranked against each other (``global`` allocation):

* ``l1``: sum of |w| of the channel's filter (Li et al. 2017, "Pruning Filters for Efficient ConvNets");
  ``GroupMagnitudeImportance(p=1)``.
* ``l2``: sum of w² (``GroupMagnitudeImportance(p=2)``).
* ``bn_scale``: |γ| of the channel's BatchNorm (Liu et al. 2017, "network slimming");
  ``BNScaleImportance``. Needs an unfused model.
* ``lamp``: squared magnitude normalised by the sum of the larger ones in its group (Lee et al. 2021,
  LAMP); ``LAMPImportance``. Within one group it ranks exactly like ``l2``, so it only differs from
  ``l2`` under ``global`` allocation.
* ``taylor``: |w · ∂L/∂w| summed over the channel's weights, the first-order Taylor estimate of the loss
  change when the channel is removed (Molchanov et al. 2019); ``GroupTaylorImportance``. Needs the
  gradients of a detection loss on labelled batches in ``.grad`` before scoring.
"""

from __future__ import annotations

from typing import Literal

import torch_pruning as tp

Criterion = Literal["l1", "l2", "bn_scale", "lamp", "taylor"]
CRITERIA: tuple[Criterion, ...] = ("l1", "l2", "bn_scale", "lamp", "taylor")
NEEDS_GRADIENTS: frozenset[str] = frozenset({"taylor"})
NEEDS_BATCHNORM: frozenset[str] = frozenset({"bn_scale"})


def make_importance(criterion: str) -> tp.importance.Importance:
    """A fresh torch-pruning importance object for ``criterion``; ValueError for an unknown name."""
    if criterion == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if criterion == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if criterion == "bn_scale":
        return tp.importance.BNScaleImportance()
    if criterion == "lamp":
        return tp.importance.LAMPImportance(p=2)
    if criterion == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise ValueError(f"unknown importance {criterion!r}; choose one of {', '.join(CRITERIA)}")
