"""The result cache key tells apart requests whose results differ, fine-tuning included."""

from __future__ import annotations

import os
from pathlib import Path

from prunebench.contract import JobRequest
from prunebench.datasets.catalog import load_catalog, yolo_datasets
from prunebench.jobs.result_cache import cache_key
from tests.support.paths import DEMO_DIR

BASE = {"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": 0.3}


def test_finetune_settings_and_training_data_are_part_of_the_key() -> None:
    catalog = load_catalog(None)
    val, train = catalog["shapes-val"], catalog["shapes-train-mini"]
    plain = cache_key(JobRequest(**BASE), "ckpt", val)
    tuned = JobRequest(**BASE, finetune={"dataset": "shapes-train-mini", "epochs": 5})
    longer = JobRequest(**BASE, finetune={"dataset": "shapes-train-mini", "epochs": 6})
    keys = {
        plain,
        cache_key(tuned, "ckpt", val, train_dataset=train),
        cache_key(longer, "ckpt", val, train_dataset=train),
    }
    assert len(keys) == 3
    assert cache_key(tuned, "ckpt", val, train_dataset=train) == cache_key(tuned, "ckpt", val, train_dataset=train)


def test_editing_a_yolo_label_file_changes_the_key(tmp_path: Path) -> None:
    for split in ("train", "val"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "labels").mkdir(parents=True)
        image = DEMO_DIR / "shapes-val" / "images" / "000000000001.jpg"
        (tmp_path / split / "images" / "1.jpg").write_bytes(image.read_bytes())
        (tmp_path / split / "labels" / "1.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data = tmp_path / "data.yaml"
    data.write_text("train: train/images\nval: val/images\nnames: [a]\n")
    val = yolo_datasets(data, prefix="d")["d-val"]
    request = JobRequest(**{**BASE, "dataset": "d-val"})
    before = cache_key(request, "ckpt", val)
    label = tmp_path / "val" / "labels" / "1.txt"
    label.write_text("0 0.5 0.5 0.3 0.2\n")
    stat = label.stat()
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cache_key(request, "ckpt", yolo_datasets(data, prefix="d")["d-val"]) != before


def test_recovery_steps_and_calibration_data_are_part_of_the_key() -> None:
    catalog = load_catalog(None)
    val, train = catalog["shapes-val"], catalog["shapes-train-mini"]
    channel = {**BASE, "method": "channel"}
    plain = JobRequest(**channel)
    recalibrated = JobRequest(**channel, recovery=["bn_recalibration"])
    fewer = JobRequest(**channel, recovery=["bn_recalibration"], calibration={"images": 64})
    elsewhere = JobRequest(**channel, recovery=["bn_recalibration"], calibration={"dataset": "shapes-train-mini"})
    keys = {
        cache_key(plain, "ckpt", val),
        cache_key(recalibrated, "ckpt", val),
        cache_key(fewer, "ckpt", val),
        cache_key(elsewhere, "ckpt", val, calibration_dataset=train),
        cache_key(JobRequest(**channel, importance="taylor"), "ckpt", val),
    }
    assert len(keys) == 5
