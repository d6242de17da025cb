"""The decode cache: decoded once per host, shared safely by concurrent jobs, invalidated by content, bounded."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from prunebench.datasets.catalog import builtin_datasets
from prunebench.datasets.digests import DigestMemo
from prunebench.worker.engine.data import decode_dataset, read_image, resize_long_side
from prunebench.worker.engine.decode_cache import DecodeCache, stored_size

IMG = 64


def _decoder(log: Path | None = None):
    def decode(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        if log is not None:
            with log.open("a") as fh:
                fh.write(f"{os.getpid()} {path.name}\n")
        image = read_image(path)
        return resize_long_side(image, IMG), (int(image.shape[0]), int(image.shape[1]))

    return decode


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    source = builtin_datasets()["shapes-val"]
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for entry in source.instances["images"][:6]:
        shutil.copy(source.images_dir / entry["file_name"], folder / entry["file_name"])
        paths.append(folder / entry["file_name"])
    return paths


def _cache(tmp_path: Path, max_bytes: int = 1 << 30) -> DecodeCache:
    return DecodeCache(tmp_path / "cache", max_bytes, DigestMemo(tmp_path / "memo.sqlite"))


def test_second_open_is_a_hit_with_the_same_pixels(tmp_path: Path, images: list[Path]) -> None:
    log = tmp_path / "decodes.log"
    cache = _cache(tmp_path)
    first = cache.open(images, IMG, _decoder(log))
    second = cache.open(images, IMG, _decoder(log))
    assert not first.hit and second.hit
    assert len(log.read_text().splitlines()) == len(images)  # decoded once
    for k, path in enumerate(images):
        expected = resize_long_side(read_image(path), IMG)
        assert np.array_equal(second.pixels_of(k), expected)
        assert isinstance(second.pixels, np.memmap)  # served from the file, not held in memory


def _open_in_child(root: str, memo: str, paths: list[str], log: str, out: str) -> None:
    cache = DecodeCache(Path(root), 1 << 30, DigestMemo(Path(memo)))
    split = cache.open([Path(p) for p in paths], IMG, _decoder(Path(log)))
    np.save(out, np.concatenate([split.pixels_of(k).ravel() for k in range(len(paths))]))


def test_concurrent_jobs_decode_once_and_agree(tmp_path: Path, images: list[Path]) -> None:
    log = tmp_path / "decodes.log"
    ctx = multiprocessing.get_context("fork")
    args = [str(tmp_path / "cache"), str(tmp_path / "memo.sqlite"), [str(p) for p in images], str(log)]
    children = [ctx.Process(target=_open_in_child, args=(*args, str(tmp_path / f"out{i}.npy"))) for i in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    decoders = {line.split()[0] for line in log.read_text().splitlines()}
    assert len(log.read_text().splitlines()) == len(images) and len(decoders) == 1  # one process decoded
    outputs = [np.load(tmp_path / f"out{i}.npy") for i in range(3)]
    assert all(np.array_equal(outputs[0], o) for o in outputs[1:])
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp-")]  # nothing half-written


def test_a_rewritten_image_is_a_new_entry(tmp_path: Path, images: list[Path]) -> None:
    cache = _cache(tmp_path)
    cache.open(images, IMG, _decoder())
    shutil.copy(images[1], images[0])  # same name, other content
    again = cache.open(images, IMG, _decoder())
    assert not again.hit
    assert np.array_equal(again.pixels_of(0), resize_long_side(read_image(images[1]), IMG))
    assert len(cache.entries()) == 2
    assert cache.open(images, IMG * 2, _decoder()).hit is False  # another size, another entry


def test_least_recently_used_entries_go_first_and_the_bound_holds(tmp_path: Path, images: list[Path]) -> None:
    one = _cache(tmp_path).open(images[:3], IMG, _decoder()).pixels.nbytes
    cache = _cache(tmp_path, max_bytes=2 * one + one // 2)  # room for two splits of that size
    a, b, c = images[:3], images[3:6], images[1:4]
    cache.open(b, IMG, _decoder())
    assert cache.open(a, IMG, _decoder()).hit  # a is now the most recently used
    kept_mapping = cache.open(b, IMG, _decoder())
    os.utime(cache.root / cache.entries()[-1][0] / "index.json", (1, 1))  # make b the oldest again
    cache.open(c, IMG, _decoder())
    sizes = [size for _, size, _ in cache.entries()]
    assert sum(sizes) <= cache.max_bytes and len(sizes) == 2
    assert cache.open(a, IMG, _decoder()).hit and not cache.open(b, IMG, _decoder()).hit
    # A job that had b mapped when it was evicted still reads its pixels.
    assert np.array_equal(kept_mapping.pixels_of(0), resize_long_side(read_image(b[0]), IMG))


def test_a_split_bigger_than_the_bound_is_decoded_privately(tmp_path: Path, images: list[Path]) -> None:
    cache = _cache(tmp_path, max_bytes=10)
    split = cache.open(images, IMG, _decoder())
    assert not split.hit and cache.entries() == []
    assert np.array_equal(split.pixels_of(2), resize_long_side(read_image(images[2]), IMG))
    assert not [p for p in cache.root.iterdir() if not p.name.startswith(".") or p.is_dir()]


def test_a_corrupt_entry_is_decoded_again(tmp_path: Path, images: list[Path]) -> None:
    cache = _cache(tmp_path)
    cache.open(images, IMG, _decoder())
    key = cache.entries()[0][0]
    with (cache.root / key / "pixels.u8").open("ab") as fh:
        fh.write(b"junk")  # size no longer matches the index
    assert not cache.open(images, IMG, _decoder()).hit
    assert cache.open(images, IMG, _decoder()).hit


def test_decode_dataset_through_the_cache_equals_a_private_decode(tmp_path: Path) -> None:
    spec = builtin_datasets()["shapes-val"]
    cache = _cache(tmp_path)
    private = decode_dataset(spec, IMG, max_images=8)
    cached = decode_dataset(spec, IMG, max_images=8, cache=cache)
    again = decode_dataset(spec, IMG, max_images=8, cache=cache)
    for a, b, c in zip(private.images, cached.images, again.images, strict=True):
        assert a.image_id == b.image_id == c.image_id and a.orig_hw == b.orig_hw == c.orig_hw
        assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.pixels, c.pixels)
    hint = stored_size(spec.instances["images"][:8], IMG)
    assert hint == cache.entries()[0][1]  # the JSON sizes predict the stored bytes exactly


def test_stored_size_of_unknown_sizes_is_zero() -> None:
    assert stored_size([{"file_name": "a.jpg"}], 64) == 0
