"""The target-job contract: one sparsity form, budgets, search options, schedules, and the cache key."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from prunebench.contract import JobRequest, TargetSpec
from prunebench.datasets.catalog import load_catalog
from prunebench.jobs.result_cache import cache_key

BASE: dict[str, Any] = {"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val"}
TARGET: dict[str, Any] = {**BASE, "method": "global_magnitude", "target": {"max_map_drop": 0.01}}


def test_a_target_job_has_no_fixed_sweep_and_defaults_to_a_fine_sparsity_search() -> None:
    request = JobRequest(**TARGET)
    assert request.sweep() == [] and request.objective == "sparsity" and request.resolution == 0.01
    assert request.sensitivity_levels == [0.3, 0.5, 0.7, 0.9] and request.screen_images is None


def test_budgets_are_absolute_or_relative_on_map_or_map50() -> None:
    absolute = TargetSpec(max_map_drop=0.01)
    assert absolute.budget == 0.01 and absolute.drop(0.40, 0.38) == pytest.approx(0.02)
    relative = TargetSpec(max_relative_drop=0.05, metric="map50")
    assert relative.budget == 0.05 and relative.drop(0.40, 0.38) == pytest.approx(0.05)
    assert relative.drop(0.0, 0.0) == 0.0 and math.isinf(relative.drop(0.0, -1.0))
    for bad in ({}, {"max_map_drop": 0.01, "max_relative_drop": 0.1}, {"max_map_drop": float("nan")}):
        with pytest.raises(ValidationError):
            TargetSpec(**bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sparsity": 0.2}, "exactly one"),
        ({"sparsities": [0.2]}, "exactly one"),
        ({"method": "semi_structured_2_4"}, "nothing to search"),
        ({"save_models": True}, "keeps no artifacts"),
        ({"export": {}}, "keeps no artifacts"),
        ({"method": "channel", "analysis": "sensitivity"}, "unstructured"),
        ({"resolution": 0.2, "max_search_sparsity": 0.1}, "smaller than"),
        ({"screen_images": 0}, "greater than"),
        ({"sensitivity_levels": []}, "at least 1"),
    ],
)
def test_bad_target_jobs_are_refused_with_the_reason(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        JobRequest(**{**TARGET, **change})


def test_search_options_without_a_target_are_refused() -> None:
    with pytest.raises(ValidationError, match="only apply to a 'target' job"):
        JobRequest(**BASE, sparsity=0.2, objective="size")


def test_a_schedule_goes_with_a_sparsity_and_keeps_its_pattern_order() -> None:
    request = JobRequest(**BASE, sparsity=0.0, layer_sparsities={"model.24.*": 0.9, "model.*": 0.3})
    assert request.sweep() == [0.0, 0.0], "dense, then the scheduled point (its named layers pruned)"
    assert list(request.layer_sparsities or {}) == ["model.24.*", "model.*"]
    assert JobRequest(**BASE, sparsity=0.2, layer_sparsities={"model.0": 0.5}, include_dense=False).sweep() == [0.2]
    for bad in ({"model.0;": 0.5}, {"model.0": 1.0}, {}):
        with pytest.raises(ValidationError):
            JobRequest(**BASE, sparsity=0.2, layer_sparsities=bad)
    with pytest.raises(ValidationError, match="goes with 'sparsity'"):
        JobRequest(**BASE, sparsities=[0.2], layer_sparsities={"model.0": 0.5})


def test_budget_search_options_and_schedules_are_part_of_the_cache_key() -> None:
    val = load_catalog(None)["shapes-val"]

    def key(**fields: Any) -> str:
        return cache_key(JobRequest(**fields), "ckpt", val)

    keys = {
        key(**TARGET),
        key(**{**TARGET, "target": {"max_map_drop": 0.02}}),
        key(**{**TARGET, "target": {"max_relative_drop": 0.01}}),
        key(**TARGET, resolution=0.02),
        key(**TARGET, screen_images=16),
        key(**TARGET, objective="size"),
        key(**TARGET, analysis="sensitivity"),
        key(**BASE, sparsity=0.2, layer_sparsities={"model.0": 0.5, "model.*": 0.1}),
        key(**BASE, sparsity=0.2, layer_sparsities={"model.*": 0.1, "model.0": 0.5}),
        key(**BASE, sparsity=0.2),
    }
    assert len(keys) == 10
    assert key(**TARGET) == key(**TARGET)
