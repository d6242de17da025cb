"""The official YOLOv5 detector architectures (v6.0+ layout) as plain dicts, in upstream's yaml schema.

All five sizes share one layer graph; they differ only in how deep (repeats of C3 bottlenecks) and how wide
(channel counts) it is scaled. Layer rows are ``[from, repeats, module, args]``; channel counts in args are
for width 1.0 and repeats for depth 1.0, exactly as upstream's yaml files state them.

This module is torch-free on purpose: the API service may use it to describe architectures.
"""

from __future__ import annotations

from typing import Any

from prunebench.checkpoints.architectures import ARCHITECTURES, COCO_ANCHORS, MULTIPLES, guess_arch, official_config

__all__ = ["ARCHITECTURES", "COCO_ANCHORS", "MULTIPLES", "get_config", "guess_arch"]


def get_config(name: str, nc: int = 80) -> dict[str, Any]:
    """A fresh (deep-copied, safe to mutate) config dict for an official architecture name.

    The layer tables live in `prunebench.checkpoints.architectures` (torch-free) so the upload inspector
    can size official models too.
    """
    return official_config(name, nc)
