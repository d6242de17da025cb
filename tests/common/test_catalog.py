"""The dataset catalog: names to COCO folders, category maps, and the bundled demo."""

import json
from pathlib import Path

import pytest

from prunebench.datasets.catalog import (
    BUILTIN_DATASET,
    COCO80_TO_91,
    CatalogError,
    DatasetSpec,
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


SHAPES = ["person", "bicycle", "car", "motorcycle", "airplane"]


def labelled(path: Path, categories: list[dict], used: list[int]) -> DatasetSpec:
    """A one-image dataset with one box per category id in ``used``."""
    anns = [
        {"id": k + 1, "image_id": 1, "category_id": c, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0}
        for k, c in enumerate(used)
    ]
    images = [{"id": 1, "file_name": "1.jpg", "width": 10, "height": 10}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return DatasetSpec(name="d", images_dir=path.parent, annotations=path)


def test_classes_map_by_name_when_category_ids_are_alphabetical(tmp_path: Path) -> None:
    # A labelling tool numbered the categories alphabetically: airplane=1, bicycle=2, car=3, ...
    alphabetical = {name: i for i, name in enumerate(sorted(SHAPES), start=1)}
    cats = [{"id": i, "name": n} for n, i in alphabetical.items()]
    spec = labelled(tmp_path / "i.json", cats, list(alphabetical.values()))
    mapping = spec.category_mapping(SHAPES)
    assert mapping.mode == "names" and mapping.warnings == []
    assert mapping.ids == [alphabetical[n] for n in SHAPES]  # person -> 5, not 1
    # Only the count known (no names): by order, as before.
    assert spec.class_to_category(5) == [1, 2, 3, 4, 5]


def test_names_match_case_insensitively_and_extra_model_classes_score_nothing(tmp_path: Path) -> None:
    cats = [{"id": 10, "name": "Car "}, {"id": 20, "name": "PERSON"}]
    spec = labelled(tmp_path / "i.json", cats, [10, 20])
    mapping = spec.category_mapping(SHAPES)
    assert mapping.mode == "names-case-insensitive"
    assert mapping.ids == [20, -1, 10, -1, -1]


def test_roboflow_root_category_does_not_block_evaluation(tmp_path: Path) -> None:
    # Roboflow's COCO export: category 0 is the dataset itself, supercategory of the others, never used.
    cats = [{"id": 0, "name": "shapes-xyz", "supercategory": "none"}] + [
        {"id": i, "name": n, "supercategory": "shapes-xyz"} for i, n in enumerate(SHAPES, start=1)
    ]
    spec = labelled(tmp_path / "i.json", cats, [1, 2, 3, 4, 5])
    assert spec.category_mapping(SHAPES).ids == [1, 2, 3, 4, 5]
    # Names that do not match: by order of id, the unused root left out, with a warning.
    mapping = spec.category_mapping([f"class{i}" for i in range(5)])
    assert (mapping.mode, mapping.ids) == ("ordered", [1, 2, 3, 4, 5])
    assert mapping.warnings and "no class named 'person'" in mapping.warnings[0]
    # The root never takes a class index, even when there are classes enough for it.
    assert spec.category_mapping([f"class{i}" for i in range(6)]).ids == [1, 2, 3, 4, 5, -1]


def test_explicit_names_map_refuses_names_that_do_not_match(tmp_path: Path) -> None:
    spec = labelled(tmp_path / "i.json", [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}], [1, 2])
    named = DatasetSpec(name="d", images_dir=tmp_path, annotations=spec.annotations, category_map="names")
    with pytest.raises(CatalogError, match="no class named 'dog'"):
        named.class_to_category(["cat", "bird"])
    assert named.class_to_category(["dog", "cat"]) == [2, 1]


def test_partial_name_match_falls_back_to_order_with_a_warning(tmp_path: Path) -> None:
    spec = labelled(tmp_path / "i.json", [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}], [1, 2])
    mapping = spec.category_mapping(["dog", "bird"])
    assert (mapping.mode, mapping.ids) == ("ordered", [1, 2])
    assert "no class named 'cat'" in mapping.warnings[0]
