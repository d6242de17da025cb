"""Target search over made-up accuracy curves: the verified answer and its boundary, whatever the curve."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from prunebench.worker.engine.search import (
    LayerCurve,
    Probe,
    greedy_moves,
    grid_steps,
    schedule_after,
    search_prefix,
    search_target,
)

Curve = Callable[[float], float]


class Recorder:
    """evaluate(sparsity, full) over a full-split curve and a (possibly different) screening curve."""

    def __init__(self, full: Curve, screen: Curve | None = None) -> None:
        self.full, self.screen = full, screen or full
        self.calls: list[tuple[float, bool]] = []

    def __call__(self, sparsity: float, full: bool) -> float:
        self.calls.append((sparsity, full))
        return self.full(sparsity) if full else self.screen(sparsity)


def assert_verified(outcome_probes: list[Probe], answer: float, boundary: float | None, budget: float) -> None:
    full = {p.sparsity: p for p in outcome_probes if p.full}
    if answer > 0:
        assert full[answer].passed and full[answer].drop <= budget
    if boundary is not None:
        assert full[boundary].drop > budget and not full[boundary].passed


def test_monotonic_curve_finds_the_last_step_within_budget() -> None:
    evaluate = Recorder(lambda s: s**2)  # drop 0.02 at s = 0.1414...
    outcome = search_target(evaluate, budget=0.02, resolution=0.01, max_sparsity=0.95)
    assert outcome.answer == 0.14 and outcome.boundary == 0.15
    assert outcome.answer_drop == pytest.approx(0.0196) and outcome.boundary_drop == pytest.approx(0.0225)
    assert outcome.met_budget
    assert_verified(outcome.probes, outcome.answer, outcome.boundary, 0.02)
    assert len(evaluate.calls) == len(set(evaluate.calls)) <= 12, "each point evaluated once, log-many points"


def test_budget_never_met_at_the_first_step_answers_the_dense_model() -> None:
    outcome = search_target(Recorder(lambda s: 0.05 + s), budget=0.01, resolution=0.01)
    assert outcome.answer == 0.0 and not outcome.met_budget
    assert outcome.answer_drop == 0.0
    assert outcome.boundary == 0.01 and outcome.boundary_drop == pytest.approx(0.06)


def test_budget_met_everywhere_answers_the_highest_allowed_step() -> None:
    evaluate = Recorder(lambda s: 0.0)
    outcome = search_target(evaluate, budget=0.01, resolution=0.05, max_sparsity=0.9)
    assert outcome.answer == 0.9 and outcome.boundary is None and outcome.boundary_drop is None
    assert (0.9, True) in evaluate.calls


def test_non_monotonic_curve_still_gives_a_verified_edge() -> None:
    # Dips back under the budget after 0.3 (noise on a small split): the search may land on either edge,
    # but whatever it answers passes and the step above fails, both on the full split.
    def curve(s: float) -> float:
        return 0.03 if 0.2 <= s < 0.3 else (0.0 if s < 0.5 else s - 0.45)

    outcome = search_target(Recorder(curve), budget=0.02, resolution=0.01)
    assert outcome.answer in (0.19, 0.49) and outcome.boundary == round(outcome.answer + 0.01, 10)
    assert_verified(outcome.probes, outcome.answer, outcome.boundary, 0.02)


def test_an_optimistic_screen_is_corrected_by_stepping_down_on_the_full_split() -> None:
    evaluate = Recorder(full=lambda s: s, screen=lambda s: s / 4)  # the subset looks 4x better
    outcome = search_target(evaluate, budget=0.05, resolution=0.01, screened=True)
    assert outcome.answer == 0.05 and outcome.boundary == 0.06
    assert_verified(outcome.probes, outcome.answer, outcome.boundary, 0.05)
    assert any(not full for _, full in evaluate.calls) and (0.05, True) in evaluate.calls


def test_a_pessimistic_screen_is_corrected_by_going_up_on_the_full_split() -> None:
    evaluate = Recorder(full=lambda s: s / 4, screen=lambda s: s)
    outcome = search_target(evaluate, budget=0.05, resolution=0.01, screened=True)
    assert outcome.answer == 0.2 and outcome.boundary == 0.21
    assert_verified(outcome.probes, outcome.answer, outcome.boundary, 0.05)


def test_screened_probes_are_marked_and_unscreened_searches_only_use_the_full_split() -> None:
    evaluate = Recorder(lambda s: s)
    search_target(evaluate, budget=0.1, resolution=0.01)
    assert all(full for _, full in evaluate.calls)


@pytest.mark.parametrize("seed", range(40))
def test_random_noisy_curves_always_end_on_a_verified_pass_fail_pair(seed: int) -> None:
    rng = random.Random(seed)
    noise = {round(k * 0.01, 10): rng.uniform(-0.02, 0.02) for k in range(100)}
    screen_noise = {s: n + rng.uniform(-0.01, 0.01) for s, n in noise.items()}
    scale = rng.uniform(0.02, 0.5)
    outcome = search_target(
        Recorder(full=lambda s: scale * s + noise[s], screen=lambda s: scale * s + screen_noise[s]),
        budget=0.02,
        resolution=0.01,
        screened=bool(seed % 2),
    )
    assert_verified(outcome.probes, outcome.answer, outcome.boundary, 0.02)
    assert outcome.boundary is None or outcome.boundary == round(outcome.answer + 0.01, 10)
    assert outcome.boundary is not None or outcome.answer == 0.95


def test_bad_grid_and_budget_are_errors() -> None:
    assert grid_steps(0.01, 0.95) == 95 and grid_steps(0.1, 0.9) == 9
    with pytest.raises(ValueError, match="resolution"):
        search_target(Recorder(lambda s: s), budget=0.01, resolution=0.5, max_sparsity=0.4)
    with pytest.raises(ValueError, match="budget"):
        search_target(Recorder(lambda s: s), budget=-0.1)
    with pytest.raises(ValueError, match="NaN"):
        search_target(Recorder(lambda s: float("nan")), budget=0.1)


# -- greedy schedules over per-layer sensitivity curves ------------------------------------------------------

LEVELS = (0.3, 0.5, 0.7, 0.9)


def test_greedy_prunes_robust_big_layers_first_and_spares_sensitive_ones() -> None:
    curves = [
        LayerCurve("robust", 1000, LEVELS, (0.0, 0.001, 0.002, 0.004)),
        LayerCurve("sensitive", 1000, LEVELS, (0.01, 0.05, 0.2, 0.5)),
        LayerCurve("small", 10, LEVELS, (0.0, 0.0, 0.001, 0.002)),
    ]
    moves = greedy_moves(curves)
    assert moves[0].layer == "robust"
    assert sum(m.cost for m in moves) == pytest.approx(0.5 + 0.004 + 0.002)
    order = [(m.layer, m.level) for m in moves]
    assert order.index(("robust", 0.9)) < order.index(("sensitive", 0.3)), "the sensitive layer goes last"
    assert all(schedule_after(moves, len(moves))[c.name] == 0.9 for c in curves), "the full list reaches the top"


def test_a_prior_rate_puts_a_floor_under_moves_measured_free() -> None:
    curves = [LayerCurve("big", 1000, LEVELS, (0.0, 0.0, 0.0, 0.0)), LayerCurve("tiny", 10, LEVELS, (0.0,) * 4)]
    free = greedy_moves(curves)
    assert [m.cost for m in free] == [0.0, 0.0], "without a prior, both jump straight to 0.9 at no cost"
    priced = greedy_moves(curves, prior_rate=0.1)
    assert priced[0].cost == pytest.approx(0.1 * 900 / 1010)


def test_non_monotonic_curves_may_skip_levels() -> None:
    moves = greedy_moves([LayerCurve("noisy", 100, LEVELS, (0.02, 0.0, 0.03, 0.01))])
    assert [m.level for m in moves] == [0.5, 0.9]  # 0.5 and 0.9 look free: jump there directly


def test_the_prefix_is_searched_on_the_full_split_up_and_down() -> None:
    moves = greedy_moves([LayerCurve(f"l{i}", 100, LEVELS, (0.0, 0.0, 0.0, 0.001)) for i in range(8)])
    asked: list[int] = []

    def full_drop(k: int) -> float:  # the real drops add up, whatever the model says
        asked.append(k)
        return 0.004 * k

    k, drop = search_prefix(moves, 0.02, full_drop)
    assert k == 5 and drop == pytest.approx(0.02) and 6 in asked, "verified, with the next prefix failing"
    assert 0 not in asked and len(asked) == len(set(asked))


def test_no_prefix_within_budget_leaves_the_model_dense() -> None:
    moves = greedy_moves([LayerCurve("only", 100, LEVELS, (0.5, 0.6, 0.7, 0.8))])
    assert search_prefix(moves, 0.01, lambda k: 0.5 + 0.1 * k) == (0, 0.0)
    assert search_prefix([], 0.01, lambda k: pytest.fail("nothing to evaluate")) == (0, 0.0)
