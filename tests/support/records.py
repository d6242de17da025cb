"""Comparing COCO results rows written on different machines.

Upstream writes rows rounded to the last digit that matters (bbox 3 decimals, score 5). The float32
convolutions behind them are not bitwise the same on every CPU (oneDNN and MLAS pick kernels by
instruction set: AVX2, AVX-512, ...), so a value within a rounding step of a boundary may land one
unit of its last digit either side on another machine, and nowhere more.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

SCORE_STEP = 1e-5
BOX_STEP = 1e-3
_SLACK = 1e-9  # the decimal steps are not exact in binary


def _close(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if abs(a["score"] - b["score"]) > SCORE_STEP + _SLACK:
        return False
    return all(abs(x - y) <= BOX_STEP + _SLACK for x, y in zip(a["bbox"], b["bbox"], strict=True))


def match_rows(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
    """Pair rows one to one: same image and category, score and each bbox value within one last-digit step.

    Returns (how many pairs are exactly equal, our rows left without a partner). Exact partners are
    taken first, then the closest remaining one.
    """
    pool: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for row in theirs:
        pool[row["image_id"], row["category_id"]].append(row)
    exact, unmatched, near = 0, [], []
    for row in ours:
        candidates = pool[row["image_id"], row["category_id"]]
        key = (row["score"], row["bbox"])
        same = next((k for k, c in enumerate(candidates) if (c["score"], c["bbox"]) == key), None)
        if same is None:
            near.append(row)
            continue
        candidates.pop(same)
        exact += 1
    for row in near:
        candidates = pool[row["image_id"], row["category_id"]]
        close = [k for k, c in enumerate(candidates) if _close(row, c)]
        if not close:
            unmatched.append(row)
            continue
        best = min(close, key=lambda k: abs(candidates[k]["score"] - row["score"]))
        candidates.pop(best)
    return exact, unmatched
