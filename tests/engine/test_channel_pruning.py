"""Channel pruning: importance criteria, uniform and global allocation, round_to, exclusions, monotonicity.

Runs on the bundled demo YOLOv5n *unfused* (BatchNorm present), as the job pipeline prunes it. One
``ChannelPruner`` (one trace, one scoring) serves a whole grid of targets, so the monotonicity checks
over 0.05…0.99 stay cheap; only a few targets are actually cut.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunebench.datasets.catalog import load_catalog, resolve_dataset
from prunebench.worker.engine import measure
from prunebench.worker.engine.checkpoints import load_model
from prunebench.worker.engine.data import decode_dataset
from prunebench.worker.engine.pruning import ChannelOptions, apply_pruning, prunable_layers, taylor
from prunebench.worker.engine.pruning.allocation import global_removed, min_kept, round_kept, uniform_kept
from prunebench.worker.engine.pruning.channel import ChannelPruner, ChannelPruningError
from prunebench.worker.engine.yolo.model import DetectionModel
from tests.support.paths import DEMO_CHECKPOINT

DETECT_CONVS = ["model.24.m.0", "model.24.m.1", "model.24.m.2"]
GRID = [round(0.05 + 0.047 * i, 3) for i in range(21)]  # 0.05 ... 0.99
IMG = 128


@pytest.fixture(scope="module")
def unfused() -> DetectionModel:
    return load_model(DEMO_CHECKPOINT).model


@pytest.fixture
def model(unfused: DetectionModel) -> DetectionModel:
    return copy.deepcopy(unfused)


def _convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _pruner(model: nn.Module, exclude: list[str] | None = None, **options: object) -> ChannelPruner:
    convs = _convs(model)
    targets = {name: convs[name] for name in prunable_layers(model, exclude)}
    return ChannelPruner(model, targets, ChannelOptions(**options))  # type: ignore[arg-type]


def _predict(model: nn.Module) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        return model.eval()(torch.rand(1, 3, IMG, IMG))[0]


# --- allocation rules (pure) ----------------------------------------------------------------------------


@given(st.integers(1, 512), st.floats(0.0, 0.99), st.floats(0.0, 0.99))
def test_uniform_kept_is_floor_rule_and_monotone(channels: int, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert 1 <= uniform_kept(channels, hi) <= uniform_kept(channels, lo) <= channels
    assert uniform_kept(channels, 0.3) == max(1, int(channels * 0.7 + 1e-9))


@given(st.integers(1, 512), st.integers(0, 512), st.sampled_from([1, 2, 4, 8, 16, 32]), st.integers(1, 64))
def test_round_kept_gives_multiples_within_bounds(channels: int, kept: int, round_to: int, minimum: int) -> None:
    kept = min(kept, channels)
    minimum = min(minimum, channels)
    out = round_kept(kept, channels, round_to, minimum)
    assert min(minimum, channels) <= out <= channels and out >= 1
    assert out % round_to == 0 or out == channels or channels < round_to
    assert round_kept(max(kept - 1, 0), channels, round_to, minimum) <= out  # monotone in kept


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=24), min_size=1, max_size=8),
    st.data(),
)
def test_global_removal_is_monotone_and_capped(scores: list[list[float]], data: st.DataObject) -> None:
    convs = data.draw(st.lists(st.integers(1, 4), min_size=len(scores), max_size=len(scores)))
    cap = data.draw(st.floats(0.1, 0.95))
    previous = [0] * len(scores)
    for sparsity in GRID:
        removed = global_removed(scores, convs, sparsity, cap)
        assert all(r >= p for r, p in zip(removed, previous, strict=True))  # superset as the target grows
        assert all(len(s) - r >= min_kept(len(s), cap) for s, r in zip(scores, removed, strict=True))
        total = sum(len(s) * w for s, w in zip(scores, convs, strict=True))
        assert sum(r * w for r, w in zip(removed, convs, strict=True)) <= sparsity * total + 1e-6
        previous = removed


def test_global_removes_lowest_scores_first_across_groups() -> None:
    # Group 0 is unimportant everywhere, group 1 important: a global ranking empties group 0 first (to its cap).
    removed = global_removed([[0.1, 0.2, 0.3, 0.4], [5.0, 6.0, 7.0, 8.0]], [1, 1], 0.25, 0.75)
    assert removed == [2, 0]
    assert global_removed([[0.1, 0.2, 0.3, 0.4], [5.0, 6.0, 7.0, 8.0]], [1, 1], 0.5, 0.75) == [3, 1]


# --- monotonicity over 0.05 ... 0.99 --------------------------------------------------------------------


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_kept_channels_never_grow_with_the_target(model: DetectionModel, allocation: str) -> None:
    pruner = _pruner(model, allocation=allocation)
    previous: dict[str, int] | None = None
    for sparsity in GRID:
        kept = {cut.root: cut.kept for cut in pruner.plan(sparsity).cuts}
        assert all(k >= 1 for k in kept.values())
        if previous is not None:
            assert all(kept[root] <= previous[root] for root in kept), sparsity
        previous = kept


def test_params_gflops_and_sparsity_never_grow_at_high_targets(unfused: DetectionModel) -> None:
    # The case: 0.95 / 0.97 / 0.99 used to leave 14,659 / 47,267 / 359,788 parameters.
    rows = []
    for sparsity in (0.95, 0.97, 0.99):
        out = apply_pruning(copy.deepcopy(unfused), "channel", sparsity, [], ChannelOptions(round_to=1))
        rows.append((out.achieved, out.stats["params_after"], measure.gflops(out.model.fuse(), IMG)))
    for (s0, p0, f0), (s1, p1, f1) in itertools.pairwise(rows):
        assert s1 >= s0 and p1 <= p0 and f1 <= f0
    assert rows[-1][0] > 0.9  # high targets really remove most channels now


# --- round_to -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("round_to", [8, 16])
def test_kept_counts_are_multiples_of_round_to(model: DetectionModel, round_to: int) -> None:
    before = {n: c.out_channels for n, c in _convs(model).items()}
    out = apply_pruning(model, "channel", 0.3, [], ChannelOptions(round_to=round_to))
    after = {n: c.out_channels for n, c in _convs(out.model).items()}
    assert out.pruned_layers
    for name in out.pruned_layers:
        assert after[name] % round_to == 0 and after[name] < before[name], name
    assert 0.2 < out.achieved < 0.4
    assert _predict(out.model).shape[-1] == 85


def test_round_to_one_keeps_floor_of_each_width(model: DetectionModel) -> None:
    before = {n: c.out_channels for n, c in _convs(model).items()}
    out = apply_pruning(model, "channel", 0.3, [], ChannelOptions(round_to=1))
    after = {n: c.out_channels for n, c in _convs(out.model).items()}
    assert set(out.pruned_layers) == set(before) - set(DETECT_CONVS)
    assert all(after[n] == int(before[n] * 0.7 + 1e-9) for n in out.pruned_layers)
    assert all(after[n] == before[n] for n in DETECT_CONVS)


# --- criteria -------------------------------------------------------------------------------------------


def _weaken(model: DetectionModel, channels: list[int], by: float = 1e-3) -> None:
    """Make channels of the stem conv (model.0, its own group) unimportant by every magnitude measure."""
    with torch.no_grad():
        model.model[0].conv.weight[channels] *= by
        model.model[0].bn.weight[channels] *= by


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "lamp"])
def test_each_criterion_removes_weakened_channels_and_gives_a_working_model(
    model: DetectionModel, importance: str
) -> None:
    _weaken(model, [3, 11])
    params = measure.count_params(model)[0]
    pruner = _pruner(model, importance=importance, round_to=1)
    stem = next(cut for cut in pruner.plan(0.125).cuts if cut.root == "model.0.conv")
    assert stem.removed == [3, 11]  # 16 -> 14 channels in the stem: the two weakest go
    plan = pruner.plan(0.3)
    pruner.apply(plan)
    assert {3, 11} <= set(next(cut for cut in plan.cuts if cut.root == "model.0.conv").removed)
    assert measure.count_params(model)[0] < params * 0.7
    pred = _predict(model.fuse())
    assert pred.shape[-1] == 85 and torch.isfinite(pred).all()


def test_bn_scale_ranks_by_batchnorm_gamma_alone(model: DetectionModel) -> None:
    with torch.no_grad():
        model.model[0].bn.weight[[5, 6]] = 1e-4  # filters untouched: only |γ| says these are weak
    plan = _pruner(model, importance="bn_scale", round_to=1).plan(0.125)
    assert next(c for c in plan.cuts if c.root == "model.0.conv").removed == [5, 6]


def test_taylor_takes_gradients_of_the_detection_loss_on_labelled_images(model: DetectionModel) -> None:
    _weaken(model, [3, 11])
    with torch.no_grad():  # also the consumer's weights on those inputs: |w·∂L/∂w| is small on both sides
        model.model[1].conv.weight[:, [3, 11]] *= 1e-3
    spec = resolve_dataset(load_catalog(None), "shapes-val")
    decoded = decode_dataset(spec, 128, max_images=8)
    batches = taylor.labelled_batches(decoded, spec.class_to_category(80), 128, batch_size=4)
    assert [images.shape for images, _ in batches] == [(4, 3, 128, 128)] * 2
    assert all(len(targets) and targets[:, 2:].max() <= 1.0 for _, targets in batches)  # normalised xywh
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    pruner = _pruner(model, importance="taylor", round_to=1, gradients=taylor.gradient_fn(batches, 128))
    assert next(c for c in pruner.plan(0.125).cuts if c.root == "model.0.conv").removed == [3, 11]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())  # BatchNorm stayed in eval
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_taylor_without_labels_is_a_clear_error() -> None:
    spec = resolve_dataset(load_catalog(None), "shapes-val")
    decoded = decode_dataset(spec, 64, max_images=2)
    with pytest.raises(taylor.TaylorError, match="labelled"):
        taylor.labelled_batches(decoded, [-1] * 80, 64, batch_size=2)  # no model class maps to a category


def test_bn_scale_on_a_fused_model_is_refused(model: DetectionModel) -> None:
    with pytest.raises(ChannelPruningError, match="BatchNorm"):
        apply_pruning(model.fuse(), "channel", 0.3, [], ChannelOptions(importance="bn_scale"))


def test_taylor_without_batches_is_refused(model: DetectionModel) -> None:
    with pytest.raises(ChannelPruningError, match="labelled"):
        apply_pruning(model, "channel", 0.3, [], ChannelOptions(importance="taylor"))


@pytest.mark.parametrize(
    "options",
    [{"allocation": "local"}, {"max_layer_sparsity": 1.0}, {"round_to": 0}, {"importance": "random"}],
)
def test_bad_options_raise_value_error(model: DetectionModel, options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        apply_pruning(model, "channel", 0.3, [], ChannelOptions(**options))  # type: ignore[arg-type]


# --- global allocation ----------------------------------------------------------------------------------


def test_global_allocation_varies_per_layer_and_respects_the_cap(model: DetectionModel) -> None:
    before = {n: c.out_channels for n, c in _convs(model).items()}
    out = apply_pruning(
        model, "channel", 0.5, [], ChannelOptions(allocation="global", max_layer_sparsity=0.75, round_to=1)
    )
    after = {n: c.out_channels for n, c in _convs(out.model).items()}
    ratios = [1 - after[n] / before[n] for n in before if n not in DETECT_CONVS]
    assert max(ratios) - min(ratios) > 0.2  # one ranking: layers lose different shares
    assert max(ratios) <= 0.75 + 1e-9  # no layer beyond the cap, none emptied
    assert out.achieved == pytest.approx(0.5, abs=0.03)


# --- what must stay -------------------------------------------------------------------------------------


def test_stem_and_detect_inputs_can_be_protected(model: DetectionModel) -> None:
    protected = ["model.0.conv", "model.17.cv3.conv", "model.20.cv3.conv", "model.23.cv3.conv"]
    before = {n: c.out_channels for n, c in _convs(model).items()}
    out = apply_pruning(model, "channel", 0.5, ["model.0.*", "model.17.cv3.*", "model.20.cv3.*", "model.23.cv3.*"])
    after = {n: c.out_channels for n, c in _convs(out.model).items()}
    assert all(after[n] == before[n] for n in [*protected, *DETECT_CONVS])
    assert {m.in_channels for m in (out.model.model[24].m)} == {before[n] for n in protected[1:]}
    assert set(protected).isdisjoint(out.pruned_layers) and len(out.pruned_layers) > 40


def test_plan_lists_consumer_inputs_in_unpruned_coordinates(model: DetectionModel) -> None:
    plan = _pruner(model).plan(0.5)
    stem = next(c for c in plan.cuts if c.root == "model.0.conv")
    # The stem feeds model.1 only; model.13.cv1 reads a concat (model.10 upsampled, then model.6): offsets.
    assert plan.consumer_inputs["model.1.conv"] == stem.removed
    c6 = next(c for c in plan.cuts if c.root == "model.6.cv3.conv")
    assert [i - 128 for i in plan.consumer_inputs["model.13.cv1.conv"] if i >= 128] == c6.removed


def test_pruning_works_under_inference_mode(model: DetectionModel) -> None:
    # Callers often hold inference_mode (benchmarks, evaluation code); the trace must still see a graph.
    params = measure.count_params(model)[0]
    with torch.inference_mode():
        out = apply_pruning(model, "channel", 0.3, [])
    assert out.pruned_layers and measure.count_params(model)[0] < params * 0.7
