"""The dataset catalog: which datasets a deployment offers, by name (COCO JSON or YOLO format).

A catalog file (YAML or JSON) maps names to an images folder and an instances JSON, or to a YOLOv5
``data.yaml`` whose splits each become a dataset:

    coco-val2017:
      images: coco/val2017
      annotations: coco/annotations/instances_val2017.json
    shapes:
      images: /data/shapes/images
      annotations: /data/shapes/instances.json
      category_map: ordered
    parts:                        # YOLO format: datasets parts-train and parts-val
      format: yolo
      data: /data/parts/data.yaml
      splits: {val: parts-check}  # optional: name a split differently (here parts-val -> parts-check)

Relative paths resolve against the catalog file's folder. `category_map` says how model class
indices become dataset category ids (:meth:`DatasetSpec.category_mapping`):

* `names`: class i is the category with the model's i-th class name: exactly, else case-insensitively
  (every category that has annotations must be matched, or the dataset is refused);
* `coco80`: the standard COCO 80-to-91 map, as upstream uses for COCO;
* `ordered`: class i is the dataset's i-th category by id; when there are more categories than
  classes, categories without annotations (a Roboflow export's root category) are left out first;
* `auto` (default): `names` when the model's class names match, else `coco80` when the category ids
  are COCO ids and the model has 80 classes, else `ordered` (with a warning that names differ).

A COCO instances file is checked when it is loaded (``prunebench.datasets.validate``): what can be
normalised is, with a warning (``DatasetSpec.load_warnings``), the rest is a CatalogError. A YOLO-format
split is converted to COCO instances in memory (see ``prunebench.datasets.yolo``): category id = class
index, so its map is always ``ordered``, as upstream evaluates YOLO labels.

Torch-free: the API lists datasets from here, workers resolve them from here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml

from prunebench import DEMO_ASSETS
from prunebench.contract import DatasetInfo
from prunebench.datasets import yolo
from prunebench.datasets.validate import InstancesError, listed, validate_instances

CategoryMap = Literal["auto", "coco80", "names", "ordered"]
CATEGORY_MAPS: tuple[CategoryMap, ...] = ("auto", "coco80", "names", "ordered")
DatasetFormat = Literal["coco", "yolo"]
BUILTIN_ROOT = DEMO_ASSETS
BUILTIN_DATASET = "shapes-val"
BUILTIN_YOLO = {"train": "shapes-train-mini", "val": "shapes-val-yolo"}
"""The bundled ``shapes.yaml`` splits: 240 training images and the 120 validation images, YOLO labels."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# COCO's 80 detection classes as 91-id category ids (facts of the COCO format).
COCO80_TO_91: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
    33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
    60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip


class CatalogError(ValueError):
    """The catalog file, or an entry in it, is unusable."""


@dataclass(frozen=True)
class CategoryMapping:
    """Which dataset category id each model class scores as (-1: none), how that was decided
    (``mode``: names, names-case-insensitive, coco80 or ordered) and warnings about the choice."""

    ids: list[int]
    mode: str
    warnings: list[str] = field(default_factory=list)


class UnknownDataset(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class YoloSplit:
    """Where a YOLO-format dataset comes from: its data.yaml and which split."""

    data: yolo.DataYaml
    split: str

    @cached_property
    def images(self) -> list[Path]:
        return yolo.list_images(self.data.splits[self.split])


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset. COCO: ``images_dir`` + ``annotations`` (instances JSON). YOLO: ``annotations`` is the
    data.yaml, ``images_dir`` the folder image file names are relative to, ``yolo`` the split."""

    name: str
    images_dir: Path
    annotations: Path
    category_map: CategoryMap = "auto"
    builtin: bool = False
    format: DatasetFormat = "coco"
    yolo: YoloSplit | None = None

    @cached_property
    def _validated(self) -> tuple[dict[str, Any], list[str]]:
        if self.yolo is not None:
            try:
                return yolo.coco_instances(self.yolo.images, self.images_dir, self.yolo.data.names), []
            except yolo.YoloFormatError as exc:
                raise CatalogError(f"dataset {self.name!r}: {exc}") from exc
        try:
            with self.annotations.open("rb") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, bad UTF-8
            raise CatalogError(f"dataset {self.name!r}: cannot read annotations: {exc}") from exc
        try:
            checked = validate_instances(data)
        except InstancesError as exc:
            raise CatalogError(f"dataset {self.name!r} ({self.annotations.name}): {exc}") from exc
        return checked.instances, checked.warnings

    @property
    def instances(self) -> dict[str, Any]:
        """COCO instances, checked and normalised (``prunebench.datasets.validate``); for a YOLO split,
        converted in memory (image sizes read from the headers). CatalogError when unusable."""
        return self._validated[0]

    @property
    def load_warnings(self) -> list[str]:
        """What loading the instances normalised (renumbered ids, defaulted fields), one sentence each."""
        return list(self._validated[1])

    @property
    def category_ids(self) -> list[int]:
        if self.yolo is not None:
            return list(range(self.yolo.data.nc))  # known without converting (no image headers read)
        return sorted(int(c["id"]) for c in self.instances.get("categories", []))

    def class_to_category(self, classes: int | Sequence[str]) -> list[int]:
        """Category id for each model class index (-1: not scored), per :meth:`category_mapping`."""
        return self.category_mapping(classes).ids

    def category_mapping(self, classes: int | Sequence[str]) -> CategoryMapping:
        """How the model's classes (their names, or only their count) map to this dataset's categories.

        ``auto``: by name when the names match (exactly, else case-insensitively), else by COCO's
        80-to-91 ids for an 80-class model on COCO ids, else by order. CatalogError when the mode the
        catalog asks for cannot apply.
        """
        names = None if isinstance(classes, int) else [str(n) for n in classes]
        num_classes = classes if isinstance(classes, int) else len(classes)
        mode = self.category_map
        if mode in ("auto", "names") and names is not None and self.yolo is None:
            by_name = self._by_names(names)
            if by_name is not None:
                return by_name
            if mode == "names":
                raise CatalogError(f"dataset {self.name!r}: {self._name_mismatch(names)}")
        if mode == "names":
            raise CatalogError(f"dataset {self.name!r} maps classes by name, but the model's names are unknown")
        # Only `auto` falls back from names; an explicit coco80 / ordered is the operator's choice.
        note = [self._name_mismatch(names)] if mode == "auto" and names is not None and self.yolo is None else []
        if mode == "auto":
            coco_ids = set(COCO80_TO_91)
            mode = "coco80" if num_classes == 80 and set(self.category_ids) <= coco_ids else "ordered"
        if mode == "coco80":
            if num_classes != 80:
                raise CatalogError(f"dataset {self.name!r} uses the COCO 80-class map; model has {num_classes}")
            return CategoryMapping(list(COCO80_TO_91), "coco80", [n + ": mapped by COCO's 80-to-91 ids" for n in note])
        ids = self._ordered_ids(num_classes)
        return CategoryMapping(
            ids + [-1] * (num_classes - len(ids)), "ordered", [n + ": mapped by order of id" for n in note]
        )

    def _used_category_ids(self) -> set[int]:
        return {int(a["category_id"]) for a in self.instances.get("annotations", [])}

    def _by_names(self, names: list[str]) -> CategoryMapping | None:
        """Classes mapped to the categories of the same name, when every annotated category is matched."""
        categories = self.instances.get("categories", [])
        used = self._used_category_ids()
        for mode, norm in (("names", lambda s: s), ("names-case-insensitive", lambda s: s.strip().casefold())):
            by_name: dict[str, list[int]] = {}
            for c in categories:
                by_name.setdefault(norm(str(c["name"])), []).append(int(c["id"]))
            ids: list[int] = []
            for name in names:
                candidates = by_name.get(norm(name), [])
                # Several categories of one name: the annotated one, if exactly one is.
                if len(candidates) > 1:
                    candidates = [c for c in candidates if c in used]
                ids.append(candidates[0] if len(candidates) == 1 and candidates[0] not in ids else -1)
            if any(i >= 0 for i in ids) and used <= set(ids):
                return CategoryMapping(ids, mode)
        return None

    def _name_mismatch(self, names: list[str]) -> str:
        folded = {n.strip().casefold() for n in names}
        used = self._used_category_ids()
        missing = [
            str(c["name"])
            for c in self.instances.get("categories", [])
            if int(c["id"]) in used and str(c["name"]).strip().casefold() not in folded
        ]
        detail = f" (no class named {listed(missing)})" if missing else " (ambiguous names)"
        return f"the model's class names do not match the dataset's category names{detail}"

    def _ordered_ids(self, num_classes: int) -> list[int]:
        ids = self.category_ids
        if self.yolo is not None:
            return self._fitting(ids, num_classes, used=set())
        # A Roboflow export's root category (id 0, named after the dataset, the supercategory of the
        # others, never annotated) is not a class: it never takes a class index.
        used = self._used_category_ids()
        categories = self.instances.get("categories", [])
        parents = {str(c.get("supercategory")) for c in categories}
        roots = {int(c["id"]) for c in categories if str(c["name"]) in parents and int(c["id"]) not in used}
        ids = [i for i in ids if i not in roots]
        return self._fitting(ids, num_classes, used if num_classes < len(ids) else set())

    def _fitting(self, ids: list[int], num_classes: int, used: set[int]) -> list[int]:
        """``ids`` without the unannotated ones when there are too many for the classes (and some are used)."""
        if used:
            ids = [i for i in ids if i in used]
        if num_classes < len(ids):
            what = "annotated categories" if used else "categories"
            raise CatalogError(f"model has {num_classes} classes but dataset {self.name!r} has {len(ids)} {what}")
        return ids

    def uses_coco_map(self, num_classes: int) -> bool:
        return self.class_to_category(num_classes) == list(COCO80_TO_91)

    def info(self) -> DatasetInfo:
        if self.yolo is not None:
            return self._yolo_info(self.yolo)
        data = self.instances
        return DatasetInfo(
            name=self.name,
            images=len(data["images"]),
            annotations=len(data.get("annotations", [])),
            categories=[{"id": c["id"], "name": c.get("name", str(c["id"]))} for c in data.get("categories", [])],
            is_coco=self.category_map == "coco80"
            or (self.category_map == "auto" and set(self.category_ids) <= set(COCO80_TO_91)),
            builtin=self.builtin,
            format=self.format,
            warnings=self.load_warnings,
        )

    def _yolo_info(self, split: YoloSplit) -> DatasetInfo:
        # Counts only: listing datasets must not read every image header.
        try:
            images = split.images
            objects = yolo.count_labels(images, split.data.nc)
        except yolo.YoloFormatError as exc:
            raise CatalogError(f"dataset {self.name!r}: {exc}") from exc
        return DatasetInfo(
            name=self.name,
            images=len(images),
            annotations=objects,
            categories=[{"id": i, "name": n} for i, n in enumerate(split.data.names)],
            is_coco=False,
            builtin=self.builtin,
            format="yolo",
        )


def yolo_datasets(
    data_yaml: Path, names: dict[str, str] | None = None, *, prefix: str = "", builtin: bool = False
) -> dict[str, DatasetSpec]:
    """One dataset per split of a YOLOv5 data.yaml, named ``names[split]`` or ``<prefix>-<split>``."""
    try:
        data = yolo.read_data_yaml(data_yaml)
    except yolo.YoloFormatError as exc:
        raise CatalogError(str(exc)) from exc
    names = names or {}
    unknown = set(names) - set(data.splits)
    if unknown:
        raise CatalogError(f"{data_yaml}: no split {', '.join(sorted(unknown))} (has {', '.join(data.splits)})")
    specs = {}
    for split, sources in data.splits.items():
        name = names.get(split) or f"{prefix}-{split}"
        # File names are relative to the split's own folder when it has one, else to the dataset root.
        images_dir = sources[0] if len(sources) == 1 and sources[0].is_dir() else data.root
        specs[name] = DatasetSpec(
            name=name,
            images_dir=images_dir,
            annotations=data.path,
            category_map="ordered",
            builtin=builtin,
            format="yolo",
            yolo=YoloSplit(data, split),
        )
    return specs


def builtin_datasets() -> dict[str, DatasetSpec]:
    root = BUILTIN_ROOT / BUILTIN_DATASET
    specs = {
        BUILTIN_DATASET: DatasetSpec(
            name=BUILTIN_DATASET,
            images_dir=root / "images",
            annotations=root / "instances_val2017.json",
            builtin=True,
        )
    }
    specs.update(yolo_datasets(BUILTIN_ROOT / "shapes.yaml", BUILTIN_YOLO, builtin=True))
    return specs


def _parse_yolo_entry(name: str, entry: dict[str, Any], base: Path) -> dict[str, DatasetSpec]:
    data = entry.get("data")
    splits = entry.get("splits", {})
    if not isinstance(data, str) or not data:
        raise CatalogError(f"catalog entry {name!r} (format yolo) needs 'data': the path of a data.yaml")
    if not isinstance(splits, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in splits.items()):
        raise CatalogError(f"catalog entry {name!r}: 'splits' maps split names (train, val, test) to dataset names")
    return yolo_datasets((base / data).resolve(), splits, prefix=name)


def _parse_entry(name: str, entry: Any, base: Path) -> DatasetSpec:
    if not isinstance(entry, dict) or "images" not in entry or "annotations" not in entry:
        raise CatalogError(f"catalog entry {name!r} needs 'images' and 'annotations' (or 'format: yolo')")
    category_map = entry.get("category_map", "auto")
    if category_map not in CATEGORY_MAPS:
        raise CatalogError(f"catalog entry {name!r}: category_map must be one of {', '.join(CATEGORY_MAPS)}")
    return DatasetSpec(
        name=name,
        images_dir=(base / str(entry["images"])).resolve(),
        annotations=(base / str(entry["annotations"])).resolve(),
        category_map=category_map,
    )


def load_catalog(path: Path | None, include_builtin: bool = True) -> dict[str, DatasetSpec]:
    """All datasets a deployment offers: the catalog file's entries, plus the bundled demo."""
    specs = builtin_datasets() if include_builtin else {}
    if path is None:
        return specs
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read dataset catalog {path}: {exc}") from exc
    raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if raw is None:
        return specs
    if not isinstance(raw, dict):
        raise CatalogError(f"dataset catalog {path} must map names to entries")
    for name, entry in raw.items():
        fmt = entry.get("format", "coco") if isinstance(entry, dict) else "coco"
        if fmt == "yolo":
            specs.update(_parse_yolo_entry(str(name), entry, path.parent))
        elif fmt == "coco":
            specs[str(name)] = _parse_entry(str(name), entry, path.parent)
        else:
            raise CatalogError(f"catalog entry {name!r}: format must be coco or yolo")
    return specs


def resolve_dataset(catalog: dict[str, DatasetSpec], name: str) -> DatasetSpec:
    try:
        return catalog[name]
    except KeyError:
        raise UnknownDataset(name) from None
