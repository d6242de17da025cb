"""YOLO-format datasets: data.yaml parsing, label files, the catalog entry and the COCO conversion."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prunebench.datasets import yolo
from prunebench.datasets.catalog import BUILTIN_YOLO, CatalogError, load_catalog
from prunebench.datasets.yolo import Label, YoloFormatError


def make_dataset(root: Path, labels: dict[str, str], names: str = "[a, b, c]", extra: str = "") -> Path:
    """A data.yaml over root/images/{train,val} with the given label file texts (by image stem)."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        split = "val" if stem.startswith("v") else "train"
        (root / "images" / split / f"{stem}.jpg").write_bytes(b"not decoded here")
        if text is not None:
            (root / "labels" / split / f"{stem}.txt").write_text(text)
    data = root / "data.yaml"
    data.write_text(f"path: .\ntrain: images/train\nval: images/val\nnames: {names}\n{extra}")
    return data


def test_data_yaml_splits_names_and_root(tmp_path: Path) -> None:
    data = yolo.read_data_yaml(make_dataset(tmp_path, {"t1": "0 0.5 0.5 0.2 0.2\n"}))
    assert data.names == ("a", "b", "c") and data.nc == 3
    assert data.splits == {
        "train": ((tmp_path / "images/train").resolve(),),
        "val": ((tmp_path / "images/val").resolve(),),
    }


def test_names_as_mapping_and_nc_checks(tmp_path: Path) -> None:
    path = make_dataset(tmp_path, {}, names="{0: x, 1: y}")
    assert yolo.read_data_yaml(path).names == ("x", "y")
    path.write_text("train: images/train\nnc: 3\nnames: [x, y]\n")
    with pytest.raises(YoloFormatError, match="nc=3"):
        yolo.read_data_yaml(path)
    path.write_text("train: images/train\nnames: {1: x}\n")
    with pytest.raises(YoloFormatError, match="class indices"):
        yolo.read_data_yaml(path)
    path.write_text("names: [x]\n")
    with pytest.raises(YoloFormatError, match="no split"):
        yolo.read_data_yaml(path)


def test_label_path_follows_upstreams_rule() -> None:
    assert yolo.label_path(Path("/d/images/train/a.b.jpg")) == Path("/d/labels/train/a.b.txt")
    assert yolo.label_path(Path("/images/x/images/y/1.png")) == Path("/images/x/labels/y/1.txt")
    assert yolo.label_path(Path("/flat/1.jpg")) == Path("/flat/1.txt")


def test_labels_drop_duplicates_and_read_polygons(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_text("1 0.5 0.5 0.2 0.4\n\n1 0.5 0.5 0.2 0.4\n2 0.1 0.2 0.3 0.2 0.3 0.6\n")
    labels = yolo.read_labels(path, nc=3)
    assert labels[0] == Label(1, 0.5, 0.5, 0.2, 0.4)
    assert len(labels) == 2 and labels[1].cls == 2
    assert (labels[1].cx, labels[1].cy, labels[1].w, labels[1].h) == pytest.approx((0.2, 0.4, 0.2, 0.4))
    assert yolo.read_labels(tmp_path / "missing.txt", nc=3) == []


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("3 0.5 0.5 0.1 0.1", "class"),
        ("0.5 0.5 0.5 0.1 0.1", "class"),
        ("0 0.5 0.5 0.1", "expected"),
        ("0 0.5 1.5 0.1 0.1", "normalised"),
        ("0 0.5 -0.2 0.1 0.1", "normalised"),
        ("0 a 0.5 0.1 0.1", "not numbers"),
        ("0 nan 0.5 0.1 0.1", "non-finite"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(f"0 0.5 0.5 0.1 0.1\n{row}\n")
    with pytest.raises(YoloFormatError, match=message) as err:
        yolo.read_labels(path, nc=3)
    assert f"{path}:2" in str(err.value)


def test_oversized_label_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("0 0.5 0.5 0.1 0.1\n" * (yolo.MAX_LABEL_BYTES // 10))
    with pytest.raises(YoloFormatError, match="larger"):
        yolo.read_labels(path, nc=1)


def test_catalog_entry_makes_one_dataset_per_split(tmp_path: Path) -> None:
    make_dataset(tmp_path / "parts", {"t1": "0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n", "t2": None, "v1": ""})
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("parts:\n  format: yolo\n  data: parts/data.yaml\n  splits: {val: parts-check}\n")
    specs = load_catalog(catalog, include_builtin=False)
    assert set(specs) == {"parts-train", "parts-check"}
    info = specs["parts-train"].info()
    assert (info.images, info.annotations, info.format, info.is_coco) == (2, 2, "yolo", False)
    assert [c["name"] for c in info.categories] == ["a", "b", "c"]
    assert specs["parts-train"].class_to_category(3) == [0, 1, 2]


def test_catalog_entry_errors(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"t1": "0 0.5 0.5 0.2 0.2\n"})
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("x:\n  format: yolo\n")
    with pytest.raises(CatalogError, match="needs 'data'"):
        load_catalog(catalog)
    catalog.write_text("x:\n  format: yolo\n  data: data.yaml\n  splits: {test: y}\n")
    with pytest.raises(CatalogError, match="no split test"):
        load_catalog(catalog)
    catalog.write_text("x:\n  format: voc\n")
    with pytest.raises(CatalogError, match="coco or yolo"):
        load_catalog(catalog)


def test_a_malformed_label_makes_the_dataset_unusable(tmp_path: Path) -> None:
    data = make_dataset(tmp_path, {"t1": "0 0.5 0.5 0.2\n"})
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"x:\n  format: yolo\n  data: {data}\n")
    spec = load_catalog(catalog, include_builtin=False)["x-train"]
    with pytest.raises(CatalogError, match=r"t1\.txt:1"):
        spec.info()


def test_builtin_yolo_splits() -> None:
    specs = load_catalog(None)
    train, val = specs[BUILTIN_YOLO["train"]], specs[BUILTIN_YOLO["val"]]
    assert (train.info().images, val.info().images, val.info().annotations) == (240, 120, 550)
    instances = val.instances
    assert len(instances["images"]) == 120 and len(instances["annotations"]) == 550
    first = next(i for i in instances["images"] if i["id"] == 1)
    assert (first["file_name"], first["width"], first["height"]) == ("000000000001.jpg", 280, 423)


def test_coco_conversion_of_a_label(tmp_path: Path) -> None:
    assert yolo.coco_box(Label(0, 0.5, 0.5, 0.5, 0.25), 200, 100) == pytest.approx([50, 37.5, 100, 25])
    # Clipped to the image when the box reaches past it.
    assert yolo.coco_box(Label(0, 0.05, 0.5, 0.2, 0.2), 100, 100) == pytest.approx([0, 40, 15, 20])
    assert yolo.image_ids([Path("3.jpg"), Path("10.jpg")]) == [3, 10]
    assert yolo.image_ids([Path("a.jpg"), Path("10.jpg")]) == [1, 2]


@given(
    cx=st.floats(0, 1),
    cy=st.floats(0, 1),
    w=st.floats(0, 1),
    h=st.floats(0, 1),
    width=st.integers(1, 5000),
    height=st.integers(1, 5000),
)
def test_converted_boxes_lie_inside_the_image(
    cx: float, cy: float, w: float, h: float, width: int, height: int
) -> None:
    x, y, bw, bh = yolo.coco_box(Label(0, cx, cy, w, h), width, height)
    assert 0 <= x <= x + bw <= width + 1e-9 and 0 <= y <= y + bh <= height + 1e-9
