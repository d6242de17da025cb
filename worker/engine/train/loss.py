"""YOLOv5's training loss, written from upstream's documented behaviour (``utils/loss.py`` ComputeLoss).

For predictions ``p`` (one raw map per detection level, ``[B, na, ny, nx, 5 + nc]``, as ``Detect``
returns in training mode) and targets ``[n, 6]`` = (image index, class, cx, cy, w, h) normalised to the
network input, the loss has three parts:

* **box**: ``1 - CIoU`` between each matched prediction and its target, averaged per level;
* **obj**: BCE-with-logits of every anchor's objectness against a target that is the (detached,
  clamped) IoU of the matched prediction (upstream's ``gr = 1.0``), else 0; per-level means weighted
  by the balance 4.0 / 1.0 / 0.4 (P3 / P4 / P5);
* **cls**: BCE-with-logits of the matched predictions' class logits against one-hot targets (only
  when ``nc > 1``).

Matching (upstream's ``build_targets``): a target matches an anchor of a level when its width and
height are both within a factor ``anchor_t`` (4.0) of the anchor's. It is then assigned to its own
grid cell and to the two neighbouring cells nearest its centre (left or right, up or down: offsets of
0.5 cell), unless those lie outside the grid. Predicted boxes are decoded as
``xy = 2 sigmoid - 0.5`` (cell units) and ``wh = (2 sigmoid)^2 * anchor``.

The gains (hyp.scratch-low.yaml: box 0.05, obj 1.0, cls 0.5) are scaled as upstream's train.py scales
them: box x 3/nl, cls x nc/80 x 3/nl, obj x (img_size/640)^2 x 3/nl. The total is
``(box + obj + cls) * batch_size``, the value upstream back-propagates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, cast

import torch
from torch import nn

BALANCE: dict[int, tuple[float, ...]] = {3: (4.0, 1.0, 0.4)}
"""Objectness weight per level (P3, P4, P5); other level counts use ``BALANCE_DEFAULT``."""
BALANCE_DEFAULT = (4.0, 1.0, 0.25, 0.06, 0.02)
NEIGHBOUR = 0.5
"""How close (in cells) a target centre must be to a cell edge for the neighbouring cell to predict it too."""
IOU_EPS = 1e-7


@dataclass(frozen=True)
class LossGains:
    """Loss hyperparameters; defaults are upstream's hyp.scratch-low.yaml (before scaling)."""

    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    anchor_t: float = 4.0
    cls_pw: float = 1.0
    obj_pw: float = 1.0
    label_smoothing: float = 0.0

    def scaled(self, nl: int, nc: int, img_size: int) -> LossGains:
        """The gains as upstream's train.py scales them for ``nl`` levels, ``nc`` classes and ``img_size``."""
        levels = 3 / nl
        return replace(
            self,
            box=self.box * levels,
            cls=self.cls * nc / 80 * levels,
            obj=self.obj * (img_size / 640) ** 2 * levels,
        )


@dataclass
class LossParts:
    """``total`` keeps the graph (back-propagate it); the parts are detached floats' tensors."""

    total: torch.Tensor
    box: torch.Tensor
    obj: torch.Tensor
    cls: torch.Tensor

    def items(self) -> dict[str, float]:
        return {"box": float(self.box), "obj": float(self.obj), "cls": float(self.cls)}


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = IOU_EPS) -> torch.Tensor:
    """Complete IoU of paired boxes ``[n, 4]`` given as (cx, cy, w, h); returns ``[n]``.

    CIoU = IoU - (centre distance^2 / enclosing diagonal^2 + alpha v), with
    v = 4/pi^2 (atan(w2/h2) - atan(w1/h1))^2 and alpha = v / (v - IoU + 1 + eps) treated as a constant
    (Zheng et al., 2020, "Distance-IoU Loss"; as upstream computes it).
    """
    x1, y1, w1, h1 = box1.unbind(-1)
    x2, y2, w2, h2 = box2.unbind(-1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.minimum(b1x2, b2x2) - torch.maximum(b1x1, b2x1)).clamp(0) * (
        torch.minimum(b1y2, b2y2) - torch.maximum(b1y1, b2y1)
    ).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.maximum(b1x2, b2x2) - torch.minimum(b1x1, b2x1)
    ch = torch.maximum(b1y2, b2y2) - torch.minimum(b1y1, b2y1)
    diagonal2 = cw**2 + ch**2 + eps
    distance2 = ((b2x1 + b2x2 - b1x1 - b1x2) ** 2 + (b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (distance2 / diagonal2 + v * alpha)


@dataclass
class _LevelTargets:
    image: torch.Tensor  # [m] long
    anchor: torch.Tensor  # [m] long
    gj: torch.Tensor  # [m] long, grid row
    gi: torch.Tensor  # [m] long, grid column
    box: torch.Tensor  # [m, 4] target (x, y) offset from the cell corner and (w, h), cell units
    anchor_wh: torch.Tensor  # [m, 2] the matched anchor, cell units
    cls: torch.Tensor  # [m] long


class YoloLoss:
    """The loss of one YOLOv5 ``Detect`` head; call it with ``(predictions, targets)``.

    ``anchors`` are the head's anchors in grid units (``[nl, na, 2]``, as ``Detect.anchors`` stores them).
    """

    def __init__(self, anchors: torch.Tensor, nc: int, gains: LossGains) -> None:
        self.anchors = anchors.detach().float()
        self.nl, self.na = int(anchors.shape[0]), int(anchors.shape[1])
        self.nc = nc
        self.gains = gains
        self.balance = BALANCE.get(self.nl, BALANCE_DEFAULT)
        self.positive = 1.0 - 0.5 * gains.label_smoothing  # label-smoothed BCE targets (Müller et al. 2019)
        self.negative = 0.5 * gains.label_smoothing

    @classmethod
    def for_model(cls, model: nn.Module, img_size: int, gains: LossGains | None = None) -> YoloLoss:
        """The loss for a DetectionModel (its last module is the Detect head), gains scaled as upstream."""
        head = cast(Any, model).model[-1]  # a Detect head
        base = gains or LossGains()
        return cls(head.anchors, int(head.nc), base.scaled(int(head.nl), int(head.nc), img_size))

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor) -> LossParts:
        device = preds[0].device
        anchors = self.anchors.to(device)
        targets = targets.to(device=device, dtype=torch.float32)
        bce_obj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([self.gains.obj_pw], device=device))
        bce_cls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([self.gains.cls_pw], device=device))
        lbox = torch.zeros((), device=device)
        lobj = torch.zeros((), device=device)
        lcls = torch.zeros((), device=device)
        for level, raw in enumerate(preds):
            pred = raw.float()  # the loss in float32 even under autocast
            t = self._match(targets, anchors[level], pred.shape)
            tobj = torch.zeros(pred.shape[:4], device=device)
            if t.image.numel():
                chosen = pred[t.image, t.anchor, t.gj, t.gi]
                pxy = chosen[:, :2].sigmoid() * 2 - 0.5
                pwh = (chosen[:, 2:4].sigmoid() * 2) ** 2 * t.anchor_wh
                iou = bbox_ciou(torch.cat((pxy, pwh), 1), t.box)
                lbox = lbox + (1.0 - iou).mean()
                # Objectness target = how well the matched prediction already fits (gr = 1.0). Where two
                # targets share a cell and anchor, the later assignment wins, as in upstream.
                tobj[t.image, t.anchor, t.gj, t.gi] = iou.detach().clamp(0)
                if self.nc > 1:
                    onehot = torch.full_like(chosen[:, 5:], self.negative)
                    onehot[torch.arange(t.cls.numel(), device=device), t.cls] = self.positive
                    lcls = lcls + bce_cls(chosen[:, 5:], onehot)
            lobj = lobj + bce_obj(pred[..., 4], tobj) * self.balance[level]
        lbox = lbox * self.gains.box
        lobj = lobj * self.gains.obj
        lcls = lcls * self.gains.cls
        batch = preds[0].shape[0]
        return LossParts(total=(lbox + lobj + lcls) * batch, box=lbox.detach(), obj=lobj.detach(), cls=lcls.detach())

    def _match(self, targets: torch.Tensor, anchors: torch.Tensor, shape: torch.Size) -> _LevelTargets:
        """Targets assigned to (anchor, cell) pairs of one level, in upstream's order.

        Order matters only where two targets land on the same (image, anchor, cell): the later one sets
        the objectness target. Upstream's order is: own cells first, then left, up, right, down
        neighbours; within each, anchor-major, then target order.
        """
        ny, nx = int(shape[2]), int(shape[3])
        device = targets.device
        grid = torch.tensor([nx, ny], device=device, dtype=torch.float32)
        gxy_all = targets[:, 2:4] * grid
        gwh_all = targets[:, 4:6] * grid

        # Anchor match: [na, nt] bool, width and height ratios both within anchor_t.
        ratio = gwh_all[None] / anchors[:, None]
        fits = torch.max(ratio, 1 / ratio).max(2).values < self.gains.anchor_t
        anchor_idx, target_idx = fits.nonzero(as_tuple=True)  # anchor-major, like upstream's repeat
        gxy = gxy_all[target_idx]
        inverse = grid - gxy
        own = torch.ones_like(target_idx, dtype=torch.bool)
        left, up = ((gxy % 1 < NEIGHBOUR) & (gxy > 1)).T
        right, down = ((inverse % 1 < NEIGHBOUR) & (inverse > 1)).T
        shifts = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device) * NEIGHBOUR
        picks, offsets = [], []
        for use, shift in zip((own, left, up, right, down), shifts, strict=True):
            picks.append(use.nonzero(as_tuple=True)[0])
            offsets.append(shift.expand(int(use.sum()), 2))
        rows = torch.cat(picks)
        offset = torch.cat(offsets)

        image = targets[target_idx[rows], 0].long()
        cls = targets[target_idx[rows], 1].long()
        anchor = anchor_idx[rows]
        centre = gxy[rows]
        cell = (centre - offset).long()
        cell[:, 0].clamp_(0, nx - 1)
        cell[:, 1].clamp_(0, ny - 1)
        return _LevelTargets(
            image=image,
            anchor=anchor,
            gj=cell[:, 1],
            gi=cell[:, 0],
            box=torch.cat((centre - cell, gwh_all[target_idx[rows]]), 1),
            anchor_wh=anchors[anchor],
            cls=cls,
        )
