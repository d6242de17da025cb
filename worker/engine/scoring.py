"""Turn detections into the numbers upstream YOLOv5 ``val.py`` reports.

Two independent scorers, both reproduced from upstream's documented behaviour:

* **COCOeval** (the headline numbers): detections are mapped back to original-image pixels, written as
  COCO results (xywh rounded to 3 decimals, score to 5) and scored by a COCOeval implementation
  (``prunebench.worker.engine.scorers``: faster-coco-eval or pycocotools, equal to 1e-9) restricted to
  the evaluated image ids. These are ``Metrics.map`` .. ``ar_large``.
* **upstream's own AP** (what ``val.py`` prints in its table): greedy IoU matching at ten thresholds, per
  class precision/recall curves, P and R taken at the confidence that maximises the smoothed mean F1,
  and 101-point interpolated AP. These are ``precision``, ``recall``, ``upstream_map50``, ``upstream_map``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from prunebench.contract import Metrics
from prunebench.worker.engine.data import DecodedImage
from prunebench.worker.engine.scorers import CocoScorer

COCO_STAT_FIELDS = (
    "map", "map50", "map75", "map_small", "map_medium", "map_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)  # fmt: skip
IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)  # float32, as upstream compares IoUs
F1_SMOOTH_FRACTION = 0.1
CURVE_POINTS = 1000
EPS = 1e-16


@dataclass
class ImageDetections:
    """One image's detections in network-input pixels, plus how that input was made from the original."""

    index: int  # position in DecodedDataset.images
    boxes: torch.Tensor  # [n, 6] x1, y1, x2, y2, score, class
    gain: float
    pad: tuple[float, float]


# ---------------------------------------------------------------------------------------------------------
# Geometry


def scale_to_original(
    det: torch.Tensor, gain: float, pad: tuple[float, float], orig_hw: tuple[int, int]
) -> torch.Tensor:
    """Boxes [n, >=4] from letterboxed input pixels back to the original image, clipped to it."""
    out = det.clone()
    out[:, [0, 2]] -= pad[0]
    out[:, [1, 3]] -= pad[1]
    out[:, :4] /= gain
    h0, w0 = orig_hw
    out[:, 0].clamp_(0, w0)
    out[:, 1].clamp_(0, h0)
    out[:, 2].clamp_(0, w0)
    out[:, 3].clamp_(0, h0)
    return out


def xyxy_to_coco_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """Corners to COCO's top-left/size, via the centre as upstream computes it (bitwise-identical floats)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    return torch.stack((cx - w / 2, cy - h / 2, w, h), 1)


# ---------------------------------------------------------------------------------------------------------
# COCO results rows (what COCOeval scores)


def round_decimals(values: np.ndarray, digits: int) -> np.ndarray:
    """``values`` (float64) rounded to ``digits`` decimals, bit for bit what Python's ``round(v, digits)`` gives.

    Python rounds the exact binary value correctly (to the nearest decimal, ties to even) and returns the
    double nearest that decimal; ``rint(v * 10**d) / 10**d`` gives the same double unless the product's own
    rounding moved it across a half (relative error 2**-53), so values whose scaled fraction lies within
    1e-6 of .5, or too large to scale exactly, take Python's ``round`` itself. Upstream writes its COCO rows
    with ``round`` (boxes 3 decimals, scores 5); the vector path only makes that cheap.
    """
    values = np.asarray(values, dtype=np.float64)
    scale = 10.0**digits
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN go to round() below
        scaled = values * scale
        fraction = np.abs(scaled - np.trunc(scaled))
        doubtful = ~(np.abs(fraction - 0.5) > 1e-6) | ~(np.abs(scaled) < 2.0**50)  # NaN and inf are doubtful too
    out = np.rint(scaled) / scale
    if doubtful.any():
        out[doubtful] = [round(float(v), digits) for v in values[doubtful]]
    return out


BOX_DECIMALS = 3
SCORE_DECIMALS = 5
"""The precision upstream ``val.py`` writes COCO results rows with (``save_one_json``)."""


def coco_results(native: Sequence[torch.Tensor], image_ids: Sequence[int], class_map: Sequence[int]) -> list[dict]:
    """COCO results records; detections of classes without a dataset category are dropped.

    ``native`` holds each image's [n, 6] detections in original pixels (x1, y1, x2, y2, score, class);
    ``class_map[c]`` is the category id of model class ``c`` (< 0: none). Rows are upstream's: bbox xywh
    rounded to 3 decimals, score to 5.
    """
    categories = np.asarray(class_map, dtype=np.int64)
    records: list[dict[str, Any]] = []
    for det, image_id in zip(native, image_ids, strict=True):
        if det.shape[0] == 0:
            continue
        det = det.float().cpu()
        category = categories[det[:, 5].numpy().astype(np.int64)]  # int(): classes are whole numbers
        keep = category >= 0
        if not keep.any():
            continue
        boxes = round_decimals(xyxy_to_coco_xywh(det[:, :4]).double().numpy()[keep], BOX_DECIMALS).tolist()
        scores = round_decimals(det[:, 4].double().numpy()[keep], SCORE_DECIMALS).tolist()
        iid = int(image_id)
        records.extend(
            {"image_id": iid, "category_id": c, "bbox": b, "score": s}
            for c, b, s in zip(category[keep].tolist(), boxes, scores, strict=True)
        )
    return records


# ---------------------------------------------------------------------------------------------------------
# Upstream's own metrics


def box_iou(a: np.ndarray, b: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of float32 corner boxes [n, 4], with upstream's epsilon in the union.

    In NumPy float32, each operation in upstream's order: the same floats torch computes (these are
    element-wise IEEE operations), at a fraction of torch's per-call cost on the small per-image arrays.
    """
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    wh = np.maximum(rb - lt, np.float32(0))
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter + np.float32(eps))


def match_detections(det: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor = IOU_THRESHOLDS) -> np.ndarray:
    """[n_det, n_thr] bool: is each detection a true positive at each IoU threshold?

    Per threshold, same-class (label, detection) pairs above it are taken best-IoU first, each detection
    and each label used at most once (upstream's greedy matching, not COCO's score-ordered one).
    ``det`` is [n, 6] (x1, y1, x2, y2, score, class), ``labels`` [m, 5] (class, x1, y1, x2, y2), float32.
    """
    correct = np.zeros((det.shape[0], thresholds.numel()), dtype=bool)
    if det.shape[0] == 0 or labels.shape[0] == 0:
        return correct
    d = det.detach().cpu().float().numpy()
    lab = labels.detach().cpu().float().numpy()
    iou = box_iou(lab[:, 1:5], d[:, :4])
    candidates = (lab[:, 0:1] == d[:, 5]) & (iou >= thresholds.numpy().min())
    for t, threshold in enumerate(thresholds.numpy()):
        li, di = np.nonzero(candidates & (iou >= threshold))
        if li.size == 0:
            continue
        pairs = np.stack((li, di, iou[li, di]), 1)
        if pairs.shape[0] > 1:
            pairs = pairs[pairs[:, 2].argsort()[::-1]]  # best IoU first
            pairs = pairs[np.unique(pairs[:, 1], return_index=True)[1]]  # one label per detection
            pairs = pairs[np.unique(pairs[:, 0], return_index=True)[1]]  # one detection per label
        correct[pairs[:, 1].astype(int), t] = True
    return correct


def smooth(values: np.ndarray, fraction: float) -> np.ndarray:
    """Box filter over ``fraction`` of the curve, edges padded with the end values."""
    width = round(len(values) * fraction * 2) // 2 + 1  # odd
    padding = np.ones(width // 2)
    padded = np.concatenate((padding * values[0], values, padding * values[-1]))
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def interpolated_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """101-point interpolated area under the precision envelope (COCO-style)."""
    rec = np.concatenate(([0.0], recall, [1.0]))
    prec = np.concatenate(([1.0], precision, [0.0]))
    envelope = np.flip(np.maximum.accumulate(np.flip(prec)))
    grid = np.linspace(0, 1, 101)
    return float(np.trapezoid(np.interp(grid, rec, envelope), grid))


@dataclass(frozen=True)
class UpstreamMetrics:
    precision: float
    recall: float
    map50: float
    map: float


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray) -> UpstreamMetrics:
    """Upstream's class-mean P, R (at the best smoothed-F1 confidence), mAP@.5 and mAP@.5:.95."""
    order = np.argsort(-conf)
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes, n_labels = np.unique(target_cls, return_counts=True)
    grid = np.linspace(0, 1, CURVE_POINTS)
    ap = np.zeros((len(classes), tp.shape[1]))
    p_curve = np.zeros((len(classes), CURVE_POINTS))
    r_curve = np.zeros((len(classes), CURVE_POINTS))
    for ci, cls in enumerate(classes):
        mine = pred_cls == cls
        if mine.sum() == 0 or n_labels[ci] == 0:
            continue
        tpc = tp[mine].cumsum(0)
        fpc = (1 - tp[mine]).cumsum(0)
        recall = tpc / (n_labels[ci] + EPS)
        precision = tpc / (tpc + fpc)
        # Curves against confidence: xp must increase for np.interp, hence the negations.
        r_curve[ci] = np.interp(-grid, -conf[mine], recall[:, 0], left=0)
        p_curve[ci] = np.interp(-grid, -conf[mine], precision[:, 0], left=1)
        for j in range(tp.shape[1]):
            ap[ci, j] = interpolated_ap(recall[:, j], precision[:, j])
    f1 = 2 * p_curve * r_curve / (p_curve + r_curve + EPS)
    best = smooth(f1.mean(0), F1_SMOOTH_FRACTION).argmax()
    return UpstreamMetrics(
        precision=float(p_curve[:, best].mean()),
        recall=float(r_curve[:, best].mean()),
        map50=float(ap[:, 0].mean()),
        map=float(ap.mean(1).mean()),
    )


def _labels_of(image: DecodedImage, category_to_class: dict[int, int], gain: float) -> torch.Tensor:
    """[m, 5] (class, x1, y1, x2, y2) labels in original pixels, as upstream's loader distorts them.

    Upstream keeps labels normalised to the original size, scales them by the *resized* width and
    height (each rounded up separately), then maps them back with the single height-derived gain used
    for predictions. So x is stretched by ``(w_resized / w0) / gain`` (slightly off 1); replicating that
    makes P, R and AP match upstream's table instead of differing in the third decimal.
    """
    h0, w0 = image.orig_hw
    h, w = image.resized_hw
    sx, sy = w / w0 * (gain * h0 / h), h / h0 * (gain * h0 / h)  # letterbox factor rides on the resize
    rows = [
        (category_to_class[t.category_id], t.box[0] * sx, t.box[1] * sy, t.box[2] * sx, t.box[3] * sy)
        for t in image.truths
        if not t.iscrowd and t.category_id in category_to_class
    ]
    labels = torch.tensor(rows, dtype=torch.float32).view(-1, 5)
    labels[:, 1:] = scale_to_original(labels[:, 1:], gain, (0.0, 0.0), image.orig_hw)
    return labels


def upstream_metrics(
    native: Sequence[torch.Tensor],
    images: Sequence[DecodedImage],
    class_map: Sequence[int],
    gains: Sequence[float] | None = None,
) -> UpstreamMetrics:
    """Upstream's table metrics over all images (images with neither labels nor detections add nothing).

    ``gains`` are the original -> input scale factors used for each image (default: the resize's h/h0).
    """
    category_to_class = {cat: cls for cls, cat in enumerate(class_map) if cat >= 0}
    if gains is None:
        gains = [im.resized_hw[0] / im.orig_hw[0] for im in images]
    correct, conf, pred_cls, target_cls = [], [], [], []
    for det, image, gain in zip(native, images, gains, strict=True):
        labels = _labels_of(image, category_to_class, gain)
        det = det.float().cpu()
        correct.append(match_detections(det, labels))
        conf.append(det[:, 4].numpy())
        pred_cls.append(det[:, 5].numpy())
        target_cls.append(labels[:, 0].numpy())
    tp = np.concatenate(correct, 0) if correct else np.zeros((0, 10), dtype=bool)
    if not tp.any():
        return UpstreamMetrics(0.0, 0.0, 0.0, 0.0)  # upstream reports zeros when nothing matched
    return ap_per_class(tp, np.concatenate(conf), np.concatenate(pred_cls), np.concatenate(target_cls))


# ---------------------------------------------------------------------------------------------------------
# Everything together


def native_detections(dets: Sequence[ImageDetections], images: Sequence[DecodedImage]) -> list[torch.Tensor]:
    """Each image's detections in original pixels (float32, CPU), ordered like ``images``."""
    native: list[torch.Tensor] = [torch.zeros((0, 6)) for _ in images]
    for item in dets:
        boxes = item.boxes.float().cpu()
        native[item.index] = scale_to_original(boxes, item.gain, item.pad, images[item.index].orig_hw)
    return native


def score(
    dets: Sequence[ImageDetections], images: Sequence[DecodedImage], scorer: CocoScorer, class_map: Sequence[int]
) -> Metrics:
    """All metrics of one evaluation pass; ``scorer`` is the job's COCOeval (reset here for this pass)."""
    native = native_detections(dets, images)
    gains = [im.resized_hw[0] / im.orig_hw[0] for im in images]
    for item in dets:
        gains[item.index] = item.gain
    image_ids = [im.image_id for im in images]
    scorer.reset()
    scorer.process(coco_results(native, image_ids, class_map))
    stats = scorer.evaluate(image_ids)
    ours = upstream_metrics(native, images, class_map, gains)
    return Metrics(
        **dict(zip(COCO_STAT_FIELDS, stats, strict=True)),
        precision=ours.precision,
        recall=ours.recall,
        upstream_map50=ours.map50,
        upstream_map=ours.map,
    )
