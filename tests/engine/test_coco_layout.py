"""The real COCO val2017 loading path, on a COCO-layout miniature built here.

Same folder layout, file naming, category ids (the 91-id scheme with COCO's 80 classes) and catalog
entry as README documents for the real `val2017/` + `annotations/instances_val2017.json`, including
images that have no annotations (val2017 has 48): those are evaluated, as upstream does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from prunebench.contract import JobRequest
from prunebench.datasets.catalog import BUILTIN_ROOT, COCO80_TO_91, load_catalog, resolve_dataset
from prunebench.worker.engine.pipeline import run_local

CHECKPOINT = BUILTIN_ROOT / "yolov5n_shapes.pt"
SOURCE = BUILTIN_ROOT / "shapes-val"
ANNOTATED, UNANNOTATED = 10, 3


def build_coco_miniature(root: Path) -> Path:
    """A coco/ tree: val2017/<12-digit id>.jpg and annotations/instances_val2017.json; returns a catalog."""
    source = json.loads((SOURCE / "instances_val2017.json").read_text())
    chosen = source["images"][: ANNOTATED + UNANNOTATED]
    chosen_ids = {im["id"] for im in chosen}
    unannotated = {im["id"] for im in chosen[ANNOTATED:]}
    images_dir = root / "coco" / "val2017"
    images_dir.mkdir(parents=True)
    images = []
    for im in chosen:
        coco_id = 139 + im["id"]  # real val2017 ids are sparse, not 1..N
        file_name = f"{coco_id:012d}.jpg"
        shutil.copy(SOURCE / "images" / im["file_name"], images_dir / file_name)
        images.append({**im, "id": coco_id, "file_name": file_name})
    annotations = [
        {**ann, "image_id": 139 + ann["image_id"]}
        for ann in source["annotations"]
        if ann["image_id"] in chosen_ids and ann["image_id"] not in unannotated
    ]
    names = [c["name"] for c in source["categories"]] + [f"class{i}" for i in range(5, 80)]
    categories = [{"id": cid, "name": names[i], "supercategory": "x"} for i, cid in enumerate(COCO80_TO_91)]
    (root / "coco" / "annotations").mkdir()
    instances = {"images": images, "annotations": annotations, "categories": categories}
    (root / "coco" / "annotations" / "instances_val2017.json").write_text(json.dumps(instances))
    catalog = root / "catalog.yaml"
    catalog.write_text(
        "coco-val2017:\n  images: coco/val2017\n  annotations: coco/annotations/instances_val2017.json\n"
    )
    return catalog


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory):
    catalog = build_coco_miniature(tmp_path_factory.mktemp("coco-mini"))
    return resolve_dataset(load_catalog(catalog, include_builtin=False), "coco-val2017")


def test_catalog_entry_describes_coco(coco) -> None:
    info = coco.info()
    assert info.is_coco and info.images == ANNOTATED + UNANNOTATED and len(info.categories) == 80
    assert coco.class_to_category(80) == list(COCO80_TO_91)


def test_images_without_annotations_are_evaluated(coco) -> None:
    request = JobRequest(
        checkpoint=CHECKPOINT.name, dataset="coco-val2017", sparsity=0.2, img_size=320, batch_size=4, device="cpu"
    )
    result = run_local(request, CHECKPOINT, coco)
    assert result.dataset.is_coco
    dense, pruned = result.runs
    assert dense.images == ANNOTATED + UNANNOTATED
    expected_instances = len(json.loads(coco.annotations.read_text())["annotations"])
    assert dense.instances == expected_instances > 0
    assert 0.0 < dense.metrics.map <= 1.0 and 0.0 <= pruned.metrics.map <= 1.0
