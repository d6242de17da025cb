"""Non-maximum suppression with upstream YOLOv5 validation semantics.

Upstream's evaluation numbers depend on these exact choices, so they are kept:

* a candidate needs objectness > ``conf_thres``; class scores are multiplied by objectness;
* multi-label: every class whose score exceeds ``conf_thres`` becomes its own detection
  (single-class models keep their one score);
* per-class suppression by offsetting boxes by ``class * 7680`` and running one batched NMS;
* at most 30000 candidates (highest scores) enter NMS, at most ``max_det`` leave it.

Unlike upstream there is no wall-clock limit: a slow image never silently loses detections.
"""

from __future__ import annotations

import torch
import torchvision

MAX_WH = 7680  # class offset: larger than any box coordinate, so classes never overlap
MAX_NMS = 30000  # candidates passed to torchvision NMS per image


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


def nms_image(x: torch.Tensor, conf_thres: float, iou_thres: float, max_det: int) -> torch.Tensor:
    """Detections [k, 6] (x1, y1, x2, y2, score, class) of one image's prediction rows [N, 5 + nc]."""
    det = _candidates(x, conf_thres)
    if det.shape[0] == 0:
        return det
    det = det[det[:, 4].argsort(descending=True)[:MAX_NMS]]
    offsets = det[:, 5:6] * MAX_WH
    keep = torchvision.ops.nms(det[:, :4] + offsets, det[:, 4], iou_thres)
    return det[keep[:max_det]]


def non_max_suppression(
    prediction: torch.Tensor, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300
) -> list[torch.Tensor]:
    """Per-image detections for a batch of raw predictions [B, N, 5 + nc]."""
    if not 0 <= conf_thres <= 1 or not 0 <= iou_thres <= 1:
        raise ValueError("conf_thres and iou_thres must lie in [0, 1]")
    return [nms_image(x, conf_thres, iou_thres, max_det) for x in prediction]
