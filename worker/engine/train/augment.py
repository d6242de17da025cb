"""Training-time augmentation, written from upstream YOLOv5's documented defaults (hyp.scratch-low.yaml).

Every function takes a numpy ``Generator`` so one sample's augmentation is a pure function of its seed:
a resumed fine-tune replays exactly the epochs an uninterrupted one would have seen.

Boxes here are ``[n, 5]`` float arrays (class, x1, y1, x2, y2) in pixels of the image they go with.

* **letterbox**: the image (long side already ``size``) centred on a ``size x size`` grey (114) canvas;
* **mosaic** (probability 1.0 upstream): four images around a random centre on a ``2 size`` canvas,
  then cropped back to ``size`` by the random affine;
* **random affine**: scale ``1 +/- 0.5`` and translation ``+/- 0.1`` of the size (no rotation, shear or
  perspective in upstream's defaults); boxes follow their corners, are clipped, and boxes that lost
  most of their area or became slivers are dropped (upstream's ``box_candidates`` rule);
* **HSV**: random gains on hue (+/- 0.015), saturation (+/- 0.7), value (+/- 0.4) through lookup tables;
* **horizontal flip** with probability 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True)
class AugmentSettings:
    """Upstream's hyp.scratch-low.yaml augmentation defaults."""

    mosaic: float = 1.0
    translate: float = 0.1
    scale: float = 0.5
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    fliplr: float = 0.5


def letterbox_square(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Centre ``image`` (long side <= ``size``) on a grey square; returns it and the (left, top) border."""
    h, w = image.shape[:2]
    dw, dh = (size - w) / 2, (size - h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    out = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return out, (left, top)


def mosaic(
    images: list[np.ndarray], boxes: list[np.ndarray], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Four images (top-left, top-right, bottom-left, bottom-right of a random centre) on a 2x canvas."""
    canvas = np.full((2 * size, 2 * size, 3), PAD_VALUE, dtype=np.uint8)
    xc, yc = (int(rng.uniform(size / 2, 3 * size / 2)) for _ in range(2))
    placed = []
    for k, (image, box) in enumerate(zip(images, boxes, strict=True)):
        h, w = image.shape[:2]
        # Where the image's corner touching the centre goes, and which part of it fits on the canvas.
        if k == 0:
            x1, y1, x2, y2 = max(xc - w, 0), max(yc - h, 0), xc, yc
            sx1, sy1 = w - (x2 - x1), h - (y2 - y1)
        elif k == 1:
            x1, y1, x2, y2 = xc, max(yc - h, 0), min(xc + w, 2 * size), yc
            sx1, sy1 = 0, h - (y2 - y1)
        elif k == 2:
            x1, y1, x2, y2 = max(xc - w, 0), yc, xc, min(2 * size, yc + h)
            sx1, sy1 = w - (x2 - x1), 0
        else:
            x1, y1, x2, y2 = xc, yc, min(xc + w, 2 * size), min(2 * size, yc + h)
            sx1, sy1 = 0, 0
        canvas[y1:y2, x1:x2] = image[sy1 : sy1 + (y2 - y1), sx1 : sx1 + (x2 - x1)]
        shifted = box.copy()
        shifted[:, [1, 3]] += x1 - sx1
        shifted[:, [2, 4]] += y1 - sy1
        placed.append(shifted)
    merged = np.concatenate(placed, 0) if placed else np.zeros((0, 5), dtype=np.float32)
    np.clip(merged[:, 1:], 0, 2 * size, out=merged[:, 1:])
    return canvas, merged


def box_candidates(
    before: np.ndarray, after: np.ndarray, wh_thr: float = 2, ar_thr: float = 100, area_thr: float = 0.1
) -> np.ndarray:
    """Which transformed boxes to keep: > ``wh_thr`` px wide and high, > ``area_thr`` of their scaled
    area left, aspect ratio < ``ar_thr`` (upstream's rule). Boxes are ``[4, n]`` x1, y1, x2, y2."""
    w1, h1 = before[2] - before[0], before[3] - before[1]
    w2, h2 = after[2] - after[0], after[3] - after[1]
    aspect = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + 1e-16) > area_thr) & (aspect < ar_thr)


def random_affine(
    image: np.ndarray,
    boxes: np.ndarray,
    out_size: int,
    settings: AugmentSettings,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale about the image centre, then translate so the centre lands near the output's centre."""
    h, w = image.shape[:2]
    s = rng.uniform(1 - settings.scale, 1 + settings.scale)
    tx = rng.uniform(0.5 - settings.translate, 0.5 + settings.translate) * out_size
    ty = rng.uniform(0.5 - settings.translate, 0.5 + settings.translate) * out_size
    matrix = np.array([[s, 0.0, tx - s * w / 2], [0.0, s, ty - s * h / 2]])
    out = cv2.warpAffine(image, matrix, dsize=(out_size, out_size), borderValue=(PAD_VALUE,) * 3)
    if len(boxes) == 0:
        return out, boxes
    corners = boxes[:, 1:5] * s
    corners[:, [0, 2]] += matrix[0, 2]
    corners[:, [1, 3]] += matrix[1, 2]
    np.clip(corners, 0, out_size, out=corners)
    keep = box_candidates((boxes[:, 1:5] * s).T, corners.T)
    result = np.concatenate((boxes[keep, :1], corners[keep]), 1).astype(np.float32)
    return out, result


def augment_hsv(image: np.ndarray, settings: AugmentSettings, rng: np.random.Generator) -> None:
    """Random hue/saturation/value gains applied in place through per-channel lookup tables."""
    gains = rng.uniform(-1, 1, 3) * [settings.hsv_h, settings.hsv_s, settings.hsv_v] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=np.float64)
    lut_hue = ((x * gains[0]) % 180).astype(np.uint8)  # OpenCV's 8-bit hue runs 0..179
    lut_sat = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    merged = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(merged, cv2.COLOR_HSV2BGR, dst=image)


def flip_horizontal(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = image.shape[1]
    flipped = boxes.copy()
    flipped[:, 1] = w - boxes[:, 3]
    flipped[:, 3] = w - boxes[:, 1]
    return np.ascontiguousarray(image[:, ::-1]), flipped
