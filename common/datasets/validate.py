"""Check a COCO instances file when its dataset is loaded: normalise what can be, refuse the rest.

Real instances files come from converters, merges and labelling tools, and pycocotools trusts them:
repeated annotation ids silently overwrite ground truth in its index, an annotation id of 0 is never
matched, duplicate image ids double-count instances, a missing ``iscrowd`` or ``area`` is a
``KeyError`` after the whole inference pass. :func:`validate_instances` runs when the catalog,
``GET /v1/datasets`` or ``prunebench eval --annotations`` loads the file, before any inference:

* **normalised, with a warning**: annotation ids that are missing, not positive integers or not
  unique are renumbered 1..N in file order; a missing ``iscrowd`` is 0 and a missing ``area`` the
  box area ``w * h`` (what most converters write); annotations whose ``image_id`` is not among the
  images are dropped (COCOeval never scores them either);
* **normalised silently**: string image ids (pycocotools accepts them) become 1..N in the order of
  ``images``, annotations following; integral floats in ``width``/``height`` become ints;
* **refused** (:class:`InstancesError`, naming the field and quoting an example entry): no
  ``images``/``categories`` list; an image without a usable ``id``, ``file_name``, ``width`` or
  ``height``; duplicate image ids or file names; duplicate category ids; an annotation without a
  usable ``image_id``, ``category_id`` (one of the categories) or ``bbox`` (4 finite numbers,
  ``w, h >= 0``), or with an ``iscrowd`` other than 0/1 or a negative ``area``.

Torch-free and numpy-free: the API validates here too.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

EXAMPLE_CHARS = 200
"""How much of an offending entry a message quotes."""
SHOWN = 5
"""How many offending ids or file names a message lists."""


class InstancesError(ValueError):
    """The instances file is not usable COCO; the message names the field and quotes an example."""


@dataclass
class Validated:
    """Instances ready for evaluation, and what was changed to get there (one sentence each)."""

    instances: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def example(entry: Any) -> str:
    """``entry`` as compact JSON, cut to :data:`EXAMPLE_CHARS`."""
    text = json.dumps(entry, default=str, separators=(",", ":"))
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 3] + "..."


def listed(values: Iterable[Any]) -> str:
    """The first :data:`SHOWN` values, ``repr``-ed, and how many more."""
    items = list(values)
    head = ", ".join(repr(v) for v in items[:SHOWN])
    return head + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_image_id(value: Any) -> bool:
    """An image id as pycocotools accepts it: an integer or a non-empty string."""
    return _is_int(value) or (isinstance(value, str) and bool(value))


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _positive_int(value: Any) -> int | None:
    """``value`` as a positive int (integral floats accepted, as some converters write them), else None."""
    if _is_number(value) and value > 0 and float(value).is_integer():
        return int(value)
    return None


# ---------------------------------------------------------------------------------------------------------
# Categories and images


def _categories(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise InstancesError("no 'categories' list: COCO instances name their categories ({'id': 1, 'name': ...})")
    out = []
    for entry in raw:
        if not isinstance(entry, dict) or not _is_int(entry.get("id")):
            raise InstancesError(f"a category has no integer 'id': {example(entry)}")
        name = entry.get("name", str(entry["id"]))
        if not isinstance(name, str):
            raise InstancesError(f"category 'name' must be a string: {example(entry)}")
        out.append({**entry, "name": name})
    repeated = [i for i, n in Counter(c["id"] for c in out).items() if n > 1]
    if repeated:
        raise InstancesError(f"duplicate category ids {listed(repeated)}: each category needs its own 'id'")
    return out


def _image(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise InstancesError(f"an entry of 'images' is not an object: {example(entry)}")
    image_id = entry.get("id")
    if not _is_image_id(image_id):
        raise InstancesError(f"an image has no 'id' (an integer or a string): {example(entry)}")
    name = entry.get("file_name")
    if not isinstance(name, str) or not name.strip():
        raise InstancesError(f"an image has no 'file_name': {example(entry)}")
    sizes = {key: _positive_int(entry.get(key)) for key in ("width", "height")}
    for key, size in sizes.items():
        if size is None:
            raise InstancesError(f"an image has no valid '{key}' (a positive integer, pixels): {example(entry)}")
    return {**entry, **sizes}


def _images(raw: Any) -> tuple[list[dict[str, Any]], dict[Any, int] | None]:
    """Checked image entries and, when some id is a string, the map from each original id to 1..N."""
    if not isinstance(raw, list):
        raise InstancesError("no 'images' list: not COCO instances JSON")
    images = [_image(entry) for entry in raw]
    ids = Counter((type(im["id"]), im["id"]) for im in images)
    repeated = [value for (_, value), n in ids.items() if n > 1]
    if repeated:
        raise InstancesError(
            f"duplicate image ids {listed(repeated)} (merged files?): their ground truth would be counted twice; "
            "give every image its own 'id'"
        )
    names = [name for name, n in Counter(im["file_name"] for im in images).items() if n > 1]
    if names:
        raise InstancesError(f"images listed more than once (same 'file_name'): {listed(names)}")
    if all(_is_int(im["id"]) for im in images):
        return images, None
    # pycocotools takes string ids; the engine numbers images, so map every id (keeping str "1" != int 1).
    renumber = {(type(im["id"]), im["id"]): k for k, im in enumerate(images, start=1)}
    return [{**im, "id": renumber[(type(im["id"]), im["id"])]} for im in images], renumber


# ---------------------------------------------------------------------------------------------------------
# Annotations


@dataclass
class _Counts:
    """How many annotations needed each kind of fix, for one warning each."""

    no_iscrowd: int = 0
    no_area: int = 0
    unknown_image: list[Any] = field(default_factory=list)


def _bbox(ann: dict[str, Any]) -> list[float]:
    box = ann.get("bbox")
    if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
        raise InstancesError(f"an annotation has no valid 'bbox' ([x, y, w, h], 4 finite numbers): {example(ann)}")
    if box[2] < 0 or box[3] < 0:
        raise InstancesError(f"an annotation's 'bbox' has a negative width or height: {example(ann)}")
    return [float(v) for v in box]


def _annotation(ann: Any, categories: set[int], counts: _Counts) -> dict[str, Any]:
    if not isinstance(ann, dict):
        raise InstancesError(f"an entry of 'annotations' is not an object: {example(ann)}")
    image_id = ann.get("image_id")
    if not _is_image_id(image_id):
        raise InstancesError(f"an annotation has no 'image_id' (an integer or a string): {example(ann)}")
    category = ann.get("category_id")
    if not _is_int(category):
        raise InstancesError(f"an annotation has no integer 'category_id': {example(ann)}")
    if category not in categories:
        raise InstancesError(f"an annotation's 'category_id' {category} is not among the categories: {example(ann)}")
    box = _bbox(ann)
    out = {**ann, "bbox": box}
    if "iscrowd" not in ann:
        counts.no_iscrowd += 1
        out["iscrowd"] = 0
    elif ann["iscrowd"] not in (0, 1):  # True/False compare equal to 1/0
        raise InstancesError(f"an annotation's 'iscrowd' must be 0 or 1: {example(ann)}")
    else:
        out["iscrowd"] = int(ann["iscrowd"])
    if "area" not in ann:
        counts.no_area += 1
        out["area"] = box[2] * box[3]
    elif not _is_number(ann["area"]) or ann["area"] < 0:
        raise InstancesError(f"an annotation's 'area' must be a number >= 0: {example(ann)}")
    return out


def _annotations(
    raw: Any, images: list[dict[str, Any]], id_map: dict[Any, int] | None, categories: set[int], warnings: list[str]
) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InstancesError("'annotations' must be a list")
    known = {im["id"] for im in images}
    counts = _Counts()
    kept = []
    for entry in raw:
        ann = _annotation(entry, categories, counts)
        key = (type(ann["image_id"]), ann["image_id"])
        image_id = id_map.get(key) if id_map is not None else ann["image_id"]
        if image_id is None or image_id not in known:
            counts.unknown_image.append(ann["image_id"])
            continue
        kept.append({**ann, "image_id": image_id})
    if counts.no_iscrowd:
        warnings.append(f"{counts.no_iscrowd} annotations have no 'iscrowd': taken as 0 (not a crowd)")
    if counts.no_area:
        warnings.append(f"{counts.no_area} annotations have no 'area': set to the box area w*h")
    if counts.unknown_image:
        warnings.append(
            f"{len(counts.unknown_image)} annotations refer to image ids not in 'images' "
            f"({listed(dict.fromkeys(counts.unknown_image))}): ignored"
        )
    _renumber(kept, warnings)
    return kept


def _renumber(annotations: list[dict[str, Any]], warnings: list[str]) -> None:
    """Ids 1..N in file order unless every id is a unique positive integer (pycocotools keys its index by
    id, so a repeated id overwrites ground truth, and its matcher treats id 0 as "unmatched")."""
    ids: list[Any] = [ann.get("id") for ann in annotations]
    usable = all(_is_int(i) and i > 0 for i in ids)
    if usable and len(set(ids)) == len(ids):
        return
    repeated = [i for i, n in Counter(map(repr, ids)).items() if n > 1]
    why = f"repeat ({len(repeated)} ids used more than once, e.g. {', '.join(repeated[:3])})" if repeated else ""
    if not usable:
        why = (why + "; " if why else "") + "are missing or not positive integers"
    warnings.append(f"annotation ids {why}: renumbered 1..{len(annotations)} in file order")
    for number, ann in enumerate(annotations, start=1):
        ann["id"] = number


def validate_instances(raw: Any) -> Validated:
    """``raw`` (a parsed instances JSON) checked and normalised; InstancesError when it cannot be used.

    The result is a new dict (``raw`` is not modified) with the same top-level keys.
    """
    if not isinstance(raw, dict):
        raise InstancesError("not COCO instances JSON (an object with 'images', 'annotations', 'categories')")
    warnings: list[str] = []
    categories = _categories(raw.get("categories"))
    images, id_map = _images(raw.get("images"))
    annotations = _annotations(raw.get("annotations"), images, id_map, {c["id"] for c in categories}, warnings)
    instances = {**raw, "images": images, "annotations": annotations, "categories": categories}
    return Validated(instances=instances, warnings=warnings)
