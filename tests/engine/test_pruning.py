"""Pruning methods on the bundled (fused) demo YOLOv5n: sparsity targets, exclusions, structure."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from prunebench.worker.engine import measure
from prunebench.worker.engine.checkpoints import load_model
from prunebench.worker.engine.pruning import METHODS, apply_pruning, prunable_layers
from prunebench.worker.engine.yolo.model import DetectionModel
from tests.support.paths import DEMO_CHECKPOINT

DETECT_CONVS = ["model.24.m.0", "model.24.m.1", "model.24.m.2"]
IMG = 128


@pytest.fixture(scope="module")
def fused() -> DetectionModel:
    return load_model(DEMO_CHECKPOINT).model.fuse()


@pytest.fixture
def model(fused: DetectionModel) -> DetectionModel:
    return copy.deepcopy(fused)


def _convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _predict(model: nn.Module, size: int = IMG) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.rand(2, 3, size, size))[0]


# --- l1_unstructured ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_l1_hits_target_in_every_layer(model: DetectionModel, sparsity: float) -> None:
    out = apply_pruning(model, "l1_unstructured", sparsity, [])
    convs = _convs(out.model)
    assert out.pruned_layers == list(convs)  # every Conv2d, Detect head included (upstream parity)
    for name, conv in convs.items():
        zeros = int((conv.weight == 0).sum())
        assert abs(zeros - round(sparsity * conv.weight.numel())) <= 1, name
    assert out.achieved == pytest.approx(sparsity, abs=1e-3)
    assert out.method == "l1_unstructured" and out.sparsity_target == sparsity and out.definition


def test_l1_matches_upstream_routine_and_keeps_biases(model: DetectionModel) -> None:
    reference = copy.deepcopy(model)
    with torch.no_grad():  # upstream utils.torch_utils.prune, restated: every Conv2d, L1, then remove
        for m in reference.modules():
            if isinstance(m, nn.Conv2d):
                prune.l1_unstructured(m, name="weight", amount=0.3)
                prune.remove(m, "weight")
    biases = {n: c.bias.clone() for n, c in _convs(model).items() if c.bias is not None}
    apply_pruning(model, "l1_unstructured", 0.3)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert all(torch.equal(_convs(model)[n].bias, b) for n, b in biases.items())


# --- global_magnitude -----------------------------------------------------------------------------------


def test_global_hits_overall_target_with_one_threshold(model: DetectionModel) -> None:
    before = {n: c.weight.detach().abs().clone() for n, c in _convs(model).items()}
    out = apply_pruning(model, "global_magnitude", 0.5, [])
    assert measure.conv_sparsity(out.model, out.pruned_layers) == pytest.approx(0.5, abs=0.005)
    after = _convs(out.model)
    pruned = torch.cat([before[n][after[n].weight == 0] for n in before])
    kept = torch.cat([before[n][after[n].weight != 0] for n in before])
    assert pruned.max() <= kept.min()  # one threshold across all layers
    per_layer = [float((after[n].weight == 0).float().mean()) for n in after]
    assert max(per_layer) - min(per_layer) > 0.1  # layers differ, unlike l1_unstructured


# --- channel --------------------------------------------------------------------------------------------


def test_channel_keeps_detect_outputs_and_prediction_layout(model: DetectionModel) -> None:
    # Criteria, allocation, round_to and monotonicity: tests/engine/test_channel_pruning.py.
    dense_shape = _predict(model).shape
    before = {n: c.out_channels for n, c in _convs(model).items()}
    out = apply_pruning(model, "channel", 0.3, [])
    after = {n: c.out_channels for n, c in _convs(out.model).items()}
    assert set(out.pruned_layers) == set(before) - set(DETECT_CONVS)
    assert all(after[n] == before[n] for n in DETECT_CONVS)
    pred = _predict(out.model)
    assert pred.shape == dense_shape and pred.shape[-1] == 5 + 80 and torch.isfinite(pred).all()
    params_before, params_after = out.stats["params_before"], out.stats["params_after"]
    assert params_after == measure.count_params(out.model)[0] < params_before
    assert out.stats["params_ratio"] == pytest.approx(params_after / params_before)


def test_channel_sparsity_zero_changes_nothing(model: DetectionModel) -> None:
    reference = copy.deepcopy(model)
    flags = [p.requires_grad for p in model.parameters()]
    out = apply_pruning(model, "channel", 0.0)
    assert out.pruned_layers == [] and out.stats["params_ratio"] == 1.0
    assert [p.requires_grad for p in model.parameters()] == flags  # fused convs are frozen and stay so
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_channel_on_unfused_model_then_fuse(fused: DetectionModel) -> None:
    unfused = load_model(DEMO_CHECKPOINT).model
    trainable = all(p.requires_grad for p in unfused.parameters())
    out = apply_pruning(unfused, "channel", 0.4)
    pruned_unfused = _predict(out.model)
    assert all(p.requires_grad == trainable for p in out.model.parameters())
    assert measure.count_params(out.model)[0] < measure.count_params(fused)[0] * 0.6
    refused = out.model.fuse()
    torch.manual_seed(0)
    x = torch.rand(1, 3, IMG, IMG)
    with torch.no_grad():
        a = refused(x)[0]
    assert a.shape[-1] == pruned_unfused.shape[-1] == 85 and torch.isfinite(a).all()


def test_channel_exclude_keeps_width(model: DetectionModel) -> None:
    before = {n: c.out_channels for n, c in _convs(model).items()}
    out = apply_pruning(model, "channel", 0.5, ["model.1.*"])
    assert "model.1.conv" not in out.pruned_layers
    assert _convs(out.model)["model.1.conv"].out_channels == before["model.1.conv"]
    assert _convs(out.model)["model.0.conv"].out_channels < before["model.0.conv"]


# --- exclusions and validation --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["l1_unstructured", "global_magnitude"])
def test_exclude_patterns_leave_layers_dense(model: DetectionModel, method: str) -> None:
    out = apply_pruning(model, method, 0.5, ["model.24", "model.0.*"])
    excluded = {*DETECT_CONVS, "model.0.conv"}
    assert excluded.isdisjoint(out.pruned_layers)
    assert set(out.pruned_layers) == set(_convs(model)) - excluded
    for row in measure.layer_report(out.model, set(out.pruned_layers)):
        if row.name in excluded:
            assert row.sparsity < 0.01 and not row.pruned  # the demo has one genuine zero weight
        else:
            assert row.pruned


def test_prunable_layers_matches_names_and_ancestors(model: DetectionModel) -> None:
    every = prunable_layers(model)
    assert len(every) == len(_convs(model))
    assert prunable_layers(model, ["model.24.m.?"]) == [n for n in every if n not in DETECT_CONVS]
    assert prunable_layers(model, ["model.24"]) == [n for n in every if n not in DETECT_CONVS]
    assert prunable_layers(model, ["*"]) == []
    assert prunable_layers(model, "model.24.*") == prunable_layers(model, ["model.24.*"])  # a lone string


@pytest.mark.parametrize(
    ("method", "sparsity", "exclude"),
    [
        ("magnitude", 0.5, []),
        ("l1_unstructured", 1.0, []),
        ("l1_unstructured", -0.1, []),
        ("l1_unstructured", float("nan"), []),
        ("l1_unstructured", 0.5, [""]),
        ("l1_unstructured", 0.5, ["no.such.layer*"]),
        ("channel", 0.5, ["model.99.*"]),
    ],
)
def test_bad_arguments_raise_value_error(
    model: DetectionModel, method: str, sparsity: float, exclude: list[str]
) -> None:
    with pytest.raises(ValueError):
        apply_pruning(model, method, sparsity, exclude)


def test_methods_listed_in_contract() -> None:
    from prunebench.contract import PRUNE_METHODS

    assert tuple(METHODS) == tuple(PRUNE_METHODS)
