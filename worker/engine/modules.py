"""Small facts about a torch model that several engine modules need (pruning, measurement)."""

from __future__ import annotations

from torch import nn


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """All Conv2d modules by qualified name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def input_channels(model: nn.Module) -> int:
    """Channels of the model's input image: its config's `ch`, else the first Conv2d's, else 3 (RGB)."""
    cfg = getattr(model, "yaml", None)
    if isinstance(cfg, dict) and "ch" in cfg:
        return int(cfg["ch"])
    first = next(iter(conv_layers(model).values()), None)
    return first.in_channels if first is not None else 3
