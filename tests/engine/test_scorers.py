"""The scorer switch: faster-coco-eval (default) and pycocotools agree to 1e-9 on upstream's predictions."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest

from prunebench.contract import SCORER_NAMES, JobRequest
from prunebench.datasets.catalog import builtin_datasets
from prunebench.worker.engine.scorers import FasterCocoEvalScorer, PycocotoolsScorer, make_scorer

REFERENCE = Path(__file__).parents[1] / "fixtures" / "reference"
PARITY = 1e-9


def _predictions(sparsity: str) -> list[dict]:
    return json.loads(gzip.decompress((REFERENCE / f"upstream_predictions_s{sparsity}.json.gz").read_bytes()))


@pytest.fixture(scope="module")
def instances() -> dict:
    return builtin_datasets()["shapes-val"].instances


def test_default_scorer_is_faster_coco_eval_and_pycocotools_is_selectable() -> None:
    base = dict(checkpoint="x.pt", dataset="shapes-val", sparsity=0.2)
    assert JobRequest(**base).scorer == "faster_coco_eval"
    assert JobRequest(**base, scorer="pycocotools").scorer == "pycocotools"
    assert set(SCORER_NAMES) == {"faster_coco_eval", "pycocotools"}
    with pytest.raises(ValueError):
        JobRequest(**base, scorer="detectron2")


def test_make_scorer_builds_each_implementation(instances: dict) -> None:
    assert isinstance(make_scorer("faster_coco_eval", instances), FasterCocoEvalScorer)
    assert isinstance(make_scorer("pycocotools", instances), PycocotoolsScorer)
    with pytest.raises(ValueError, match="unknown scorer"):
        make_scorer("nope", instances)  # type: ignore[arg-type]


@pytest.mark.parametrize("sparsity", ["0.0", "0.2", "0.3"])
def test_twelve_stats_equal_on_reference_predictions(instances: dict, sparsity: str) -> None:
    image_ids = [int(e["id"]) for e in instances["images"]]
    predictions = _predictions(sparsity)
    stats = {}
    for name in SCORER_NAMES:
        scorer = make_scorer(name, instances)  # type: ignore[arg-type]
        scorer.process(copy.deepcopy(predictions))
        stats[name] = scorer.evaluate(image_ids)
    assert len(stats["faster_coco_eval"]) == 12
    for fast, reference in zip(stats["faster_coco_eval"], stats["pycocotools"], strict=True):
        assert abs(fast - reference) <= PARITY


def test_a_scorer_is_reusable_across_points_and_leaves_the_dataset_alone(instances: dict) -> None:
    before = copy.deepcopy(instances)
    image_ids = [int(e["id"]) for e in instances["images"]]
    scorer = make_scorer("faster_coco_eval", instances)
    runs = []
    for sparsity in ("0.0", "0.3", "0.0"):
        scorer.reset()
        scorer.process(_predictions(sparsity))
        runs.append(scorer.evaluate(image_ids))
    assert runs[0] == runs[2] and runs[0] != runs[1]
    assert instances == before


def _large_only(instances: dict) -> dict:
    return {**instances, "annotations": [a for a in instances["annotations"] if a["area"] > 96**2]}


@pytest.mark.parametrize("keep", ["all", "large only"])
def test_nothing_to_score_is_what_cocoeval_gives_a_detection_that_matches_nothing(instances: dict, keep: str) -> None:
    """No detection at all: 0 where an area range has ground truth, -1 ("no such objects") where it has
    none, exactly as pycocotools scores a lone false positive (it refuses an empty result list)."""
    truth = instances if keep == "all" else _large_only(instances)
    image_ids = [int(e["id"]) for e in truth["images"]][:10]
    miss = [{"image_id": image_ids[0], "category_id": 1, "bbox": [0.0, 0.0, 0.5, 0.5], "score": 0.01}]
    cocoeval = make_scorer("pycocotools", truth)
    cocoeval.process(miss)
    expected = cocoeval.evaluate(image_ids)
    assert expected.count(-1.0) == (0 if keep == "all" else 4)  # small and medium AP and AR
    for name in SCORER_NAMES:
        assert make_scorer(name, truth).evaluate(image_ids) == expected  # type: ignore[arg-type]


def test_scores_only_the_given_images(instances: dict) -> None:
    """Restricting to a subset changes the numbers as it does in pycocotools (upstream's imgIds)."""
    some = [int(e["id"]) for e in instances["images"]][:30]
    predictions = _predictions("0.0")
    results = []
    for name in SCORER_NAMES:
        scorer = make_scorer(name, instances)  # type: ignore[arg-type]
        scorer.process(copy.deepcopy(predictions))
        results.append(scorer.evaluate(some))
    assert results[0] == pytest.approx(results[1], abs=PARITY)
