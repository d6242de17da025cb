"""Which Conv2d layers a pruning method may touch: every Conv2d minus the job's ``exclude`` patterns.

Patterns are shell-style (``fnmatch``, case-sensitive) and are matched against a conv's module name *and*
each of its ancestors' names, so ``model.24`` excludes the whole Detect head just like ``model.24.*`` does.
A pattern that matches no Conv2d at all is almost always a typo, so it is refused rather than ignored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fnmatch import fnmatchcase

from torch import nn

from prunebench.worker.engine.modules import conv_layers

__all__ = ["MAX_PATTERN_LEN", "check_sparsity", "conv_layers", "prunable_layers"]

MAX_PATTERN_LEN = 200


def check_sparsity(sparsity: float) -> float:
    value = float(sparsity)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return value


def check_patterns(patterns: Iterable[str] | str | None) -> list[str]:
    if isinstance(patterns, str):
        patterns = [patterns]  # one pattern, not an iterable of one-character patterns
    checked: list[str] = []
    for pattern in patterns or []:
        if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_LEN or "\x00" in pattern:
            raise ValueError(f"bad exclude pattern {pattern!r}: must be a 1-{MAX_PATTERN_LEN} character string")
        checked.append(pattern)
    return checked


def _ancestry(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def matches(name: str, pattern: str) -> bool:
    """True when ``pattern`` matches the module name or the name of one of its ancestors."""
    return any(fnmatchcase(prefix, pattern) for prefix in _ancestry(name))


def prunable_layers(model: nn.Module, exclude: Iterable[str] | str | None = None) -> list[str]:
    """Names of the Conv2d layers left to prune after ``exclude``; ValueError for a pattern matching none."""
    patterns = check_patterns(exclude)
    names = list(conv_layers(model))
    unused = [p for p in patterns if not any(matches(n, p) for n in names)]
    if unused:
        raise ValueError(f"exclude pattern(s) match no Conv2d layer: {', '.join(map(repr, unused))}")
    return [n for n in names if not any(matches(n, p) for p in patterns)]
