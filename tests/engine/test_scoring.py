"""Scoring reproduces upstream val.py: pycocotools stats to 1e-9, its own P/R/AP table to 3 decimals."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunebench.datasets.catalog import DatasetSpec, builtin_datasets
from prunebench.worker.engine.data import DecodedDataset, DecodedImage, GroundTruth, decode_dataset, letterbox
from prunebench.worker.engine.scorers import SCORERS, make_scorer
from prunebench.worker.engine.scoring import (
    COCO_STAT_FIELDS,
    ImageDetections,
    ap_per_class,
    box_iou,
    coco_results,
    interpolated_ap,
    match_detections,
    round_decimals,
    scale_to_original,
    score,
    smooth,
    upstream_metrics,
    xyxy_to_coco_xywh,
)

REFERENCE = Path(__file__).parents[1] / "fixtures" / "reference"
SPARSITIES = ("0.0", "0.2", "0.3")


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((REFERENCE / "metrics.json").read_text())


@pytest.fixture(scope="module")
def shapes() -> DatasetSpec:
    return builtin_datasets()["shapes-val"]


@pytest.fixture(scope="module", params=sorted(SCORERS))
def shapes_scorer(request: pytest.FixtureRequest, shapes: DatasetSpec):
    return make_scorer(request.param, shapes.instances)


@pytest.fixture(scope="module")
def shapes_decoded(shapes: DatasetSpec) -> DecodedDataset:
    return decode_dataset(shapes, 320)


def _upstream_predictions(sparsity: str) -> list[dict]:
    with gzip.open(REFERENCE / f"upstream_predictions_s{sparsity}.json.gz", "rt") as fh:
        return json.load(fh)


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_upstream_predictions_reproduce_pycocotools_stats(sparsity: str, reference: dict, shapes, shapes_scorer):
    """Both scorers give pycocotools' 12 stats on upstream's own predictions (the faster one's parity gate)."""
    image_ids = [int(e["id"]) for e in shapes.instances["images"]]
    shapes_scorer.reset()
    shapes_scorer.process(_upstream_predictions(sparsity))
    stats = shapes_scorer.evaluate(image_ids)
    expected = reference["runs"][sparsity]["metrics"]
    for name, value in zip(COCO_STAT_FIELDS, stats, strict=True):
        assert value == pytest.approx(expected[name], abs=1e-9), name


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_upstream_predictions_reproduce_upstream_table(sparsity: str, reference: dict, shapes, shapes_decoded) -> None:
    class_map = shapes.class_to_category(80)
    to_class = {c: i for i, c in enumerate(class_map)}
    by_image: dict[int, list[list[float]]] = {}
    for p in _upstream_predictions(sparsity):
        x, y, w, h = p["bbox"]
        by_image.setdefault(p["image_id"], []).append([x, y, x + w, y + h, p["score"], to_class[p["category_id"]]])
    native = [
        torch.tensor(by_image.get(im.image_id, []), dtype=torch.float32).view(-1, 6) for im in shapes_decoded.images
    ]
    ours = upstream_metrics(native, shapes_decoded.images, class_map)
    table = reference["runs"][sparsity]["upstream_internal"]
    # val.py prints 3 significant digits; predictions in the file are rounded, so allow the print's rounding.
    assert ours.precision == pytest.approx(table["precision"], abs=6e-4)
    assert ours.recall == pytest.approx(table["recall"], abs=6e-4)
    assert ours.map50 == pytest.approx(table["map50"], abs=6e-4)
    assert ours.map == pytest.approx(table["map"], abs=6e-4)


def test_no_predictions_scores_zero(shapes, shapes_scorer, shapes_decoded) -> None:
    metrics = score([], shapes_decoded.images, shapes_scorer, shapes.class_to_category(80))
    assert metrics.map == 0.0 and metrics.ar100 == 0.0
    assert metrics.precision == 0.0 and metrics.upstream_map == 0.0


def test_coco_results_rounding_and_dropped_classes() -> None:
    det = torch.tensor([[10.12345, 20.5, 30.987654, 40.0, 0.123456789, 0.0], [1.0, 1.0, 2.0, 2.0, 0.9, 1.0]])
    records = coco_results([det], [7], class_map=[3, -1])
    assert len(records) == 1  # class 1 has no category
    rec = records[0]
    assert rec["image_id"] == 7 and rec["category_id"] == 3
    assert rec["score"] == round(float(torch.tensor(0.123456789)), 5)
    assert all(v == round(v, 3) for v in rec["bbox"])
    assert rec["bbox"][2] == pytest.approx(30.987654 - 10.12345, abs=1e-3)


def test_xyxy_to_coco_xywh() -> None:
    assert xyxy_to_coco_xywh(torch.tensor([[1.0, 2.0, 5.0, 10.0]])).tolist() == [[1.0, 2.0, 4.0, 8.0]]


def test_scale_to_original_inverts_letterbox_and_clips() -> None:
    gain, pad = 0.5, (3.0, 16.5)
    original = torch.tensor([[10.0, 20.0, 100.0, 80.0, 0.9, 0.0], [-5.0, 0.0, 400.0, 10.0, 0.5, 1.0]])
    boxed = original.clone()
    boxed[:, [0, 2]] = boxed[:, [0, 2]] * gain + pad[0]
    boxed[:, [1, 3]] = boxed[:, [1, 3]] * gain + pad[1]
    back = scale_to_original(boxed, gain, pad, (100, 200))
    assert back[0, :4].tolist() == pytest.approx([10.0, 20.0, 100.0, 80.0])
    assert back[1, :4].tolist() == pytest.approx([0.0, 0.0, 200.0, 10.0])  # clipped to (h, w) = (100, 200)
    assert back[:, 4:].tolist() == original[:, 4:].tolist()


def test_match_detections_greedy_one_to_one() -> None:
    labels = torch.tensor([[0, 0.0, 0.0, 10.0, 10.0], [1, 20.0, 20.0, 30.0, 30.0]])
    det = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0, 0.9, 0],  # perfect
            [0.0, 0.0, 10.0, 9.0, 0.8, 0],  # good IoU but the label is taken
            [20.0, 20.0, 30.0, 30.0, 0.7, 0],  # right place, wrong class
            [20.0, 20.0, 30.0, 26.0, 0.6, 1],  # IoU 0.6
        ]
    )
    correct = match_detections(det, labels)
    assert correct[0].all()
    assert not correct[1].any() and not correct[2].any()
    assert correct[3].tolist() == [True, True, True] + [False] * 7  # 0.5, 0.55, 0.6


def test_ap_helpers() -> None:
    # Upstream's trapezoid over 101 points dips to the 0-precision sentinel at recall 1: a perfect curve is 0.995.
    assert interpolated_ap(np.array([1.0]), np.array([1.0])) == pytest.approx(0.995)
    assert interpolated_ap(np.array([0.5]), np.array([1.0])) == pytest.approx(0.75)  # linear to the sentinel
    assert smooth(np.ones(1000), 0.1).shape == (1000,)
    tp = np.ones((3, 10), dtype=bool)
    result = ap_per_class(tp, np.array([0.9, 0.8, 0.7]), np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0]))
    assert result.map50 == pytest.approx(0.995) and result.map == pytest.approx(0.995)
    assert result.precision == pytest.approx(1.0) and result.recall == pytest.approx(1.0)


@pytest.mark.parametrize("scorer", sorted(SCORERS))
def test_score_end_to_end_on_perfect_detections(scorer: str) -> None:
    instances = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 100, "width": 200}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [20, 10, 60, 40], "area": 2400, "iscrowd": 0}
        ],
        "categories": [{"id": 5, "name": "thing"}],
    }
    image = DecodedImage(
        1, "a.jpg", np.zeros((64, 128, 3), np.uint8), (100, 200), [GroundTruth(5, (20, 10, 80, 50), False)]
    )
    boxed = letterbox(image.pixels, (96, 128))
    gain = 64 / 100
    box = [20 * gain, 10 * gain + boxed.pad[1], 80 * gain, 50 * gain + boxed.pad[1], 0.9, 0.0]
    dets = [ImageDetections(index=0, boxes=torch.tensor([box]), gain=gain, pad=boxed.pad)]
    metrics = score(dets, [image], make_scorer(scorer, instances), class_map=[5])
    assert metrics.map == pytest.approx(1.0) and metrics.map50 == pytest.approx(1.0)
    assert metrics.upstream_map50 == pytest.approx(0.995)
    assert metrics.precision == pytest.approx(1.0) and metrics.recall == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------------
# The vectorised pieces equal the scalar arithmetic upstream runs, bit for bit


def _same_float(a: float, b: float) -> bool:
    return (a == b and math.copysign(1.0, a) == math.copysign(1.0, b)) or (math.isnan(a) and math.isnan(b))


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=50), st.sampled_from([3, 5]))
def test_round_decimals_is_pythons_round(values: list[float], digits: int) -> None:
    got = round_decimals(np.array(values), digits).tolist()
    assert all(_same_float(g, round(v, digits)) for g, v in zip(got, values, strict=True))


@given(st.integers(-(10**7), 10**7), st.sampled_from([3, 5]), st.integers(-3, 3))
def test_round_decimals_near_halves(k: int, digits: int, ulps: int) -> None:
    """Values a few ulps around k + 1/2 at the rounding digit: where a scaled product could cross the half."""
    value = (k + 0.5) / 10**digits
    for _ in range(abs(ulps)):
        value = math.nextafter(value, math.copysign(math.inf, ulps))
    assert _same_float(float(round_decimals(np.array([value]), digits)[0]), round(value, digits))


def test_round_decimals_float32_boxes() -> None:
    """What coco_results rounds: float32 box coordinates and scores widened to float64."""
    values = torch.rand(20000, dtype=torch.float32).double().numpy() * 1280
    expected = [round(v, 3) for v in values.tolist()]
    assert round_decimals(values, 3).tolist() == expected


def _torch_box_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Upstream's IoU written in torch (its ``box_iou`` arithmetic, in the same order)."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:4], b[None, :, 2:4])
    inter = (rb - lt).clamp(0).prod(2)
    area_a = (a[:, 2:4] - a[:, :2]).prod(1)
    area_b = (b[:, 2:4] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + eps)


@settings(max_examples=50)
@given(st.integers(1, 30), st.integers(1, 60), st.integers(0, 2**31 - 1))
def test_box_iou_equals_torch_bitwise(m: int, n: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(m + n, 2, generator=gen) * 600
    boxes = torch.cat((xy, xy + torch.rand(m + n, 2, generator=gen) * 200), 1)
    a, b = boxes[:m], boxes[m:]
    ours = box_iou(a.numpy(), b.numpy())
    assert ours.dtype == np.float32
    assert np.array_equal(ours, _torch_box_iou(a, b).numpy())
