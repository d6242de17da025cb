"""COCO instances are checked when a dataset is loaded: normalised with a warning, or refused by name."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from prunebench.datasets.catalog import CatalogError, DatasetSpec
from prunebench.datasets.validate import InstancesError, validate_instances

CASES = Path(__file__).resolve().parents[1] / "fixtures" / "cases" / "datasets"


def instances() -> dict[str, Any]:
    return {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
            {"id": 2, "file_name": "b.jpg", "width": 60, "height": 60},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 20], "area": 200, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 4, 5], "area": 20, "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }


def test_clean_instances_pass_unchanged_without_warnings() -> None:
    raw = instances()
    checked = validate_instances(copy.deepcopy(raw))
    assert checked.warnings == []
    expected = [{**a, "bbox": [float(v) for v in a["bbox"]]} for a in raw["annotations"]]
    assert checked.instances["annotations"] == expected
    assert checked.instances["images"] == raw["images"]


def test_repeated_annotation_ids_are_renumbered_with_a_warning() -> None:
    raw = instances()
    raw["annotations"][1]["id"] = 1
    checked = validate_instances(raw)
    assert [a["id"] for a in checked.instances["annotations"]] == [1, 2]
    assert raw["annotations"][1]["id"] == 1  # the caller's dict is not modified
    assert any("repeat" in w and "renumbered 1..2" in w for w in checked.warnings)


@pytest.mark.parametrize("bad", [0, -3, "x", None, 1.5])
def test_annotation_ids_that_are_not_positive_integers_are_renumbered(bad: Any) -> None:
    # pycocotools' matcher reads id 0 as "unmatched", so 0 is as unusable as a missing id.
    raw = instances()
    raw["annotations"][0]["id"] = bad
    checked = validate_instances(raw)
    assert [a["id"] for a in checked.instances["annotations"]] == [1, 2]
    assert any("not positive integers" in w for w in checked.warnings)


def test_missing_iscrowd_and_area_are_defaulted_with_warnings() -> None:
    raw = instances()
    for ann in raw["annotations"]:
        del ann["iscrowd"], ann["area"]
    checked = validate_instances(raw)
    assert [a["iscrowd"] for a in checked.instances["annotations"]] == [0, 0]
    assert [a["area"] for a in checked.instances["annotations"]] == [200.0, 20.0]  # w * h
    assert "2 annotations have no 'iscrowd': taken as 0 (not a crowd)" in checked.warnings
    assert "2 annotations have no 'area': set to the box area w*h" in checked.warnings


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bbox", None, "no valid 'bbox'"),
        ("bbox", [1, 2, 3], "no valid 'bbox'"),
        ("bbox", [1, 2, float("nan"), 4], "no valid 'bbox'"),
        ("bbox", [1, 2, -3, 4], "negative width"),
        ("category_id", None, "no integer 'category_id'"),
        ("category_id", 7, "'category_id' 7 is not among the categories"),
        ("image_id", None, "no 'image_id'"),
        ("iscrowd", 2, "'iscrowd' must be 0 or 1"),
        ("area", -1, "'area' must be a number >= 0"),
    ],
)
def test_unusable_annotation_fields_are_refused_naming_field_and_example(field: str, value: Any, message: str) -> None:
    raw = instances()
    if value is None:
        del raw["annotations"][1][field]
    else:
        raw["annotations"][1][field] = value
    with pytest.raises(InstancesError, match=message) as info:
        validate_instances(raw)
    assert '"id":2' in str(info.value)  # quotes the offending annotation


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("file_name", None, "no 'file_name'"),
        ("file_name", "", "no 'file_name'"),
        ("width", None, "no valid 'width'"),
        ("height", 0, "no valid 'height'"),
        ("height", "80", "no valid 'height'"),
        ("id", None, "no 'id'"),
        ("id", True, "no 'id'"),
    ],
)
def test_unusable_image_fields_are_refused(field: str, value: Any, message: str) -> None:
    raw = instances()
    if value is None:
        del raw["images"][0][field]
    else:
        raw["images"][0][field] = value
    with pytest.raises(InstancesError, match=message):
        validate_instances(raw)


def test_duplicate_image_ids_are_refused_naming_them() -> None:
    raw = instances()
    raw["images"][1]["id"] = 1
    with pytest.raises(InstancesError, match=r"duplicate image ids 1 "):
        validate_instances(raw)


def test_an_image_listed_twice_is_refused() -> None:
    raw = instances()
    raw["images"][1]["file_name"] = "a.jpg"
    with pytest.raises(InstancesError, match=r"a\.jpg"):
        validate_instances(raw)


def test_duplicate_category_ids_and_missing_categories_are_refused() -> None:
    raw = instances()
    raw["categories"][1]["id"] = 1
    with pytest.raises(InstancesError, match="duplicate category ids 1"):
        validate_instances(raw)
    with pytest.raises(InstancesError, match="no 'categories'"):
        validate_instances({**instances(), "categories": []})


def test_string_image_ids_are_numbered_and_annotations_follow() -> None:
    raw = instances()
    raw["images"][0]["id"], raw["images"][1]["id"] = "img-b", "1"
    raw["annotations"][0]["image_id"], raw["annotations"][1]["image_id"] = "1", "img-b"
    checked = validate_instances(raw)
    assert [im["id"] for im in checked.instances["images"]] == [1, 2]
    assert [a["image_id"] for a in checked.instances["annotations"]] == [2, 1]
    assert checked.warnings == []


def test_annotations_of_unknown_images_are_dropped_with_a_warning() -> None:
    raw = instances()
    raw["annotations"][1]["image_id"] = 99
    checked = validate_instances(raw)
    assert [a["id"] for a in checked.instances["annotations"]] == [1]
    assert any("image ids not in 'images' (99)" in w for w in checked.warnings)


def spec_for(path: Path) -> DatasetSpec:
    return DatasetSpec(name="case", images_dir=path.parent, annotations=path)


def test_case_duplicate_image_ids_is_refused_when_the_dataset_loads() -> None:
    spec = spec_for(CASES / "a_duplicate_image_ids.json")
    with pytest.raises(CatalogError, match=r"dataset 'case' \(a_duplicate_image_ids.json\): duplicate image ids 1, 2"):
        spec.info()


@pytest.mark.parametrize(("name", "field"), [("no_iscrowd.json", "iscrowd"), ("no_area.json", "area")])
def test_case_missing_fields_load_with_defaults(name: str, field: str) -> None:
    spec = spec_for(CASES / name)
    info = spec.info()
    assert info.images == 120 and info.annotations == 550
    assert all(field in a for a in spec.instances["annotations"])
    assert info.warnings == spec.load_warnings and any(f"no '{field}'" in w for w in info.warnings)


def test_case_restarting_annotation_ids_are_renumbered() -> None:
    spec = spec_for(CASES / "b_ann_ids_restart_per_image.json")
    ids = [a["id"] for a in spec.instances["annotations"]]
    assert ids == list(range(1, 75))
    original = json.loads((CASES / "orig20.json").read_text())["annotations"]
    assert [a["bbox"] for a in spec.instances["annotations"]] == [a["bbox"] for a in original]
    assert any("renumbered 1..74" in w for w in spec.load_warnings)
