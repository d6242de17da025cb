"""The dataset catalog: names to COCO folders, category maps, and the bundled demo."""

import json
from pathlib import Path

import pytest

from prunebench.datasets.catalog import (
    BUILTIN_DATASET,
    COCO80_TO_91,
    CatalogError,
    UnknownDataset,
    load_catalog,
    resolve_dataset,
)


def write_instances(path: Path, category_ids: list[int]) -> None:
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "1.jpg", "width": 10, "height": 10}],
                "annotations": [],
                "categories": [{"id": i, "name": f"c{i}"} for i in category_ids],
            }
        )
    )


def test_builtin_demo_dataset_is_offered() -> None:
    spec = resolve_dataset(load_catalog(None), BUILTIN_DATASET)
    info = spec.info()
    assert info.images == 120 and info.annotations == 550 and info.builtin
    assert [c["id"] for c in info.categories] == [1, 2, 3, 4, 5]
    assert spec.uses_coco_map(80)


def test_builtin_can_be_turned_off() -> None:
    assert load_catalog(None, include_builtin=False) == {}


def test_yaml_catalog_resolves_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "ann").mkdir()
    write_instances(tmp_path / "ann" / "inst.json", [1, 2])
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("mini:\n  images: imgs\n  annotations: ann/inst.json\n  category_map: ordered\n")
    spec = resolve_dataset(load_catalog(catalog), "mini")
    assert spec.images_dir == (tmp_path / "imgs").resolve()
    assert spec.class_to_category(2) == [1, 2]


def test_json_catalog(tmp_path: Path) -> None:
    write_instances(tmp_path / "inst.json", [3])
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"one": {"images": ".", "annotations": "inst.json"}}))
    assert "one" in load_catalog(catalog)


def test_unknown_dataset() -> None:
    with pytest.raises(UnknownDataset):
        resolve_dataset(load_catalog(None), "nope")


def test_broken_entries_are_reported(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("bad:\n  images: x\n")
    with pytest.raises(CatalogError, match="annotations"):
        load_catalog(catalog)
    catalog.write_text("bad:\n  images: x\n  annotations: y\n  category_map: weird\n")
    with pytest.raises(CatalogError, match="category_map"):
        load_catalog(catalog)


def test_auto_map_uses_coco_ids_for_80_class_models(tmp_path: Path) -> None:
    write_instances(tmp_path / "inst.json", [1, 90])
    (tmp_path / "c.yaml").write_text("d:\n  images: .\n  annotations: inst.json\n")
    spec = resolve_dataset(load_catalog(tmp_path / "c.yaml"), "d")
    assert spec.class_to_category(80) == list(COCO80_TO_91)
    assert spec.class_to_category(3) == [1, 90, -1]


def test_too_few_model_classes_is_a_clear_error(tmp_path: Path) -> None:
    write_instances(tmp_path / "inst.json", [1, 2, 3])
    (tmp_path / "c.yaml").write_text("d:\n  images: .\n  annotations: inst.json\n  category_map: ordered\n")
    spec = resolve_dataset(load_catalog(tmp_path / "c.yaml"), "d")
    with pytest.raises(CatalogError, match="2 classes"):
        spec.class_to_category(2)


def test_unreadable_annotations(tmp_path: Path) -> None:
    (tmp_path / "inst.json").write_text("{not json")
    (tmp_path / "c.yaml").write_text("d:\n  images: .\n  annotations: inst.json\n")
    spec = resolve_dataset(load_catalog(tmp_path / "c.yaml"), "d")
    with pytest.raises(CatalogError, match="annotations"):
        spec.info()
