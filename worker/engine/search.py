"""Target search, the pure logic: the most pruned sparsity whose verified drop stays within a budget.

Torch-free on purpose (tests drive it with made-up curves). The caller supplies
``evaluate(sparsity, full) -> drop``: the accuracy drop of the model pruned to ``sparsity`` against the
dense model on the same images, on the screening subset (``full=False``) or the whole split
(``full=True``). Sparsities live on a grid of ``resolution`` steps, ``0 .. floor(max_sparsity / resolution)``;
step 0 is the dense model, whose drop is 0 by definition and is never asked for.

The search, in three phases:

1. **Bracketing** (screen): step up from the dense model with doubling strides (first stride
   ``first_step``, e.g. 0.1, 0.3, 0.7, ...) until a step fails, or the highest step passes.
2. **Bisection** (screen) between the last passing and the first failing step, to adjacent steps.
3. **Verification** (whole split): the candidate is evaluated on the full split. If it fails there, a
   bisection on the full split between the dense model and it finds an adjacent pass/fail pair; if it
   passes, the next step up (the boundary) is evaluated; when that passes too (the screen was pessimistic),
   bracketing and bisection continue upward on the full split.

So the answer always passes on the full split and its boundary (answer + resolution) always fails there
(or the answer is the highest step). Curves need not be monotonic: the answer is then a verified local
edge (passes, the next step fails), not necessarily the highest passing step anywhere on the grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

Evaluate = Callable[[float, bool], float]
"""(sparsity, full) -> drop; full=False means the screening subset."""

EPS = 1e-12
"""Float slack when comparing a drop with the budget (drops are differences of COCOeval means)."""


@dataclass(frozen=True)
class Probe:
    sparsity: float
    full: bool
    drop: float
    passed: bool


@dataclass
class SearchOutcome:
    """The verified answer (0.0 = only the dense model meets the budget) and the boundary that fails."""

    answer: float
    answer_drop: float
    boundary: float | None  # None when the answer is the highest allowed step
    boundary_drop: float | None
    probes: list[Probe] = field(default_factory=list)

    @property
    def met_budget(self) -> bool:
        """Whether some pruned point (sparsity > 0) meets the budget."""
        return self.answer > 0.0


def grid_steps(resolution: float, max_sparsity: float) -> int:
    """The highest grid step: floor(max_sparsity / resolution), computed without float drift."""
    if not (0.0 < resolution < max_sparsity < 1.0 + EPS):
        raise ValueError(f"need 0 < resolution ({resolution}) < max_sparsity ({max_sparsity}) <= 1")
    return math.floor(max_sparsity / resolution + 1e-9)


class _Search:
    def __init__(self, evaluate: Evaluate, budget: float, resolution: float, max_sparsity: float, screened: bool):
        self.evaluate, self.budget, self.resolution, self.screened = evaluate, budget, resolution, screened
        self.top = grid_steps(resolution, max_sparsity)
        self.memo: dict[tuple[int, bool], float] = {}
        self.probes: list[Probe] = []

    def sparsity(self, step: int) -> float:
        return round(step * self.resolution, 10)

    def drop(self, step: int, full: bool) -> float:
        if step == 0:
            return 0.0
        full = full or not self.screened
        key = (step, full)
        if key not in self.memo:
            drop = float(self.evaluate(self.sparsity(step), full))
            if math.isnan(drop):
                raise ValueError(f"evaluate({self.sparsity(step)}) returned NaN")
            self.memo[key] = drop
            self.probes.append(Probe(self.sparsity(step), full, drop, drop <= self.budget + EPS))
        return self.memo[key]

    def passes(self, step: int, full: bool) -> bool:
        return self.drop(step, full) <= self.budget + EPS

    def bracket(self, ok: int, stride: int, full: bool) -> tuple[int, int | None]:
        """From a passing step, doubling strides up to the first failing step: (last pass, first fail)."""
        while ok < self.top:
            step = min(ok + stride, self.top)
            if not self.passes(step, full):
                return ok, step
            ok, stride = step, stride * 2
        return ok, None

    def bisect(self, ok: int, fail: int, full: bool) -> tuple[int, int]:
        """Narrow a (pass, fail) pair to adjacent steps."""
        while fail - ok > 1:
            mid = (ok + fail) // 2
            if self.passes(mid, full):
                ok = mid
            else:
                fail = mid
        return ok, fail

    def verify(self, candidate: int, stride: int) -> tuple[int, int | None]:
        """A full-split (pass, fail) pair of adjacent steps, starting from the screen's candidate."""
        if candidate > 0 and not self.passes(candidate, True):
            return self.bisect(0, candidate, True)  # the screen was optimistic: step down
        if candidate == self.top:
            return candidate, None
        if not self.passes(candidate + 1, True):
            return candidate, candidate + 1
        ok, fail = self.bracket(candidate + 1, stride, True)  # the screen was pessimistic: go on up
        return (ok, None) if fail is None else self.bisect(ok, fail, True)

    def outcome(self, answer: int, boundary: int | None) -> SearchOutcome:
        return SearchOutcome(
            answer=self.sparsity(answer),
            answer_drop=self.drop(answer, True),
            boundary=None if boundary is None else self.sparsity(boundary),
            boundary_drop=None if boundary is None else self.drop(boundary, True),
            probes=list(self.probes),
        )


def search_target(
    evaluate: Evaluate,
    budget: float,
    resolution: float = 0.01,
    max_sparsity: float = 0.95,
    *,
    screened: bool = False,
    first_step: float = 0.1,
) -> SearchOutcome:
    """Bracket, bisect on the screen, verify on the full split; see the module docstring.

    ``budget`` >= 0 (the dense model always meets it); ``screened=False`` makes every probe a full one.
    Raises ValueError for a bad grid or budget, or when ``evaluate`` returns NaN.
    """
    if not budget >= 0.0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    search = _Search(evaluate, budget, resolution, max_sparsity, screened)
    stride = max(1, round(first_step / resolution))
    ok, fail = search.bracket(0, stride, False)
    if fail is not None:
        ok, fail = search.bisect(ok, fail, False)
    answer, boundary = search.verify(ok, stride)
    return search.outcome(answer, boundary)


# -- per-layer schedules from sensitivity curves ------------------------------------------------------------


@dataclass(frozen=True)
class LayerCurve:
    """One layer pruned alone: its weight count and the drop at each level (levels ascending)."""

    name: str
    params: int
    levels: tuple[float, ...]
    drops: tuple[float, ...]


@dataclass(frozen=True)
class Move:
    """Raise one layer to a level: ``gain`` weights removed for ``cost`` more (modelled) drop."""

    layer: str
    level: float
    gain: float
    cost: float


MOVE_EPS = 1e-6
"""Added to a move's modelled cost so free moves (a measured drop <= 0) rank by their gain."""


def greedy_moves(curves: list[LayerCurve], prior_rate: float = 0.0) -> list[Move]:
    """Every layer from dense to its top level, one move at a time, best weights-removed per drop first.

    The drop model is additive over layers (each layer's own drop, clipped at 0), the usual first-order
    assumption of sensitivity-based pruning; a move may skip levels (curves need not be convex or monotonic).
    ``prior_rate`` (drop per unit of the total weights removed, e.g. the uniform answer's budget / sparsity)
    is a floor under each move's cost: single-layer drops measured on a few images are noisy, and a move
    measured "free" is not free once other layers are pruned too. Any prefix of the list is a schedule
    (:func:`schedule_after`)."""
    level_of = {c.name: -1 for c in curves}  # index into levels; -1 = dense
    total = sum(c.params for c in curves) or 1

    def move(curve: LayerCurve, j: int) -> Move:
        at = level_of[curve.name]
        base_level = curve.levels[at] if at >= 0 else 0.0
        base_drop = max(curve.drops[at], 0.0) if at >= 0 else 0.0
        gain = curve.params * (curve.levels[j] - base_level)
        measured = max(max(curve.drops[j], 0.0) - base_drop, 0.0)
        return Move(curve.name, curve.levels[j], gain, max(measured, prior_rate * gain / total))

    moves: list[Move] = []
    while True:
        options = [move(c, j) for c in curves for j in range(level_of[c.name] + 1, len(c.levels))]
        if not options:
            return moves
        best = max(options, key=lambda m: (m.gain / (m.cost + MOVE_EPS), m.gain))
        moves.append(best)
        level_of[best.layer] = next(c for c in curves if c.name == best.layer).levels.index(best.level)


def schedule_after(moves: list[Move], count: int) -> dict[str, float]:
    """layer -> sparsity after the first ``count`` moves (layers not yet moved are absent: dense)."""
    schedule: dict[str, float] = {}
    for move in moves[:count]:
        schedule[move.layer] = move.level
    return schedule


def search_prefix(moves: list[Move], budget: float, full_drop: Callable[[int], float]) -> tuple[int, float]:
    """The longest prefix of ``moves`` found whose verified drop is within ``budget``: the target search
    (bracketing, bisection, verification; :func:`search_target`) over the prefix length, every probe on the
    whole split. ``full_drop(k)`` = the drop of the schedule after k moves (k = 0, dense, is never asked).

    Returns (k, its verified drop); k = 0 when no prefix passes."""
    n = len(moves)
    if n == 0:
        return 0, 0.0
    if n == 1:
        drop = full_drop(1)
        return (1, drop) if drop <= budget + EPS else (0, 0.0)
    outcome = search_target(lambda s, _full: full_drop(round(s * n)), budget, 1.0 / n, 1.0)
    return round(outcome.answer * n), outcome.answer_drop
