"""Real-world instances files and image folders give the right mAP, or say why they cannot.

The cases are COCO instances over the bundled demo images (tests/fixtures/cases, from the issue's
shared failing inputs); the reference is `orig20.json` (the first 20 demo images): mAP@.5:.95 0.3254
at img 320 with the demo checkpoint. Every other file of the same images must score exactly that, or
that over the images it can evaluate, with a warning saying what was normalised or skipped.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from prunebench.contract import JobRequest, JobResult
from prunebench.datasets.catalog import DatasetSpec
from prunebench.worker.engine.data import decode_dataset, network_size
from prunebench.worker.engine.pipeline import PipelineError, run_local, settings_warnings
from tests.support.paths import DEMO_CHECKPOINT, DEMO_DIR

CASES = Path(__file__).resolve().parents[1] / "fixtures" / "cases" / "datasets"
IMAGES = DEMO_DIR / "shapes-val" / "images"
REFERENCE_MAP = 0.3254  # orig20.json at img 320 (the issue's reference value)


def run(annotations: Path, images: Path = IMAGES, **fields: Any) -> JobResult:
    spec = DatasetSpec(name="case", images_dir=images, annotations=annotations)
    request = {"checkpoint": "c.pt", "dataset": "case", "sparsities": [0.0], "include_dense": False}
    request.update({"img_size": 320, "device": "cpu", **fields})
    return run_local(JobRequest.model_validate(request), DEMO_CHECKPOINT, spec)


def orig20() -> dict[str, Any]:
    return json.loads((CASES / "orig20.json").read_text())


def write(path: Path, instances: dict[str, Any]) -> Path:
    path.write_text(json.dumps(instances))
    return path


@pytest.fixture(scope="module")
def reference() -> JobResult:
    return run(CASES / "orig20.json")


def test_reference_scores_the_issue_value_by_name_without_warnings(reference: JobResult) -> None:
    assert reference.runs[0].metrics.map == pytest.approx(REFERENCE_MAP, abs=5e-5)
    assert reference.warnings == [] and reference.runs[0].warnings == []
    assert reference.settings["category_map"] == "names"  # the demo model's COCO names match the shapes'


def test_a_job_on_duplicate_image_ids_fails_before_any_model_or_image_work() -> None:
    with pytest.raises(PipelineError, match=r"\(a_duplicate_image_ids.json\): duplicate image ids 1, 2, 3"):
        run(CASES / "a_duplicate_image_ids.json")


def test_restarting_annotation_ids_score_the_reference_with_a_warning(reference: JobResult) -> None:
    result = run(CASES / "b_ann_ids_restart_per_image.json")
    assert result.runs[0].metrics == reference.runs[0].metrics
    assert result.runs[0].instances == reference.runs[0].instances == 74
    assert any("renumbered 1..74" in w for w in result.warnings)


@pytest.mark.parametrize("name", ["no_iscrowd.json", "no_area.json"])
def test_missing_iscrowd_or_area_are_defaulted(reference: JobResult, name: str) -> None:
    # The first 20 images by file name are orig20's.
    result = run(CASES / name, max_images=20)
    assert result.runs[0].metrics == reference.runs[0].metrics
    assert any("have no" in w for w in result.warnings)


def test_alphabetical_category_ids_are_mapped_by_name(tmp_path: Path, reference: JobResult) -> None:
    # The same boxes with ids assigned alphabetically by a labelling tool (airplane=1, ..., person=5).
    data = orig20()
    names = {c["id"]: c["name"] for c in data["categories"]}
    new_id = {name: i for i, name in enumerate(sorted(names.values()), start=1)}
    data["categories"] = [{**c, "id": new_id[c["name"]]} for c in data["categories"]]
    for ann in data["annotations"]:
        ann["category_id"] = new_id[names[ann["category_id"]]]
    result = run(write(tmp_path / "alpha.json", data))
    assert result.settings["category_map"] == "names"
    assert result.runs[0].metrics == reference.runs[0].metrics


def test_roboflow_root_category_and_string_image_ids(tmp_path: Path, reference: JobResult) -> None:
    # Roboflow's export: an unused root category 0 named after the dataset; ids as strings (pycocotools
    # accepts them).
    data = orig20()
    data["categories"] = [{"id": 0, "name": "shapes-abc", "supercategory": "none"}] + [
        {**c, "supercategory": "shapes-abc"} for c in data["categories"]
    ]
    for image in data["images"]:
        image["id"] = f"img-{image['id']}"
    for ann in data["annotations"]:
        ann["image_id"] = f"img-{ann['image_id']}"
    result = run(write(tmp_path / "roboflow.json", data))
    assert result.runs[0].metrics == reference.runs[0].metrics
    assert result.dataset.categories[0] == {"id": 0, "name": "shapes-abc"}


def test_img_size_is_rounded_up_to_the_stride_as_upstream(reference: JobResult) -> None:
    result = run(CASES / "orig20.json", img_size=300)
    assert result.settings["img_size"] == 320 and result.settings["requested_img_size"] == 300
    assert result.runs[0].metrics == reference.runs[0].metrics
    assert any("img_size 300" in w and "evaluated at 320" in w for w in result.warnings)


def test_network_size_rounds_up_to_the_largest_stride() -> None:
    assert network_size(300, 32) == 320
    assert network_size(320, 32) == 320
    assert network_size(352, 64) == 384  # P6 models
    assert network_size(100, 8) == 128  # never a grid below 32


def test_p6_sizes_round_to_stride_64_and_say_so() -> None:
    request = JobRequest(checkpoint="c.pt", dataset="case", sparsity=0.0, img_size=352)
    [warning] = settings_warnings(request, 64.0)
    assert "largest stride 64: evaluated at 384" in warning
    assert settings_warnings(request.model_copy(update={"img_size": 384}), 64.0) == []


def no_small_objects() -> dict[str, Any]:
    data = orig20()
    data["annotations"] = [a for a in data["annotations"] if a["area"] > 32**2]
    return data


def test_no_small_objects_keep_small_stats_at_minus_one_even_without_detections(tmp_path: Path) -> None:
    path = write(tmp_path / "large.json", no_small_objects())
    normal = run(path)
    assert normal.runs[0].metrics.map_small == normal.runs[0].metrics.ar_small == -1.0
    blind = run(path, conf_thres=1.0)  # nothing passes NMS: no detection at all
    metrics = blind.runs[0].metrics
    assert (metrics.map_small, metrics.ar_small) == (-1.0, -1.0)
    assert (metrics.map, metrics.map_medium, metrics.ar100) == (0.0, 0.0, 0.0)
    assert any("conf_thres 1 > 0.001" in w and "not comparable" in w for w in blind.warnings)


def corrupt_copy(root: Path) -> Path:
    images = root / "images"
    shutil.copytree(IMAGES, images, ignore=lambda _, names: [n for n in names if n > "000000000020.jpg"])
    data = (images / "000000000003.jpg").read_bytes()
    (images / "000000000003.jpg").write_bytes(data[: len(data) // 2])  # truncated mid-scan
    (images / "000000000007.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return images


def test_corrupt_and_truncated_images_are_skipped_and_listed(tmp_path: Path) -> None:
    images = corrupt_copy(tmp_path)
    result = run(CASES / "orig20.json", images=images)
    data = orig20()
    data["images"] = [im for im in data["images"] if im["file_name"] not in ("000000000003.jpg", "000000000007.jpg")]
    expected = run(write(tmp_path / "18.json", data))
    assert result.runs[0].images == 18
    assert result.runs[0].metrics == expected.runs[0].metrics  # the skipped images' truths are not counted
    [warning] = result.warnings
    assert "skipped 2 corrupt image(s)" in warning and "000000000003.jpg: truncated JPEG" in warning
    assert "000000000007.jpg: corrupt" in warning


def test_decoded_size_other_than_the_json_size_is_named(tmp_path: Path) -> None:
    data = orig20()
    rotated = copy.deepcopy(data["images"][4])
    data["images"][4] = {**rotated, "width": rotated["height"], "height": rotated["width"]}
    spec = DatasetSpec(name="case", images_dir=IMAGES, annotations=write(tmp_path / "rot.json", data))
    decoded = decode_dataset(spec, 64)
    [warning] = decoded.warnings
    name = rotated["file_name"]
    size = f"JSON {rotated['height']}x{rotated['width']}, decoded {rotated['width']}x{rotated['height']}"
    assert warning.startswith("1 image(s) decode at another size") and f"{name}: {size} (EXIF rotation?)" in warning
    result = run(spec.annotations, max_images=5)
    assert result.warnings == [warning]
