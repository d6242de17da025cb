"""Non-maximum suppression with upstream YOLOv5 validation semantics, batched.

Upstream's evaluation numbers depend on these exact choices, so they are kept:

* a candidate needs objectness > ``conf_thres``; class scores are multiplied by objectness;
* multi-label: every class whose score exceeds ``conf_thres`` becomes its own detection
  (single-class models keep their one score);
* per-class suppression by offsetting boxes by ``class * 7680`` and running one batched NMS;
* at most 30000 candidates (highest scores) enter NMS, at most ``max_det`` leave it.

Unlike upstream there is no wall-clock limit: a slow image never silently loses detections.

How a batch is processed (:func:`non_max_suppression`), all on the predictions' device:

1. candidates of every image at once: one objectness mask over ``[B, N]``, one multi-label
   ``nonzero``; rows keep each image's own order, so the arithmetic is the per-image one;
2. one stable sort by score, then a stable sort by image: each image's candidates form one
   contiguous run, best first, ties in the order the per-image code sees them; the 30000 cap is a
   rank within the run;
3. suppression. On CUDA one ``torchvision.ops.nms`` call for the whole batch, images and classes
   separated by offsets in float64 (float32 offsets that large would round the boxes). IoUs are then
   computed in float64, so a pair sitting exactly on the threshold in float32 can be decided the other
   way: on the reference predictions (run through this path on CPU) one box of one image in 120
   differs. CUDA inference is not bit-identical to CPU anyway (fp16); the CPU path below is exact. On CPU one
   call per image, because torchvision's CPU kernel costs (candidates x kept) and a batched call
   multiplies both; each call runs on the best-first prefix needed to keep ``max_det`` boxes
   (greedy NMS decides a box from higher-ranked boxes only, so a prefix's kept list is the full
   list's prefix) and grows the prefix until it keeps ``max_det`` or holds every candidate: torchvision's CPU cost is
   (candidates x kept), and both shrink, about 2-3x less work at COCO-style ``conf_thres`` 0.001.

Equal scores are ordered by candidate order (row, then class), by stable sorts, and the scores
handed to torchvision are ranks (strictly decreasing) so its own sort cannot reorder them. Before
this, ties followed torch's default (unstable) ``argsort`` and torchvision's internal sort, an order
that depended on the sort implementation and the array size; upstream has the same arbitrariness.
Detections are unchanged wherever scores do not tie exactly: equal to upstream's predictions on the
reference data (tests/parity). :func:`nms_image` is the plain one-image form, the definition the
batched path is tested against.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import math
from collections.abc import Callable
from pathlib import Path

import torch

MAX_WH = 7680  # class offset: larger than any box coordinate, so classes never overlap
MAX_NMS = 30000  # candidates passed to torchvision NMS per image

NmsKernel = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


@functools.cache
def torchvision_nms() -> NmsKernel:
    """torchvision's NMS kernel (``torch.ops.torchvision.nms``: what ``torchvision.ops.nms`` calls).

    ``import torchvision`` also builds its model zoo and imports ``torch._dynamo``: 1.5-2.5 s per process
    on a small CPU, for one kernel. The kernel lives in torchvision's compiled extension, which
    torchvision itself registers with ``torch.ops.load_library``; this loads that file alone, and falls
    back to the full import where the file is not found or does not load.
    """
    spec = importlib.util.find_spec("torchvision")
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    library = next(
        (lib for root in roots for pattern in ("_C*.so", "_C*.pyd") for lib in sorted(root.glob(pattern))), None
    )
    if library is not None:
        with contextlib.suppress(OSError, RuntimeError, AttributeError):
            torch.ops.load_library(str(library))
            return torch.ops.torchvision.nms
    import torchvision

    return torchvision.ops.nms


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Centre/size boxes to corners, computed as upstream does (half-size subtracted, then added)."""
    out = torch.empty_like(boxes)
    half_w = boxes[..., 2] / 2
    half_h = boxes[..., 3] / 2
    out[..., 0] = boxes[..., 0] - half_w
    out[..., 1] = boxes[..., 1] - half_h
    out[..., 2] = boxes[..., 0] + half_w
    out[..., 3] = boxes[..., 1] + half_h
    return out


def _candidates(x: torch.Tensor, conf_thres: float) -> torch.Tensor:
    """[n, 6] rows (x1, y1, x2, y2, score, class) from one image's raw rows above the objectness bar."""
    x = x[x[:, 4] > conf_thres]
    if x.shape[0] == 0:
        return x.new_zeros((0, 6))
    scores = x[:, 5:] * x[:, 4:5]  # class confidence = class probability x objectness
    box = xywh_to_xyxy(x[:, :4])
    if scores.shape[1] > 1:
        rows, cls = (scores > conf_thres).nonzero(as_tuple=True)
        return torch.cat((box[rows], scores[rows, cls, None], cls[:, None].to(x.dtype)), 1)
    best, cls = scores.max(1, keepdim=True)
    keep = best.view(-1) > conf_thres
    return torch.cat((box, best, cls.to(x.dtype)), 1)[keep]


def _ranks(det: torch.Tensor) -> torch.Tensor:
    """Scores for torchvision that keep ``det``'s row order (distinct and decreasing: no tie to reorder)."""
    return -torch.arange(det.shape[0], device=det.device, dtype=det.dtype)


def nms_image(x: torch.Tensor, conf_thres: float, iou_thres: float, max_det: int) -> torch.Tensor:
    """Detections [k, 6] (x1, y1, x2, y2, score, class) of one image's prediction rows [N, 5 + nc]."""
    det = _candidates(x, conf_thres)
    if det.shape[0] == 0:
        return det
    det = det[det[:, 4].sort(descending=True, stable=True).indices[:MAX_NMS]]
    offsets = det[:, 5:6] * MAX_WH
    keep = torchvision_nms()(det[:, :4] + offsets, _ranks(det), iou_thres)
    return det[keep[:max_det]]


PREFIX_START = 1024
"""First prefix of a CPU image's ranked candidates tried; later prefixes are sized from its kept ratio."""
PREFIX_MARGIN = 1.25
"""Slack on that estimate, so the second try almost always suffices (each try is a full NMS of its prefix)."""


def _batch_candidates(prediction: torch.Tensor, conf_thres: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [n, 6] (x1, y1, x2, y2, score, class) of all images and each row's image index [n]."""
    image, row = (prediction[..., 4] > conf_thres).nonzero(as_tuple=True)  # image-major, rows ascending
    x = prediction[image, row]
    scores = x[:, 5:] * x[:, 4:5]
    box = xywh_to_xyxy(x[:, :4])
    if scores.shape[1] > 1:
        rows, cls = (scores > conf_thres).nonzero(as_tuple=True)
        det = torch.cat((box[rows], scores[rows, cls, None], cls[:, None].to(x.dtype)), 1)
        return det, image[rows]
    best, cls = scores.max(1, keepdim=True)
    keep = best.view(-1) > conf_thres
    return torch.cat((box, best, cls.to(x.dtype)), 1)[keep], image[keep]


def _rank_by_image(det: torch.Tensor, image: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Order rows image by image, best score first (stable: ties keep their order); the run starts."""
    order = det[:, 4].sort(descending=True, stable=True).indices
    order = order[image[order].sort(stable=True).indices]
    counts = torch.bincount(image, minlength=batch)
    starts = torch.cumsum(counts, 0) - counts
    return order, starts


def _nms_prefix(boxes: torch.Tensor, iou_thres: float, max_det: int) -> torch.Tensor:
    """Indices kept by greedy NMS over ``boxes`` already ranked best first (at most ``max_det``)."""
    n = boxes.shape[0]
    ranks = _ranks(boxes)
    k = min(n, PREFIX_START)
    while True:
        keep = torchvision_nms()(boxes[:k], ranks[:k], iou_thres)
        if keep.numel() >= max_det or k == n:
            return keep[:max_det]
        # Kept boxes thin out down the ranking; size the next prefix from this one's ratio, at least x1.5.
        k = min(n, max(math.ceil(1.5 * k), math.ceil(PREFIX_MARGIN * k * max_det / keep.numel())))


def _suppress_per_image(
    det: torch.Tensor, runs: list[tuple[int, int]], iou_thres: float, max_det: int
) -> list[torch.Tensor]:
    offset_boxes = det[:, :4] + det[:, 5:6] * MAX_WH
    out = []
    for start, end in runs:
        keep = _nms_prefix(offset_boxes[start:end], iou_thres, max_det)
        out.append(det[start:end][keep])
    return out


def _suppress_batch(
    det: torch.Tensor, image: torch.Tensor, runs: list[tuple[int, int]], nc: int, iou_thres: float, max_det: int
) -> list[torch.Tensor]:
    group = image.to(torch.float64) * max(nc, 1) + det[:, 5].to(torch.float64)
    boxes = det[:, :4].to(torch.float64) + group[:, None] * MAX_WH
    keep = torchvision_nms()(boxes, _ranks(boxes), iou_thres)  # ascending rank = image by image, best first
    kept_image = image[keep]
    out = []
    for b, (start, end) in enumerate(runs):
        mine = keep[kept_image == b] if end > start else keep[:0]
        out.append(det[mine[:max_det]])
    return out


def non_max_suppression(
    prediction: torch.Tensor, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300
) -> list[torch.Tensor]:
    """Per-image detections [k, 6] (x1, y1, x2, y2, score, class) of raw predictions [B, N, 5 + nc].

    Equal to ``[nms_image(x, ...) for x in prediction]`` (see the module docstring for how).
    """
    if not 0 <= conf_thres <= 1 or not 0 <= iou_thres <= 1:
        raise ValueError("conf_thres and iou_thres must lie in [0, 1]")
    batch, nc = prediction.shape[0], prediction.shape[2] - 5
    det, image = _batch_candidates(prediction, conf_thres)
    order, starts = _rank_by_image(det, image, batch)
    rank = torch.arange(order.numel(), device=det.device) - starts[image[order]]
    order = order[rank < MAX_NMS]
    det, image = det[order], image[order]
    counts = torch.bincount(image, minlength=batch).tolist()
    ends = list(itertools.accumulate(counts))
    runs = [(end - count, end) for count, end in zip(counts, ends, strict=True)]
    if det.device.type == "cuda":
        return _suppress_batch(det, image, runs, nc, iou_thres, max_det)
    return _suppress_per_image(det, runs, iou_thres, max_det)
