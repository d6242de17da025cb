"""The official YOLOv5 sizes by name: one table for the torch-free inspector and the engine's model builder.

Every size shares one layer graph (BACKBONE + HEAD below); they differ only in how deep
(repeats of C3 bottlenecks) and how wide (channel counts) it is scaled. Values are upstream's yaml files'.
"""

from __future__ import annotations

import copy
from typing import Any

MULTIPLES: dict[str, tuple[float, float]] = {
    "yolov5n": (0.33, 0.25),
    "yolov5s": (0.33, 0.50),
    "yolov5m": (0.67, 0.75),
    "yolov5l": (1.0, 1.0),
    "yolov5x": (1.33, 1.25),
}
"""(depth_multiple, width_multiple) per official size."""

ARCHITECTURES: tuple[str, ...] = tuple(MULTIPLES)

# Standard COCO anchors in pixels, three (w, h) pairs per level: P3/8, P4/16, P5/32.
COCO_ANCHORS: list[list[int]] = [
    [10, 13, 16, 30, 33, 23],
    [30, 61, 62, 45, 59, 119],
    [116, 90, 156, 198, 373, 326],
]

# Backbone: a 6x6 stride-2 stem, then four stride-2 stages (each a Conv followed by a C3), then SPPF.
BACKBONE: list[list[Any]] = [
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
HEAD: list[list[Any]] = [
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


def guess_arch(depth_multiple: object, width_multiple: object, levels: int = 3) -> str | None:
    """Official size name for a pair of multiples (``...6`` suffix for 4-level P6 models), else None."""
    if not isinstance(depth_multiple, int | float) or not isinstance(width_multiple, int | float):
        return None
    for name, (d, w) in MULTIPLES.items():
        if abs(d - depth_multiple) < 1e-6 and abs(w - width_multiple) < 1e-6:
            if levels == 3:
                return name
            if levels == 4:
                return name + "6"
    return None


def arch_of_yaml(yaml_cfg: dict[str, Any] | None) -> str | None:
    """The official size an upstream-schema config dict describes (by its multiples and anchor levels)."""
    if not isinstance(yaml_cfg, dict):
        return None
    anchors = yaml_cfg.get("anchors")
    levels = len(anchors) if isinstance(anchors, list) else 3
    return guess_arch(yaml_cfg.get("depth_multiple"), yaml_cfg.get("width_multiple"), levels)


def builtin_yaml_name(spec: object) -> str | None:
    """The official architecture a ``"yaml": "yolov5s"`` string names, or None."""
    if not isinstance(spec, str):
        return None
    key = spec.strip().lower().removesuffix(".yaml")
    return key if key in MULTIPLES else None


def official_config(name: str, nc: int = 80) -> dict[str, Any]:
    """A fresh (deep-copied, safe to mutate) config dict for an official size, in upstream's yaml schema."""
    key = name.lower().removesuffix(".yaml").removesuffix(".pt")
    if key not in MULTIPLES:
        raise KeyError(f"unknown architecture {name!r}; expected one of {', '.join(ARCHITECTURES)}")
    depth, width = MULTIPLES[key]
    return {
        "nc": nc,
        "depth_multiple": depth,
        "width_multiple": width,
        "anchors": copy.deepcopy(COCO_ANCHORS),
        "backbone": copy.deepcopy(BACKBONE),
        "head": copy.deepcopy(HEAD),
    }
