"""The official YOLOv5 sizes by name: one table for the torch-free inspector and the engine's model builder.

Every size shares one layer graph (prunebench.worker.engine.yolo.configs); they differ only in how deep
(repeats of C3 bottlenecks) and how wide (channel counts) it is scaled. Values are upstream's yaml files'.
"""

from __future__ import annotations

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
