"""Resize, rect batch shapes and letterboxing follow upstream val.py's semantics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunebench.datasets.catalog import DatasetSpec
from prunebench.worker.engine.data import (
    PAD_VALUE,
    DatasetError,
    DecodedDataset,
    DecodedImage,
    aspect_order,
    batch_shape,
    decode_dataset,
    grid_stride,
    input_gain,
    letterbox,
    make_batches,
    resize_long_side,
    to_chw_rgb,
)

sizes = st.integers(min_value=1, max_value=700)
img_sizes = st.sampled_from([32, 64, 160, 320, 416, 640])


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@settings(max_examples=60, deadline=None)
@given(h0=sizes, w0=sizes, img_size=img_sizes)
def test_resize_rounds_up_and_picks_interpolation(h0: int, w0: int, img_size: int) -> None:
    image = _noise(h0, w0)
    out = resize_long_side(image, img_size)
    r = img_size / max(h0, w0)
    if r == 1:
        assert out is image
        return
    expected_size = (math.ceil(w0 * r), math.ceil(h0 * r))
    assert (out.shape[1], out.shape[0]) == expected_size
    interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
    np.testing.assert_array_equal(out, cv2.resize(image, expected_size, interpolation=interp))


def test_resize_examples() -> None:
    assert resize_long_side(_noise(423, 280), 320).shape[:2] == (320, 212)  # 211.8 rounds up
    assert resize_long_side(_noise(100, 50), 320).shape[:2] == (320, 160)  # enlarges too


def test_batch_shape_examples() -> None:
    # All landscape: height from the tallest, plus half a stride, rounded up to the stride.
    assert batch_shape([0.5, 0.75], 320, 32) == (256, 352)
    # All portrait: width from the widest.
    assert batch_shape([1.5, 2.0], 320, 32) == (352, 256)
    # Mixed: square.
    assert batch_shape([0.9, 1.1], 320, 32) == (352, 352)
    assert batch_shape([1.0], 640, 32) == (672, 672)


@settings(max_examples=100, deadline=None)
@given(
    hw=st.lists(st.tuples(sizes, sizes), min_size=1, max_size=8),
    img_size=img_sizes,
    stride=st.sampled_from([32, 64]),
)
def test_batch_shape_fits_every_resized_image(hw: list[tuple[int, int]], img_size: int, stride: int) -> None:
    shape = batch_shape([h / w for h, w in hw], img_size, stride)
    assert shape[0] % stride == 0 and shape[1] % stride == 0
    for h0, w0 in hw:
        r = img_size / max(h0, w0)
        # With half a stride of padding the letterbox never has to shrink an image.
        assert math.ceil(h0 * r) <= shape[0] and math.ceil(w0 * r) <= shape[1]


@settings(max_examples=80, deadline=None)
@given(h=st.integers(1, 120), w=st.integers(1, 120), extra_h=st.integers(0, 40), extra_w=st.integers(0, 40))
def test_letterbox_centres_without_scaling(h: int, w: int, extra_h: int, extra_w: int) -> None:
    image = _noise(h, w, seed=h * 1000 + w)
    boxed = letterbox(image, (h + extra_h, w + extra_w))
    assert boxed.pixels.shape == (h + extra_h, w + extra_w, 3)
    assert boxed.gain == 1.0
    assert boxed.pad == (extra_w / 2, extra_h / 2)
    top, left = round(extra_h / 2 - 0.1), round(extra_w / 2 - 0.1)
    np.testing.assert_array_equal(boxed.pixels[top : top + h, left : left + w], image)
    border = np.ones(boxed.pixels.shape[:2], dtype=bool)
    border[top : top + h, left : left + w] = False
    assert (boxed.pixels[border] == PAD_VALUE).all()


@pytest.mark.parametrize(
    ("extra", "before", "after"),
    [(0, 0, 0), (1, 0, 1), (2, 1, 1), (3, 1, 2), (4, 2, 2), (5, 2, 3), (7, 3, 4), (10, 5, 5)],
)
def test_letterbox_odd_pixel_goes_bottom_right(extra: int, before: int, after: int) -> None:
    image = np.full((10, 10, 3), 7, dtype=np.uint8)
    boxed = letterbox(image, (10 + extra, 10 + extra))
    rows = np.flatnonzero(boxed.pixels[:, :, 0].min(1) == 7)
    cols = np.flatnonzero(boxed.pixels[:, :, 0].min(0) == 7)
    assert (rows[0], boxed.pixels.shape[0] - 1 - rows[-1]) == (before, after)
    assert (cols[0], boxed.pixels.shape[1] - 1 - cols[-1]) == (before, after)


def test_letterbox_shrinks_when_target_is_smaller() -> None:
    boxed = letterbox(_noise(100, 200), (64, 64))
    assert boxed.pixels.shape == (64, 64, 3)
    assert boxed.gain == pytest.approx(0.32)
    assert boxed.pad == (0.0, 16.0)


def test_aspect_order_and_batches() -> None:
    hw = [(100, 200), (300, 100), (100, 100), (150, 200), (200, 100)]
    order = aspect_order(hw)
    assert order == [0, 3, 2, 4, 1]
    images = [DecodedImage(i, f"{i}.jpg", resize_long_side(_noise(*hw[i]), 64), hw[i]) for i in order]
    batches = make_batches(DecodedDataset("x", 64, images), batch_size=2, stride=32)
    assert [b.indices for b in batches] == [[0, 1], [2, 3], [4]]
    assert batches[0].shape == batch_shape([0.5, 0.75], 64, 32)
    assert batches[1].shape == (96, 96)  # ratios 1.0 and 2.0: mixed -> square
    assert batches[2].shape == batch_shape([3.0], 64, 32)


def test_grid_stride_and_gain() -> None:
    assert grid_stride(8.0) == 32 and grid_stride(64.0) == 64
    image = DecodedImage(1, "a.jpg", resize_long_side(_noise(423, 280), 320), (423, 280))
    assert input_gain(image, 1.0) == 320 / 423
    assert input_gain(image, 0.5) == pytest.approx(160 / 423)


def test_chw_rgb() -> None:
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    image[..., 0] = 1  # blue in BGR
    out = to_chw_rgb(image)
    assert out.shape == (3, 2, 3) and out.flags.c_contiguous
    assert (out[2] == 1).all() and (out[0] == 0).all()


# ---------------------------------------------------------------------------------------------------------
# Decoding a dataset


def _dataset(tmp_path: Path, files: dict[str, tuple[int, int] | bytes], annotated: set[str]) -> DatasetSpec:
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    entries, annotations = [], []
    for i, (name, content) in enumerate(sorted(files.items()), start=1):
        if isinstance(content, bytes):
            (images_dir / name).write_bytes(content)
            h, w = 10, 10
        elif content != (0, 0):
            h, w = content
            cv2.imwrite(str(images_dir / name), _noise(h, w, seed=i))
        else:
            h, w = 10, 10  # listed but absent on disk
        entries.append({"id": i, "file_name": name, "height": h, "width": w})
        if name in annotated:
            annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": 0})
    instances = {"images": entries, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(instances))
    return DatasetSpec(name="tiny", images_dir=images_dir, annotations=path)


def test_decode_keeps_unannotated_images_and_orders_by_aspect(tmp_path: Path) -> None:
    spec = _dataset(tmp_path, {"a.png": (40, 80), "b.png": (90, 30), "c.png": (50, 50)}, annotated={"a.png"})
    decoded = decode_dataset(spec, 64)
    assert [im.file_name for im in decoded.images] == ["a.png", "c.png", "b.png"]
    assert [im.orig_hw for im in decoded.images] == [(40, 80), (50, 50), (90, 30)]
    assert decoded.images[0].resized_hw == (32, 64)
    assert decoded.instances == 1
    assert decoded.images[0].truths[0].box == (1.0, 2.0, 4.0, 6.0)
    assert decoded.images[1].truths == []


def test_decode_respects_max_images(tmp_path: Path) -> None:
    spec = _dataset(tmp_path, {"a.png": (40, 80), "b.png": (90, 30), "c.png": (50, 50)}, annotated=set())
    calls: list[tuple[int, int]] = []
    decoded = decode_dataset(spec, 64, max_images=2, on_progress=lambda d, t: calls.append((d, t)))
    assert sorted(im.file_name for im in decoded.images) == ["a.png", "b.png"]
    assert calls[-1] == (2, 2)


def test_decode_missing_image_is_a_clear_error(tmp_path: Path) -> None:
    spec = _dataset(tmp_path, {"a.png": (40, 80), "gone.png": (0, 0)}, annotated=set())
    with pytest.raises(DatasetError, match=r"image not found: .*gone\.png"):
        decode_dataset(spec, 64)


def test_decode_skips_a_corrupt_image_with_a_warning(tmp_path: Path) -> None:
    spec = _dataset(tmp_path, {"a.png": (40, 80), "bad.jpg": b"not an image"}, annotated={"bad.jpg"})
    decoded = decode_dataset(spec, 64)
    assert [im.file_name for im in decoded.images] == ["a.png"] and decoded.instances == 0
    assert decoded.warnings[0].startswith("skipped 1 corrupt image(s), not evaluated: bad.jpg: corrupt")


def test_decode_refuses_a_split_with_no_usable_image(tmp_path: Path) -> None:
    spec = _dataset(tmp_path, {"bad.jpg": b"not an image"}, annotated=set())
    with pytest.raises(DatasetError, match="all 1 are corrupt"):
        decode_dataset(spec, 64)
