"""YOLO-format datasets: a YOLOv5 ``data.yaml`` over ``images/`` folders with ``labels/*.txt`` beside them.

The format, as upstream YOLOv5 documents and reads it (facts, reimplemented here):

* ``data.yaml`` has ``path`` (the dataset root; relative paths resolve against the yaml's own folder
  here), ``train`` / ``val`` / ``test`` (each a folder of images searched recursively, a ``.txt`` file
  listing image paths, or a list of those; relative to ``path``) and ``names`` (a list, or a mapping
  ``{class index: name}``); ``nc`` is optional and must agree with ``names``.
* An image's label file is its path with the last ``/images/`` replaced by ``/labels/`` and the suffix
  by ``.txt``. No label file (or an empty one) means no objects.
* Each label row is ``class cx cy w h``, box centre and size normalised to the image (0..1). Rows of
  more than 5 numbers are polygon segments ``class x1 y1 x2 y2 ...``; their box is the points' extent.
  Duplicate rows are dropped, as upstream drops them.

Unlike upstream, which skips an image whose label file is malformed with a warning, a malformed row
here is an error naming the file and line: a dataset is either read completely or not at all.

Torch-free (shared by the API and the workers). Image sizes, needed to turn normalised boxes into
COCO pixel boxes, are read from image headers with Pillow, which only workers have (lazy import).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

IMAGE_SUFFIXES = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm")
"""Image file suffixes upstream's loader accepts (compared lower-case)."""
SPLITS = ("train", "val", "test")
MAX_YAML_BYTES = 1 << 20
MAX_LIST_BYTES = 256 << 20
MAX_LABEL_BYTES = 1 << 20
"""A label file larger than this is refused (about 25,000 boxes; real files are a few hundred bytes)."""
MAX_IMAGES = 5_000_000
MAX_CLASSES = 100_000
# Upstream clips normalised coordinates a hair inside the image; a value this far outside 0..1 is an error.
COORD_TOLERANCE = 1e-6

SizeReader = Callable[[Path], tuple[int, int]]
"""(width, height) of an image as decoded, EXIF orientation applied."""


class YoloFormatError(ValueError):
    """The data.yaml or a label file breaks the YOLO format; the message names the file (and line)."""


@dataclass(frozen=True)
class DataYaml:
    """A parsed ``data.yaml``: its location, the resolved dataset root, class names and split sources."""

    path: Path
    root: Path
    names: tuple[str, ...]
    splits: dict[str, tuple[Path, ...]]

    @property
    def nc(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class Label:
    """One object: class index and normalised centre/size box."""

    cls: int
    cx: float
    cy: float
    w: float
    h: float


# ---------------------------------------------------------------------------------------------------------
# data.yaml


def _names(raw: dict[str, Any], source: Path) -> tuple[str, ...]:
    names = raw.get("names")
    nc = raw.get("nc")
    if names is None and isinstance(nc, int) and 0 < nc <= MAX_CLASSES:
        return tuple(f"class{i}" for i in range(nc))  # upstream's default names
    if isinstance(names, dict):
        if not all(isinstance(k, int) for k in names) or sorted(names) != list(range(len(names))):
            raise YoloFormatError(f"{source}: 'names' keys must be the class indices 0..N-1")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or len(names) > MAX_CLASSES:
        raise YoloFormatError(f"{source}: 'names' must be a non-empty list or {{index: name}} mapping")
    if nc is not None and nc != len(names):
        raise YoloFormatError(f"{source}: nc={nc!r} but 'names' has {len(names)} entries")
    return tuple(str(n) for n in names)


def _split_sources(value: Any, root: Path, source: Path, split: str) -> tuple[Path, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v and "\x00" not in v for v in items):
        raise YoloFormatError(f"{source}: {split!r} must be a path or a list of paths")
    return tuple((root / v).resolve() for v in items)


def read_data_yaml(path: Path) -> DataYaml:
    """Parse a YOLOv5 ``data.yaml``; YoloFormatError when it is unreadable or incomplete."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise YoloFormatError(f"{path}: larger than {MAX_YAML_BYTES} bytes")
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise YoloFormatError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise YoloFormatError(f"{path}: not a YAML mapping")
    base = raw.get("path") or "."
    if not isinstance(base, str):
        raise YoloFormatError(f"{path}: 'path' must be a string")
    root = (path.parent / base).resolve()
    splits = {s: _split_sources(raw[s], root, path, s) for s in SPLITS if raw.get(s) is not None}
    if not splits:
        raise YoloFormatError(f"{path}: names no split (train, val or test)")
    return DataYaml(path=path, root=root, names=_names(raw, path), splits=splits)


# ---------------------------------------------------------------------------------------------------------
# Images and labels


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _from_list_file(path: Path) -> list[Path]:
    if path.stat().st_size > MAX_LIST_BYTES:
        raise YoloFormatError(f"{path}: image list larger than {MAX_LIST_BYTES} bytes")
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if entry:
            # Upstream reads "./x.jpg" entries relative to the list file's folder.
            found.append((path.parent / entry).resolve() if not os.path.isabs(entry) else Path(entry))
    return found


def list_images(sources: Sequence[Path]) -> list[Path]:
    """Every image of a split, sorted by path (upstream's order); YoloFormatError if there is none."""
    found: list[Path] = []
    for source in sources:
        if source.is_dir():
            found.extend(p for p in source.rglob("*") if p.is_file() and _is_image(p))
        elif source.is_file():
            found.extend(p for p in _from_list_file(source) if _is_image(p))
        else:
            raise YoloFormatError(f"split source {source} does not exist")
        if len(found) > MAX_IMAGES:
            raise YoloFormatError(f"more than {MAX_IMAGES} images in {source}")
    if not found:
        raise YoloFormatError(f"no images in {', '.join(str(s) for s in sources)}")
    return sorted(set(found), key=str)


def label_path(image: Path) -> Path:
    """Where upstream looks for an image's labels: last ``/images/`` -> ``/labels/``, suffix ``.txt``."""
    text = str(image)
    marker, replacement = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if marker in text:
        head, tail = text.rsplit(marker, 1)
        text = head + replacement + tail
    return Path(text).with_suffix(".txt")


def _parse_row(fields: list[str], where: str, nc: int) -> Label:
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise YoloFormatError(f"{where}: not numbers: {' '.join(fields)[:80]!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise YoloFormatError(f"{where}: non-finite value")
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < nc:
        raise YoloFormatError(f"{where}: class {fields[0]!r} is not an index below nc={nc}")
    if len(values) == 5:
        cx, cy, w, h = values[1:]
    elif len(values) > 6 and len(values) % 2 == 1:  # a polygon: its box is the points' extent
        xs, ys = values[1::2], values[2::2]
        cx, cy, w, h = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
    else:
        raise YoloFormatError(f"{where}: expected 'class cx cy w h' (5 numbers) or a polygon, got {len(values)}")
    if min(cx, cy, w, h) < -COORD_TOLERANCE or max(cx, cy, w, h) > 1 + COORD_TOLERANCE:
        raise YoloFormatError(f"{where}: coordinates must be normalised to 0..1")
    return Label(int(cls), cx, cy, w, h)


def read_labels(path: Path, nc: int) -> list[Label]:
    """The objects in one label file (none when it does not exist), duplicates dropped, file order kept."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return []
    if size > MAX_LABEL_BYTES:
        raise YoloFormatError(f"{path}: label file larger than {MAX_LABEL_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise YoloFormatError(f"cannot read {path}: {exc}") from exc
    labels: list[Label] = []
    seen: set[Label] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        label = _parse_row(fields, f"{path}:{number}", nc)
        if label not in seen:
            seen.add(label)
            labels.append(label)
    return labels


# ---------------------------------------------------------------------------------------------------------
# In-memory COCO conversion


def pillow_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, swapped for EXIF orientations 5-8 as OpenCV decodes them."""
    from PIL import Image, UnidentifiedImageError  # workers only: the API never converts

    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (OSError, UnidentifiedImageError) as exc:
        raise YoloFormatError(f"cannot read image {path}: {exc}") from exc
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def image_ids(images: Sequence[Path]) -> list[int]:
    """COCO image ids: numeric file stems when they are unique (as upstream's JSON uses), else 1..N."""
    stems = [p.stem for p in images]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(images) + 1))


def coco_box(label: Label, width: int, height: int) -> list[float]:
    """A normalised centre box as COCO ``[x, y, w, h]`` pixels, clipped to the image."""
    x1 = min(max((label.cx - label.w / 2) * width, 0.0), width)
    y1 = min(max((label.cy - label.h / 2) * height, 0.0), height)
    x2 = min(max((label.cx + label.w / 2) * width, 0.0), width)
    y2 = min(max((label.cy + label.h / 2) * height, 0.0), height)
    return [x1, y1, x2 - x1, y2 - y1]


def coco_instances(
    images: Sequence[Path], root: Path, names: Sequence[str], size_of: SizeReader = pillow_size
) -> dict[str, Any]:
    """The split as COCO instances: one category per class (id = class index), boxes in pixels.

    ``file_name`` is each image's path relative to ``root``; ``area`` is the box area (there are no masks).
    """
    coco_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image, image_id in zip(images, image_ids(images), strict=True):
        width, height = size_of(image)
        coco_images.append(
            {"id": image_id, "file_name": os.path.relpath(image, root), "width": width, "height": height}
        )
        for label in read_labels(label_path(image), len(names)):
            box = coco_box(label, width, height)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label.cls,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": name} for i, name in enumerate(names)]
    return {"images": coco_images, "annotations": annotations, "categories": categories}


def count_labels(images: Sequence[Path], nc: int) -> int:
    """Objects in a split (every label file parsed, so a malformed one is reported here too)."""
    return sum(len(read_labels(label_path(p), nc)) for p in images)
