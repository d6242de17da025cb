"""Training samples from any catalog dataset (COCO JSON or a YOLO-format split).

Each image is read once with OpenCV and resized so its long side is ``img_size`` (sizes rounded up,
INTER_LINEAR, as upstream's training loader does), then kept in memory when the whole split fits in
``cache_bytes``. A sample is made by ``TrainSet.sample(index, epoch)``: mosaic or letterbox, random
affine, HSV and flip (see ``augment``), with a random generator seeded by (seed, epoch, index), so
any epoch can be replayed exactly, in any order and after a resume.

Targets come out as upstream's loader gives them: ``[n, 6]`` rows (image index in the batch, class,
cx, cy, w, h) normalised to the ``img_size x img_size`` network input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from prunebench.datasets.catalog import DatasetSpec
from prunebench.worker.engine.data import DatasetError, read_image
from prunebench.worker.engine.train import augment
from prunebench.worker.engine.train.augment import AugmentSettings

DEFAULT_CACHE_BYTES = 4 << 30
"""Decoded images are kept in memory up to this total (upstream's ``--cache ram``), else re-read."""
MIN_BOX_PIXELS = 1e-3


@dataclass(frozen=True)
class TrainItem:
    path: Path
    boxes: np.ndarray  # [n, 5] float32: class, x1, y1, x2, y2 normalised to the image (0..1)


def _items(spec: DatasetSpec, class_of: dict[int, int], max_images: int | None) -> list[TrainItem]:
    """Every image of the split (file-name order) with its boxes as classes of the model."""
    data = spec.instances
    entries = sorted(data["images"], key=lambda e: str(e["file_name"]))
    if max_images is not None:
        entries = entries[:max_images]
    by_image: dict[int, list[list[float]]] = {}
    sizes = {int(e["id"]): (float(e.get("width") or 0), float(e.get("height") or 0)) for e in entries}
    for ann in data.get("annotations", []):
        image_id, category = int(ann["image_id"]), int(ann["category_id"])
        if ann.get("iscrowd") or category not in class_of or image_id not in sizes:
            continue
        w0, h0 = sizes[image_id]
        if w0 <= 0 or h0 <= 0:
            raise DatasetError(f"dataset {spec.name!r}: image {image_id} has no width/height in its annotations")
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w <= MIN_BOX_PIXELS or h <= MIN_BOX_PIXELS:
            continue
        by_image.setdefault(image_id, []).append([class_of[category], x / w0, y / h0, (x + w) / w0, (y + h) / h0])
    items = []
    for entry in entries:
        rows = by_image.get(int(entry["id"]), [])
        boxes = np.array(rows, dtype=np.float32).reshape(-1, 5)
        np.clip(boxes[:, 1:], 0.0, 1.0, out=boxes[:, 1:])
        items.append(TrainItem(spec.images_dir / str(entry["file_name"]), boxes))
    if not items:
        raise DatasetError(f"dataset {spec.name!r} has no images to train on")
    return items


def load_resized(path: Path, img_size: int) -> np.ndarray:
    """The image (BGR uint8) with its long side ``img_size``, sizes rounded up, INTER_LINEAR."""
    image = read_image(path)
    h0, w0 = image.shape[:2]
    r = img_size / max(h0, w0)
    if r != 1:
        image = cv2.resize(image, (math.ceil(w0 * r), math.ceil(h0 * r)), interpolation=cv2.INTER_LINEAR)
    return image


class TrainSet:
    """The augmented training samples of one split for one image size."""

    def __init__(
        self,
        spec: DatasetSpec,
        class_of: dict[int, int],
        img_size: int,
        settings: AugmentSettings,
        *,
        seed: int = 0,
        max_images: int | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.name = spec.name
        self.items = _items(spec, class_of, max_images)
        self.img_size = img_size
        self.settings = settings
        self.seed = seed
        self.instances = sum(len(i.boxes) for i in self.items)
        self._cache: list[np.ndarray] | None = None
        if len(self.items) * img_size * img_size * 3 <= cache_bytes:
            self._cache = self._decode_all(on_progress)

    def __len__(self) -> int:
        return len(self.items)

    def _decode_all(self, on_progress: Callable[[int, int], None] | None) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        # OpenCV releases the GIL while decoding and resizing, so threads use every core.
        with ThreadPoolExecutor(max_workers=8) as pool:
            for done, image in enumerate(pool.map(lambda i: load_resized(i.path, self.img_size), self.items), 1):
                out.append(image)
                if on_progress is not None:
                    on_progress(done, len(self.items))
        return out

    def image(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(resized image, its boxes in that image's pixels)."""
        image = self._cache[index] if self._cache is not None else load_resized(self.items[index].path, self.img_size)
        h, w = image.shape[:2]
        boxes = self.items[index].boxes.copy()
        boxes[:, [1, 3]] *= w
        boxes[:, [2, 4]] *= h
        return image, boxes

    def rng(self, index: int, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, index])

    def sample(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """One augmented sample: CHW RGB uint8 ``[3, S, S]`` and its boxes ``[n, 5]`` (class, cx, cy, w, h),
        normalised to S."""
        rng = self.rng(index, epoch)
        size, settings = self.img_size, self.settings
        if rng.random() < settings.mosaic:
            others = rng.integers(0, len(self.items), 3).tolist()
            parts = [self.image(i) for i in [index, *others]]
            order = rng.permutation(4)
            canvas, boxes = augment.mosaic([parts[k][0] for k in order], [parts[k][1] for k in order], size, rng)
        else:
            image, boxes = self.image(index)
            canvas, (left, top) = augment.letterbox_square(image, size)
            boxes[:, [1, 3]] += left
            boxes[:, [2, 4]] += top
        out, boxes = augment.random_affine(canvas, boxes, size, settings, rng)
        augment.augment_hsv(out, settings, rng)
        if rng.random() < settings.fliplr:
            out, boxes = augment.flip_horizontal(out, boxes)
        return np.ascontiguousarray(out.transpose(2, 0, 1)[::-1]), to_normalised_xywh(boxes, size)


def to_normalised_xywh(boxes: np.ndarray, size: int) -> np.ndarray:
    """``[n, 5]`` class + pixel corners -> class + normalised centre and size."""
    out = np.zeros_like(boxes, dtype=np.float32)
    out[:, 0] = boxes[:, 0]
    out[:, 1] = (boxes[:, 1] + boxes[:, 3]) / 2 / size
    out[:, 2] = (boxes[:, 2] + boxes[:, 4]) / 2 / size
    out[:, 3] = (boxes[:, 3] - boxes[:, 1]) / size
    out[:, 4] = (boxes[:, 4] - boxes[:, 2]) / size
    return out


def collate(samples: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch: images ``[B, 3, S, S]`` uint8 and targets ``[n, 6]`` (image index, class, cx, cy, w, h)."""
    images = torch.from_numpy(np.stack([s[0] for s in samples]))
    rows = [
        torch.cat((torch.full((len(boxes), 1), float(i)), torch.from_numpy(boxes)), 1)
        for i, (_, boxes) in enumerate(samples)
    ]
    return images, torch.cat(rows, 0) if rows else torch.zeros((0, 6))
