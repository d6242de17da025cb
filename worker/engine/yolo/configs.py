"""The official YOLOv5 detector architectures (v6.0+ layout) as plain dicts, in upstream's yaml schema.

All five sizes share one layer graph; they differ only in how deep (repeats of C3 bottlenecks) and how wide
(channel counts) it is scaled. Layer rows are ``[from, repeats, module, args]``; channel counts in args are
for width 1.0 and repeats for depth 1.0, exactly as upstream's yaml files state them.

This module is torch-free on purpose: the API service may use it to describe architectures.
"""

from __future__ import annotations

import copy
from typing import Any

from prunebench.checkpoints.architectures import ARCHITECTURES, MULTIPLES, guess_arch

__all__ = ["ARCHITECTURES", "COCO_ANCHORS", "MULTIPLES", "get_config", "guess_arch"]

# Standard COCO anchors in pixels, three (w, h) pairs per level: P3/8, P4/16, P5/32.
COCO_ANCHORS: list[list[int]] = [
    [10, 13, 16, 30, 33, 23],
    [30, 61, 62, 45, 59, 119],
    [116, 90, 156, 198, 373, 326],
]

# Backbone: a 6x6 stride-2 stem, then four stride-2 stages (each a Conv followed by a C3), then SPPF.
_BACKBONE: list[list[Any]] = [
    [-1, 1, "Conv", [64, 6, 2, 2]],  # 0: P1/2
    [-1, 1, "Conv", [128, 3, 2]],  # 1: P2/4
    [-1, 3, "C3", [128]],
    [-1, 1, "Conv", [256, 3, 2]],  # 3: P3/8
    [-1, 6, "C3", [256]],
    [-1, 1, "Conv", [512, 3, 2]],  # 5: P4/16
    [-1, 9, "C3", [512]],
    [-1, 1, "Conv", [1024, 3, 2]],  # 7: P5/32
    [-1, 3, "C3", [1024]],
    [-1, 1, "SPPF", [1024, 5]],  # 9
]

# PANet head: top-down path (upsample + concat with backbone P4, P3), then bottom-up path back to P5.
_HEAD: list[list[Any]] = [
    [-1, 1, "Conv", [512, 1, 1]],  # 10
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [[-1, 6], 1, "Concat", [1]],  # joins backbone P4
    [-1, 3, "C3", [512, False]],  # 13
    [-1, 1, "Conv", [256, 1, 1]],  # 14
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [[-1, 4], 1, "Concat", [1]],  # joins backbone P3
    [-1, 3, "C3", [256, False]],  # 17: P3/8 output
    [-1, 1, "Conv", [256, 3, 2]],
    [[-1, 14], 1, "Concat", [1]],  # joins head P4
    [-1, 3, "C3", [512, False]],  # 20: P4/16 output
    [-1, 1, "Conv", [512, 3, 2]],
    [[-1, 10], 1, "Concat", [1]],  # joins head P5
    [-1, 3, "C3", [1024, False]],  # 23: P5/32 output
    [[17, 20, 23], 1, "Detect", ["nc", "anchors"]],  # 24
]


def get_config(name: str, nc: int = 80) -> dict[str, Any]:
    """A fresh (deep-copied, safe to mutate) config dict for an official architecture name."""
    key = name.lower().removesuffix(".yaml").removesuffix(".pt")
    if key not in MULTIPLES:
        raise KeyError(f"unknown architecture {name!r}; expected one of {', '.join(ARCHITECTURES)}")
    depth, width = MULTIPLES[key]
    return {
        "nc": nc,
        "depth_multiple": depth,
        "width_multiple": width,
        "anchors": copy.deepcopy(COCO_ANCHORS),
        "backbone": copy.deepcopy(_BACKBONE),
        "head": copy.deepcopy(_HEAD),
    }
