"""Validation on a YOLO-format split reports upstream's own numbers.

`shapes-val-yolo` is the bundled 120-image validation split with YOLO label files (the files upstream's
`val.py` read for its `P R mAP50 mAP50-95` line: tests/fixtures/reference/metrics.json ->
`upstream_internal`, dense and after upstream's L1 pruning at 0.3). The same images' COCO JSON gives
the pycocotools reference: the in-memory COCO conversion of the labels must score like it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunebench.contract import JobRequest, JobResult
from prunebench.datasets.catalog import BUILTIN_YOLO, load_catalog
from prunebench.worker.engine.pipeline import run_local
from tests.support.paths import DEMO_CHECKPOINT

REFERENCE = json.loads((Path(__file__).parents[1] / "fixtures" / "reference" / "metrics.json").read_text())
PRINTED = 0.0005  # upstream prints three decimals
COCO_TOLERANCE = 0.002  # labels are the COCO boxes rounded to 6 normalised decimals


@pytest.fixture(scope="module")
def result() -> JobResult:
    spec = load_catalog(None)[BUILTIN_YOLO["val"]]
    request = JobRequest(
        checkpoint=DEMO_CHECKPOINT.name,
        dataset=spec.name,
        sparsity=0.3,
        method="l1_unstructured",
        img_size=320,
        batch_size=32,
        device="cpu",
        half=False,
    )
    return run_local(request, DEMO_CHECKPOINT, spec)


@pytest.mark.parametrize("sparsity", [0.0, 0.3])
def test_upstream_printed_metrics_from_label_files(result: JobResult, sparsity: float) -> None:
    table = REFERENCE["runs"][str(sparsity)]["upstream_internal"]
    run = next(r for r in result.runs if r.sparsity_target == sparsity)
    assert (run.images, run.instances) == (table["images"], table["instances"])
    metrics = run.metrics
    assert metrics.precision == pytest.approx(table["precision"], abs=PRINTED)
    assert metrics.recall == pytest.approx(table["recall"], abs=PRINTED)
    assert metrics.upstream_map50 == pytest.approx(table["map50"], abs=PRINTED)
    assert metrics.upstream_map == pytest.approx(table["map"], abs=PRINTED)


@pytest.mark.parametrize("sparsity", [0.0, 0.3])
def test_pycocotools_stats_of_the_converted_labels(result: JobResult, sparsity: float) -> None:
    expected = REFERENCE["runs"][str(sparsity)]["metrics"]
    got = next(r for r in result.runs if r.sparsity_target == sparsity).metrics.model_dump()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=COCO_TOLERANCE), name


def test_result_names_the_yolo_dataset(result: JobResult) -> None:
    assert result.dataset.format == "yolo" and result.dataset.is_coco is False
    assert result.dataset.images == 120 and result.dataset.annotations == 550
