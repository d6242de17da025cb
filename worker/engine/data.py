"""Decode a COCO-format dataset once per job and batch it the way upstream YOLOv5 ``val.py`` does.

Every sparsity point of a job is evaluated on the same images, so decoding (the slow, CPU-bound part)
happens once: each image is read with OpenCV and resized so its long side is ``img_size``, into a
memory-mapped file (``decode_cache``: shared by the jobs of one host, or private to the job). What stays
per evaluation is cheap: grouping images into rectangular batches and letterboxing them to the batch
shape. Both follow upstream's validation semantics (facts of its behaviour, reimplemented here):

* resize: new size ``(ceil(w0 * r), ceil(h0 * r))`` with ``r = img_size / max(h0, w0)``; INTER_AREA
  when shrinking, INTER_LINEAR when enlarging;
* rect batching: images sorted by aspect ratio h/w, consecutive runs of ``batch_size`` share one
  padded shape, a multiple of the model stride;
* letterbox: centred, never upscaled, grey (114) border with the odd pixel split by ``round(d ± 0.1)``;
* network size: an ``img_size`` that is not a multiple of the model's largest stride (at least 32) is
  rounded up to one (upstream's ``check_img_size``: 300 -> 320 at stride 32, 352 -> 384 at stride 64);
* corrupt images are skipped with a warning, as upstream's dataset check skips them: Pillow cannot
  read or verify the file, or a JPEG lacks its end-of-image marker (truncated; OpenCV would decode it
  partially with a warning on stderr only). Upstream rewrites such a JPEG in place; files here are
  never modified, so it is skipped.

Every image whose decoded size differs from the ``width``/``height`` its JSON entry gives (an
EXIF-rotated photo annotated in the stored frame, a resized copy) is named in a warning: its boxes
are then in another frame than the image and its score is not meaningful.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from prunebench.datasets.catalog import DatasetSpec
from prunebench.worker.engine.decode_cache import DecodeCache, decode_private, stored_size

PAD_VALUE = 114  # letterbox border grey, as upstream
RECT_PAD = 0.5  # val.py's rect padding, in units of stride
MIN_GRID = 32  # upstream never uses a grid smaller than 32 for batch shapes


class DatasetError(ValueError):
    """The dataset cannot be evaluated (missing or unreadable images, empty split); the message says why."""


@dataclass(frozen=True)
class GroundTruth:
    """One COCO annotation of an image, box in original-image pixels (x1, y1, x2, y2)."""

    category_id: int
    box: tuple[float, float, float, float]
    iscrowd: bool


@dataclass
class DecodedImage:
    image_id: int
    file_name: str
    pixels: np.ndarray  # HWC, BGR, uint8, long side == img_size (a view of the memory-mapped decode file)
    orig_hw: tuple[int, int]  # (h0, w0) as decoded
    truths: list[GroundTruth] = field(default_factory=list)

    @property
    def resized_hw(self) -> tuple[int, int]:
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


@dataclass
class DecodedDataset:
    """All images of one split, decoded and resized, in upstream's evaluation order (by aspect ratio)."""

    name: str
    img_size: int
    images: list[DecodedImage]
    warnings: list[str] = field(default_factory=list)  # skipped files, size mismatches (one sentence each)

    @property
    def image_ids(self) -> list[int]:
        return [im.image_id for im in self.images]

    @property
    def instances(self) -> int:
        return sum(len(im.truths) for im in self.images)


@dataclass(frozen=True)
class Batch:
    indices: list[int]  # positions in DecodedDataset.images
    shape: tuple[int, int]  # letterbox target (h, w), a multiple of the stride


@dataclass(frozen=True)
class Letterboxed:
    pixels: np.ndarray  # HWC BGR uint8 of the batch shape
    gain: float  # original -> network-input scale factor
    pad: tuple[float, float]  # (dw, dh): left/top border as the float halves upstream records


# ---------------------------------------------------------------------------------------------------------
# Decoding


def resize_long_side(image: np.ndarray, img_size: int) -> np.ndarray:
    """Resize so the long side is ``img_size``; sizes round up, as upstream's loader does."""
    h0, w0 = image.shape[:2]
    r = img_size / max(h0, w0)
    if r == 1:
        return image
    # INTER_AREA avoids aliasing when shrinking; upstream uses it for validation downscales only.
    interp = cv2.INTER_LINEAR if r > 1 else cv2.INTER_AREA
    return cv2.resize(image, (math.ceil(w0 * r), math.ceil(h0 * r)), interpolation=interp)


def network_size(img_size: int, max_stride: float) -> int:
    """``img_size`` rounded up to a multiple of ``max(max_stride, 32)`` (upstream's ``check_img_size``)."""
    grid = grid_stride(max_stride)
    return math.ceil(img_size / grid) * grid


JPEG_EOI = b"\xff\xd9"


def image_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable image (None: it is): unreadable by Pillow, fails its verify, or a
    JPEG without its end-of-image marker. Raises DatasetError when the file does not exist."""
    from PIL import Image  # workers only; lazily, like the YOLO converter's header reads

    if not path.is_file():
        raise DatasetError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            kind = image.format
            image.verify()
        if kind in ("JPEG", "MPO"):
            with path.open("rb") as fh:
                fh.seek(-len(JPEG_EOI), os.SEEK_END)
                if fh.read() != JPEG_EOI:
                    return "truncated JPEG (no end-of-image marker)"
    except Exception as exc:  # Pillow raises many kinds (OSError, SyntaxError, ValueError, ...)
        return f"corrupt ({type(exc).__name__}: {str(exc)[:80]})"
    return None


def _usable(entries: list[dict[str, Any]], paths: list[Path], warnings: list[str], workers: int) -> list[int]:
    """Positions of the images to evaluate; a warning names the skipped ones."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # file reads: threads overlap the I/O
        problems = list(enumerate(pool.map(image_problem, paths)))
    skipped = [(paths[i].name, why) for i, why in problems if why is not None]
    if skipped:
        shown = "; ".join(f"{name}: {why}" for name, why in skipped[:SHOWN_FILES])
        more = f"; and {len(skipped) - SHOWN_FILES} more" if len(skipped) > SHOWN_FILES else ""
        warnings.append(f"skipped {len(skipped)} corrupt image(s), not evaluated: {shown}{more}")
    kept = [i for i, why in problems if why is None]
    if not kept:
        raise DatasetError(f"no usable image: all {len(entries)} are corrupt")
    return kept


def _size_mismatches(images: Sequence[DecodedImage], entries: Sequence[dict[str, Any]]) -> list[str]:
    """One warning naming the images whose decoded (h, w) is not the JSON's (height, width)."""
    found = []
    for image, entry in zip(images, entries, strict=True):
        stated = (int(entry.get("height", 0)), int(entry.get("width", 0)))
        if stated != image.orig_hw:
            rotated = " (EXIF rotation?)" if stated == image.orig_hw[::-1] else ""
            found.append(
                f"{image.file_name}: JSON {stated[1]}x{stated[0]}, decoded {image.orig_hw[1]}x{image.orig_hw[0]}"
                + rotated
            )
    if not found:
        return []
    more = f"; and {len(found) - SHOWN_FILES} more" if len(found) > SHOWN_FILES else ""
    return [
        f"{len(found)} image(s) decode at another size than their width/height in the annotations, so their "
        f"boxes are likely in another frame and their scores wrong: {'; '.join(found[:SHOWN_FILES])}{more}"
    ]


SHOWN_FILES = 10
"""How many files a warning names."""


def read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"image not found: {path}")
    # cv2.imread applies EXIF orientation, like upstream (which also reads with cv2.imread).
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot decode image: {path}")
    return image


def _truths_by_image(instances: dict[str, Any]) -> dict[int, list[GroundTruth]]:
    found: dict[int, list[GroundTruth]] = {}
    for ann in instances.get("annotations", []):
        x, y, w, h = (float(v) for v in ann["bbox"])
        truth = GroundTruth(int(ann["category_id"]), (x, y, x + w, y + h), bool(ann.get("iscrowd", 0)))
        found.setdefault(int(ann["image_id"]), []).append(truth)
    return found


def _select_images(instances: dict[str, Any], max_images: int | None) -> list[dict[str, Any]]:
    """Every image id of the split (annotated or not), ordered by file name as upstream lists files."""
    entries = sorted(instances["images"], key=lambda e: str(e["file_name"]))
    if max_images is not None:
        entries = entries[:max_images]
    if not entries:
        raise DatasetError("dataset has no images")
    return entries


def aspect_order(hw: Sequence[tuple[int, int]]) -> list[int]:
    """Indices sorted by aspect ratio h/w with numpy's default sort, so ties break as upstream's do."""
    ratios = np.array([h / w for h, w in hw], dtype=np.float64)
    return [int(i) for i in ratios.argsort()]


def decode_dataset(
    spec: DatasetSpec,
    img_size: int,
    max_images: int | None = None,
    workers: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    cache: DecodeCache | None = None,
) -> DecodedDataset:
    """Every evaluated image decoded and resized once; raise DatasetError on any bad file.

    Pixels live in a memory-mapped file (``decode_cache``): the host's shared cache when ``cache`` is
    given, else a job-private file; either way they are not held in this process's memory.
    """
    entries = _select_images(spec.instances, max_images)
    truths = _truths_by_image(spec.instances)
    paths = [spec.images_dir / str(e["file_name"]) for e in entries]
    warnings: list[str] = []
    kept = _usable(entries, paths, warnings, workers)
    entries, paths = [entries[i] for i in kept], [paths[i] for i in kept]

    def load(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        image = read_image(path)
        return resize_long_side(image, img_size), (int(image.shape[0]), int(image.shape[1]))

    if cache is not None:
        hint = stored_size(entries, img_size) or None
        split = cache.open(paths, img_size, load, workers, on_progress, size_hint=hint)
    else:
        split = decode_private(paths, load, workers, on_progress)

    images = [
        DecodedImage(
            image_id=int(entry["id"]),
            file_name=str(entry["file_name"]),
            pixels=split.pixels_of(position),
            orig_hw=split.images[position].orig_hw,
            truths=truths.get(int(entry["id"]), []),
        )
        for position, entry in enumerate(entries)
    ]
    warnings.extend(_size_mismatches(images, entries))
    order = aspect_order([im.orig_hw for im in images])
    return DecodedDataset(name=spec.name, img_size=img_size, images=[images[i] for i in order], warnings=warnings)


# ---------------------------------------------------------------------------------------------------------
# Batching and letterboxing


def grid_stride(model_stride: float) -> int:
    return max(int(model_stride), MIN_GRID)


def batch_shape(ratios: Sequence[float], img_size: int, stride: int, pad: float = RECT_PAD) -> tuple[int, int]:
    """Letterbox (h, w) shared by one batch, given its images' h/w ratios."""
    lo, hi = min(ratios), max(ratios)
    if hi < 1:  # all landscape: full width, height of the tallest
        scale = (hi, 1.0)
    elif lo > 1:  # all portrait: full height, width of the widest
        scale = (1.0, 1 / lo)
    else:
        scale = (1.0, 1.0)
    h, w = (int(np.ceil(s * img_size / stride + pad)) * stride for s in scale)
    return h, w


def make_batches(dataset: DecodedDataset, batch_size: int, stride: int, pad: float = RECT_PAD) -> list[Batch]:
    """Consecutive runs of ``batch_size`` images (already in aspect order) with their letterbox shape."""
    ratios = [h / w for h, w in (im.orig_hw for im in dataset.images)]
    batches = []
    for start in range(0, len(dataset.images), batch_size):
        indices = list(range(start, min(start + batch_size, len(dataset.images))))
        shape = batch_shape([ratios[i] for i in indices], dataset.img_size, stride, pad)
        batches.append(Batch(indices=indices, shape=shape))
    return batches


def letterbox(image: np.ndarray, shape: tuple[int, int]) -> Letterboxed:
    """Fit ``image`` into ``shape`` (h, w) without enlarging it, centred on a grey border."""
    h, w = image.shape[:2]
    r = min(shape[0] / h, shape[1] / w, 1.0)  # shrink only: validation never upscales here
    new_w, new_h = round(w * r), round(h * r)
    dw, dh = (shape[1] - new_w) / 2, (shape[0] - new_h) / 2
    if (w, h) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    # round(d -/+ 0.1) puts an odd leftover pixel on the bottom/right (Python rounds halves to even).
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    out = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return Letterboxed(pixels=out, gain=r, pad=(dw, dh))


def input_gain(image: DecodedImage, letterbox_gain: float) -> float:
    """Original -> network-input scale. Upstream records the loader's h/h0 (the letterbox never
    shrinks at rect-val shapes, so its own factor is 1.0 and the product is bit-identical)."""
    h0 = image.orig_hw[0]
    gain = image.resized_hw[0] / h0
    return gain if letterbox_gain == 1.0 else gain * letterbox_gain


def to_chw_rgb(pixels: np.ndarray) -> np.ndarray:
    """HWC BGR -> contiguous CHW RGB, the layout the network takes."""
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[::-1])
