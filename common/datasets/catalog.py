"""The dataset catalog: which COCO-format datasets a deployment offers, by name.

A catalog file (YAML or JSON) maps names to an images folder and an instances JSON:

    coco-val2017:
      images: coco/val2017
      annotations: coco/annotations/instances_val2017.json
    shapes:
      images: /data/shapes/images
      annotations: /data/shapes/instances.json
      category_map: ordered

Relative paths resolve against the catalog file's folder. `category_map` says how model class
indices become dataset category ids: `coco80` (the standard COCO 80-to-91 map, as upstream uses for
COCO), `ordered` (class i is the dataset's i-th category by id), or `auto` (default: `coco80` when
the category ids are COCO ids and the model has 80 classes, else `ordered`).

Torch-free: the API lists datasets from here, workers resolve them from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml

from prunebench import DEMO_ASSETS
from prunebench.contract import DatasetInfo

CategoryMap = Literal["auto", "coco80", "ordered"]
BUILTIN_ROOT = DEMO_ASSETS
BUILTIN_DATASET = "shapes-val"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# COCO's 80 detection classes as 91-id category ids (facts of the COCO format).
COCO80_TO_91: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
    33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
    60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip


class CatalogError(ValueError):
    """The catalog file, or an entry in it, is unusable."""


class UnknownDataset(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    images_dir: Path
    annotations: Path
    category_map: CategoryMap = "auto"
    builtin: bool = False

    @cached_property
    def instances(self) -> dict[str, Any]:
        try:
            with self.annotations.open("rb") as fh:
                data = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise CatalogError(f"dataset {self.name!r}: cannot read annotations: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise CatalogError(f"dataset {self.name!r}: annotations are not COCO instances JSON")
        return data

    @property
    def category_ids(self) -> list[int]:
        return sorted(int(c["id"]) for c in self.instances.get("categories", []))

    def class_to_category(self, num_classes: int) -> list[int]:
        """Category id for each model class index, per this dataset's category map."""
        mode = self.category_map
        if mode == "auto":
            coco_ids = set(COCO80_TO_91)
            mode = "coco80" if num_classes == 80 and set(self.category_ids) <= coco_ids else "ordered"
        if mode == "coco80":
            if num_classes != 80:
                raise CatalogError(f"dataset {self.name!r} uses the COCO 80-class map; model has {num_classes}")
            return list(COCO80_TO_91)
        ids = self.category_ids
        if num_classes < len(ids):
            raise CatalogError(f"model has {num_classes} classes but dataset {self.name!r} has {len(ids)} categories")
        return ids + [-1] * (num_classes - len(ids))

    def uses_coco_map(self, num_classes: int) -> bool:
        return self.class_to_category(num_classes) == list(COCO80_TO_91)

    def info(self) -> DatasetInfo:
        data = self.instances
        return DatasetInfo(
            name=self.name,
            images=len(data["images"]),
            annotations=len(data.get("annotations", [])),
            categories=[{"id": c["id"], "name": c.get("name", str(c["id"]))} for c in data.get("categories", [])],
            is_coco=self.category_map == "coco80"
            or (self.category_map == "auto" and set(self.category_ids) <= set(COCO80_TO_91)),
            builtin=self.builtin,
        )


def builtin_datasets() -> dict[str, DatasetSpec]:
    root = BUILTIN_ROOT / BUILTIN_DATASET
    return {
        BUILTIN_DATASET: DatasetSpec(
            name=BUILTIN_DATASET,
            images_dir=root / "images",
            annotations=root / "instances_val2017.json",
            builtin=True,
        )
    }


def _parse_entry(name: str, entry: Any, base: Path) -> DatasetSpec:
    if not isinstance(entry, dict) or "images" not in entry or "annotations" not in entry:
        raise CatalogError(f"catalog entry {name!r} needs 'images' and 'annotations'")
    category_map = entry.get("category_map", "auto")
    if category_map not in ("auto", "coco80", "ordered"):
        raise CatalogError(f"catalog entry {name!r}: category_map must be auto, coco80 or ordered")
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
        specs[str(name)] = _parse_entry(str(name), entry, path.parent)
    return specs


def resolve_dataset(catalog: dict[str, DatasetSpec], name: str) -> DatasetSpec:
    try:
        return catalog[name]
    except KeyError:
        raise UnknownDataset(name) from None
