"""Dataset identity is content: a rewritten image is a new result-cache key; unchanged files are hashed once."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from prunebench.contract import JobRequest
from prunebench.datasets import digests
from prunebench.datasets.catalog import DatasetSpec, builtin_datasets
from prunebench.datasets.digests import MISSING, DigestMemo, dataset_digest
from prunebench.jobs.result_cache import cache_key


@pytest.fixture
def dataset(tmp_path: Path) -> DatasetSpec:
    source = builtin_datasets()["shapes-val"]
    images = tmp_path / "images"
    images.mkdir()
    instances = dict(source.instances)
    instances["images"] = source.instances["images"][:3]
    for entry in instances["images"]:
        shutil.copy(source.images_dir / entry["file_name"], images / entry["file_name"])
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps(instances))
    return DatasetSpec(name="tiny", images_dir=images, annotations=annotations)


def _key(dataset: DatasetSpec, memo: DigestMemo) -> str:
    request = JobRequest(checkpoint="x.pt", dataset=dataset.name, sparsity=0.3)
    return cache_key(request, "c" * 64, DatasetSpec(dataset.name, dataset.images_dir, dataset.annotations), memo)


def test_an_image_rewritten_in_place_is_a_new_key(dataset: DatasetSpec, tmp_path: Path) -> None:
    memo = DigestMemo(tmp_path / "memo.sqlite")
    before = _key(dataset, memo)
    assert _key(dataset, memo) == before
    folder_mtime = dataset.images_dir.stat().st_mtime_ns
    image = dataset.images_dir / sorted(os.listdir(dataset.images_dir))[0]
    data = bytearray(image.read_bytes())
    data[-3] ^= 0xFF  # same size, same name, same folder: only the content differs
    image.write_bytes(bytes(data))
    assert dataset.images_dir.stat().st_mtime_ns == folder_mtime  # what the old key looked at
    assert _key(dataset, memo) != before


def test_digests_are_the_files_sha256_and_shared_across_processes(dataset: DatasetSpec, tmp_path: Path) -> None:
    memo_file = tmp_path / "memo.sqlite"
    image = next(dataset.images_dir.iterdir())
    assert DigestMemo(memo_file).digest(image) == hashlib.sha256(image.read_bytes()).hexdigest()
    digests._memo.clear()  # a new work-horse: nothing in process memory, the host memo still knows

    def refuse(path: Path) -> str:
        raise AssertionError(f"{path} was hashed again")

    original = digests.sha256_file
    digests.sha256_file = refuse
    try:
        assert DigestMemo(memo_file).digest(image) == hashlib.sha256(image.read_bytes()).hexdigest()
    finally:
        digests.sha256_file = original


def test_a_changed_size_or_mtime_is_hashed_again(dataset: DatasetSpec, tmp_path: Path) -> None:
    memo = DigestMemo(tmp_path / "memo.sqlite")
    image = next(dataset.images_dir.iterdir())
    first = memo.digest(image)
    image.write_bytes(image.read_bytes() + b"\0")
    assert memo.digest(image) != first


def test_a_missing_image_has_a_key_that_changes_when_it_appears(dataset: DatasetSpec, tmp_path: Path) -> None:
    memo = DigestMemo(tmp_path / "memo.sqlite")
    names = [e["file_name"] for e in dataset.instances["images"]]
    moved = tmp_path / "away.jpg"
    shutil.move(dataset.images_dir / names[0], moved)
    assert memo.digests([dataset.images_dir / names[0]]) == [MISSING]
    absent = dataset_digest(dataset.annotations, dataset.images_dir, names, memo)
    shutil.move(moved, dataset.images_dir / names[0])
    assert dataset_digest(dataset.annotations, dataset.images_dir, names, memo) != absent
