"""Target jobs in the engine (run_local on the demo): probes, the schedule from sensitivity, its verification."""

from __future__ import annotations

from typing import Any

import pytest

from prunebench.contract import JobRequest, JobResult
from prunebench.datasets.catalog import load_catalog, resolve_dataset
from prunebench.worker.engine.pipeline import run_local
from prunebench.worker.engine.sensitivity import units
from prunebench.worker.engine.target import objective_ratio, removes_more
from tests.support.paths import DEMO_CHECKPOINT, SMALL_JOB

# Only the last two blocks are pruned: a handful of layers keeps the sensitivity pass short.
FEW_LAYERS = ["model.[0-9]", "model.1[0-9]", "model.2[0-2]"]


def run(**fields: Any) -> JobResult:
    body = {**SMALL_JOB, "max_images": 8, "checkpoint": DEMO_CHECKPOINT.name, **fields}
    return run_local(JobRequest(**body), DEMO_CHECKPOINT, resolve_dataset(load_catalog(None), "shapes-val"))


def test_sensitivity_curves_and_a_verified_schedule_compared_with_the_uniform_answer() -> None:
    result = run(
        method="l1_unstructured",
        target={"max_relative_drop": 0.2},
        resolution=0.1,
        exclude=FEW_LAYERS,
        analysis="sensitivity",
        sensitivity_levels=[0.9, 0.5],
        objective="params",
    )
    report, search = result.sensitivity, result.search
    assert report is not None and search is not None
    assert report.levels == [0.5, 0.9] and report.images == 8
    names = [layer.name for layer in report.layers]
    assert names and all(n.startswith(("model.23.", "model.24.")) for n in names)
    assert all(len(layer.drops) == 2 and layer.params > 0 for layer in report.layers)
    probes = report.schedule_probes
    assert probes and all(p.passed == (p.drop <= 0.2 + 1e-12) for p in probes), "every prefix tried is listed"
    uniform = result.runs[search.answer_run]
    assert report.uniform_objective == uniform.nonzero_params
    if report.schedule_run is None:
        assert not report.beats_uniform and "could not beat" in report.note
        return
    scheduled = result.runs[report.schedule_run]
    assert any(p.passed and p.drop == report.schedule_drop for p in probes)
    assert report.schedule_drop is not None and report.schedule_drop <= 0.2 + 1e-12
    dense = result.runs[0].metrics.map
    assert report.schedule_drop == pytest.approx((dense - scheduled.metrics.map) / dense)
    assert report.beats_uniform == (scheduled.nonzero_params < uniform.nonzero_params)
    by_name = {layer.name: layer.sparsity for layer in scheduled.layers}
    for layer, sparsity in report.schedule.items():
        assert by_name[layer] == pytest.approx(sparsity, abs=1e-3)
    again = run(sparsity=0.0, layer_sparsities=report.schedule, include_dense=False, exclude=FEW_LAYERS)
    assert again.runs[0].metrics == scheduled.metrics, "the schedule re-submitted reproduces its point"


def test_block_units_group_a_blocks_layers_under_a_pattern_that_names_them() -> None:
    layers = ["model.2.cv1.conv", "model.2.m.0.cv1.conv", "model.23.cv1.conv", "model.24.m.0"]
    assert units(layers, "block") == {
        "model.2": ["model.2.cv1.conv", "model.2.m.0.cv1.conv"],
        "model.23": ["model.23.cv1.conv"],
        "model.24": ["model.24.m.0"],
    }
    assert units(layers, "layer") == {name: [name] for name in layers}


def test_objective_direction_and_ratios() -> None:
    assert removes_more(0.5, 0.4, "sparsity") and removes_more(100.0, 200.0, "params")
    assert not removes_more(0.4, 0.4, "sparsity")
    assert objective_ratio(0.5, 0.0, "sparsity") == 0.5 and objective_ratio(50.0, 200.0, "gflops") == 0.25
