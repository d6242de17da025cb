"""COCO bbox scoring behind one small evaluator interface (after detectron2's ``DatasetEvaluator``).

A scorer is built once per job from the dataset's instances (the ground-truth index is the costly part
and is shared by every sweep point), then used per point as ``reset()`` -> ``process(records)`` (any
number of times, e.g. per batch) -> ``evaluate(image_ids)``, which returns COCOeval's 12 bbox stats in
pycocotools' order (AP@[.5:.95], AP@.5, AP@.75, AP small/medium/large, AR@1/10/100, AR
small/medium/large). ``records`` are COCO results rows (``image_id``, ``category_id``, ``bbox`` xywh,
``score``) as :func:`prunebench.worker.engine.scoring.coco_results` writes them.

Two implementations, chosen by the job's ``scorer`` (contract ``ScorerName``):

* ``faster_coco_eval`` (default): faster-coco-eval's C++ COCOeval. Its 12 stats equal pycocotools' on
  upstream's reference predictions to 1e-9 or better (``tests/engine/test_scorers.py``); 2-5x faster.
* ``pycocotools``: the reference implementation upstream ``val.py`` calls.

Both evaluate over exactly the given image ids (upstream restricts COCOeval to the evaluated images).
Neither library accepts an empty result list, so a point with no detection at all gets what COCOeval's
rules give for it: 0 for every stat whose area range has ground truth, -1 ("no such objects") for one
that has none (e.g. ``map_small`` / ``ar_small`` on a dataset without small objects), as at any other point.
``process`` takes ownership of the records: the libraries annotate them in place (``area``, ``id``).
"""

from __future__ import annotations

import contextlib
import copy
import io
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from prunebench.contract import SCORER_NAMES, ScorerName

COCO_STATS = 12
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}
"""pycocotools' bbox area ranges (pixels², both ends inclusive)."""
STAT_AREAS = ("all", "all", "all", "small", "medium", "large", "all", "all", "all", "small", "medium", "large")
"""The area range each of the 12 stats is taken over, in pycocotools' order."""


def empty_stats(instances: dict[str, Any], image_ids: Sequence[int]) -> list[float]:
    """COCOeval's 12 stats with no detection: 0 where the range has non-crowd ground truth among
    ``image_ids`` and the categories, -1 where it has none (pycocotools' summarize rule)."""
    wanted = {int(i) for i in image_ids}
    categories = {int(c["id"]) for c in instances.get("categories", [])}
    areas = [
        float(a["area"])
        for a in instances.get("annotations", [])
        if int(a["image_id"]) in wanted and int(a["category_id"]) in categories and not a.get("iscrowd", 0)
    ]
    present = {name: any(lo <= area <= hi for area in areas) for name, (lo, hi) in AREA_RANGES.items()}
    return [0.0 if present[name] else -1.0 for name in STAT_AREAS]


class CocoScorer(ABC):
    """reset / process / evaluate over one sweep point; the ground-truth index lives as long as the scorer."""

    name: ClassVar[ScorerName]

    def __init__(self, instances: dict[str, Any]) -> None:
        self._records: list[dict[str, Any]] = []
        self._instances = instances  # read only: what an evaluation without detections is scored against

    def reset(self) -> None:
        """Forget the records of the previous point."""
        self._records = []

    def process(self, records: Iterable[dict[str, Any]]) -> None:
        """Add COCO results rows (owned by the scorer from now on)."""
        self._records.extend(records)

    def evaluate(self, image_ids: Sequence[int]) -> list[float]:
        """The 12 COCOeval bbox stats over ``image_ids`` (:func:`empty_stats` when no record was processed)."""
        if not self._records:
            return empty_stats(self._instances, image_ids)
        stats = self._stats(self._records, sorted({int(i) for i in image_ids}))
        if len(stats) != COCO_STATS:
            raise RuntimeError(f"{self.name} returned {len(stats)} stats, expected {COCO_STATS}")
        return stats

    @abstractmethod
    def _stats(self, records: list[dict[str, Any]], image_ids: list[int]) -> list[float]: ...


class PycocotoolsScorer(CocoScorer):
    """pycocotools' COCOeval, the implementation upstream ``val.py`` uses."""

    name = "pycocotools"

    def __init__(self, instances: dict[str, Any]) -> None:
        super().__init__(instances)
        from pycocotools.coco import COCO

        self.gt = COCO()
        self.gt.dataset = instances  # pycocotools only reads it; loadRes copies what it needs
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            self.gt.createIndex()

    def _stats(self, records: list[dict[str, Any]], image_ids: list[int]) -> list[float]:
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            dt = self.gt.loadRes(records)
            evaluator = COCOeval(self.gt, dt, "bbox")
            evaluator.params.imgIds = image_ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return [float(v) for v in evaluator.stats]


class FasterCocoEvalScorer(CocoScorer):
    """faster-coco-eval's C++ COCOeval: pycocotools' protocol and numbers, several times faster."""

    name = "faster_coco_eval"

    def __init__(self, instances: dict[str, Any]) -> None:
        super().__init__(instances)
        from faster_coco_eval import COCO

        # Its evaluate() marks ground-truth annotations (`ignore`): give it a copy, not the job's dict.
        self.gt = COCO(copy.deepcopy(instances))

    def _stats(self, records: list[dict[str, Any]], image_ids: list[int]) -> list[float]:
        from faster_coco_eval import COCOeval_faster

        dt = self.gt.loadRes(records)
        evaluator = COCOeval_faster(self.gt, dt, "bbox", print_function=lambda *_: None)
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        return [float(v) for v in evaluator.stats[:COCO_STATS]]


SCORERS: dict[str, type[PycocotoolsScorer] | type[FasterCocoEvalScorer]] = {
    PycocotoolsScorer.name: PycocotoolsScorer,
    FasterCocoEvalScorer.name: FasterCocoEvalScorer,
}
assert set(SCORERS) == set(SCORER_NAMES), "the contract's scorer names and the implementations must agree"


def make_scorer(name: ScorerName, instances: dict[str, Any]) -> CocoScorer:
    """The scorer called ``name`` with its ground-truth index built; ValueError for an unknown name."""
    try:
        return SCORERS[name](instances)
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}: use one of {', '.join(SCORER_NAMES)}") from None
