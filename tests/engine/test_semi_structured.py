"""2:4 semi-structured sparsity: two zeros in every group of four consecutive input weights of a conv."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from torch import nn

from prunebench.contract import JobRequest
from prunebench.worker.engine.checkpoints import load_model
from prunebench.worker.engine.pruning import apply_pruning
from prunebench.worker.engine.pruning.semi_structured import mask_2_4, satisfies_2_4
from prunebench.worker.engine.yolo.model import DetectionModel
from tests.support.paths import DEMO_CHECKPOINT


@pytest.fixture(scope="module")
def unfused() -> DetectionModel:
    return load_model(DEMO_CHECKPOINT).model.float().eval()


def _groups(weight: torch.Tensor) -> torch.Tensor:
    """[C_out, C_in, kh, kw] -> rows of four consecutive input channels at one (output, kernel position)."""
    return weight.permute(0, 2, 3, 1).reshape(-1, 4)


@settings(max_examples=60, deadline=None)
@given(
    c_out=st.integers(1, 6),
    groups=st.integers(1, 4),
    k=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
)
def test_mask_keeps_the_two_largest_of_every_group_along_input_channels(
    c_out: int, groups: int, k: int, seed: int
) -> None:
    weight = torch.randn(c_out, 4 * groups, k, k, generator=torch.Generator().manual_seed(seed))
    mask = mask_2_4(weight)
    assert mask.shape == weight.shape and mask.dtype == torch.bool
    kept = _groups(mask)
    assert (kept.sum(dim=1) == 2).all(), "exactly two of every four survive"
    magnitudes = _groups(weight.abs())
    smallest_kept = torch.where(kept, magnitudes, torch.inf).min(dim=1).values
    largest_dropped = torch.where(~kept, magnitudes, -torch.inf).max(dim=1).values
    assert (smallest_kept >= largest_dropped).all(), "the kept two are the group's largest |w|"
    assert satisfies_2_4(weight * mask)


def test_the_groups_run_along_input_channels_not_kernel_positions() -> None:
    # One output channel, 4 input channels, 1x2 kernel: magnitudes rise along the input channels.
    weight = torch.tensor([[[[1.0, 8.0]], [[2.0, 7.0]], [[3.0, 6.0]], [[4.0, 5.0]]]])
    mask = mask_2_4(weight)
    # Kernel column 0 keeps input channels 2 and 3 (|w| 3, 4); column 1 keeps channels 0 and 1 (8, 7).
    assert mask[0, :, 0, 0].tolist() == [False, False, True, True]
    assert mask[0, :, 0, 1].tolist() == [True, True, False, False]


def test_every_prunable_conv_of_the_demo_model_holds_the_pattern(unfused: DetectionModel) -> None:
    model = copy.deepcopy(unfused).fuse()
    out = apply_pruning(model, "semi_structured_2_4", 0.5)
    convs = {n: m for n, m in out.model.named_modules() if isinstance(m, nn.Conv2d)}
    assert out.pruned_layers and set(out.pruned_layers) | set(out.stats["dense_layers"]) == set(convs)
    for name in out.pruned_layers:
        zeros = (_groups(convs[name].weight) == 0).sum(dim=1)
        assert (zeros == 2).all(), f"{name}: a group without exactly two zeros"
    # The 3-channel stem cannot carry the pattern: left dense, with the reason.
    assert out.stats["dense_layers"] == {"model.0.conv": "3 input channels are not a multiple of 4"}
    assert 0.49 < out.achieved < 0.5


def test_the_pattern_survives_batchnorm_fusion_and_picks_the_same_weights(unfused: DetectionModel) -> None:
    pruned_then_fused = copy.deepcopy(unfused)
    apply_pruning(pruned_then_fused, "semi_structured_2_4", 0.5, ["model.0.*"])
    pruned_then_fused.fuse()
    fused_then_pruned = copy.deepcopy(unfused).fuse()
    apply_pruning(fused_then_pruned, "semi_structured_2_4", 0.5, ["model.0.*"])
    a = {n: m.weight for n, m in pruned_then_fused.named_modules() if isinstance(m, nn.Conv2d)}
    b = {n: m.weight for n, m in fused_then_pruned.named_modules() if isinstance(m, nn.Conv2d)}
    for name in a:
        if name.startswith("model.0."):
            continue
        assert satisfies_2_4(a[name]), name
        assert torch.equal(a[name] == 0, b[name] == 0), f"{name}: different weights chosen"


def test_sparsity_zero_is_the_untouched_dense_baseline(unfused: DetectionModel) -> None:
    model = copy.deepcopy(unfused)
    before = copy.deepcopy(model.state_dict())
    out = apply_pruning(model, "semi_structured_2_4", 0.0)
    assert out.pruned_layers == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_other_sparsities_are_refused_by_the_engine_and_the_contract(unfused: DetectionModel) -> None:
    with pytest.raises(ValueError, match=r"sparsity must be 0\.5"):
        apply_pruning(copy.deepcopy(unfused), "semi_structured_2_4", 0.3)
    with pytest.raises(ValidationError, match=r"its sparsity is 0\.5"):
        JobRequest(checkpoint="c", dataset="d", sparsities=[0.5, 0.7], method="semi_structured_2_4")
    ok = JobRequest(checkpoint="c", dataset="d", sparsity=0.5, method="semi_structured_2_4")
    assert ok.sweep() == [0.0, 0.5]
