"""Decoded images on disk, memory-mapped: decoded once per host, shared by jobs, bounded, streamed.

Decoding a split (JPEG decode + resize to ``img_size``) is the one CPU-heavy step that does not depend
on the model, so jobs on one host share it. An **entry** is one split at one size, stored as

    <root>/<key>/pixels.u8     every image's HWC BGR uint8 pixels, back to back
    <root>/<key>/index.json    per file: name, original (h, w), resized shape, byte offset

``key`` = sha256 of the decode format version, OpenCV's version, ``img_size`` and every decoded file's
(name, content sha256) (``prunebench.datasets.digests``, memoised per path + size + mtime_ns): a rewritten
image is a new entry, an untouched split is found again. Annotations are not in the key; ground truth
is read from the JSON at every job.

Concurrency (several workers on one host, each forking a work-horse per job):

* an entry is written into a private ``.tmp-*`` folder and published with one ``rename``: readers see a
  whole entry or none;
* ``<key>.lock`` (``fcntl.flock``) is held while looking up and, on a miss, decoding: a second job for
  the same split waits and then maps the first one's entry instead of decoding it again;
* eviction (least recently used first; a hit touches ``index.json``) renames an entry away and deletes
  it. A job that already mapped it keeps reading: on POSIX a mapping outlives the file's name.

Bound: entries are evicted until the total is at most ``max_bytes``. A split larger than the bound
(or any split when ``max_bytes`` is 0, or without a cache) is decoded into a private file that is
unlinked as soon as it is mapped: nothing is shared, but the job's memory stays bounded the same way.

Memory: decoding writes each image to the file as it is done (a few images in flight), and evaluation
reads each batch's images from the mapping, so a job's own memory does not grow with the dataset: the
pages of the mapping belong to the page cache, which the kernel reclaims under pressure.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from prunebench.datasets.digests import DigestMemo

FORMAT_VERSION = 1
"""Bump when what is stored changes (resize rule, layout): old entries then simply stop matching."""
PIXELS = "pixels.u8"
INDEX = "index.json"


@dataclass(frozen=True)
class StoredImage:
    """Where one decoded image lives in an entry."""

    file_name: str
    orig_hw: tuple[int, int]
    shape: tuple[int, int, int]  # resized (h, w, 3)
    offset: int

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]


@dataclass
class MappedSplit:
    """A split's decoded images, served from a read-only memory mapping (no pixels held in memory)."""

    images: list[StoredImage]
    pixels: np.ndarray  # flat uint8 memmap
    hit: bool  # found in the cache (False: decoded by this job)

    def pixels_of(self, position: int) -> np.ndarray:
        item = self.images[position]
        return self.pixels[item.offset : item.offset + item.nbytes].reshape(item.shape)


Decoder = Callable[[Path], tuple[np.ndarray, tuple[int, int]]]
"""Reads one image and returns (resized HWC uint8 pixels, original (h, w)); raises to refuse the file."""


def entry_key(img_size: int, names: Sequence[str], digests: Sequence[str]) -> str:
    identity = {
        "format": FORMAT_VERSION,
        "opencv": cv2.__version__,
        "img_size": img_size,
        "files": [[n, d] for n, d in zip(names, digests, strict=True)],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Writing and reading one entry


def _decode_into(
    folder: Path,
    paths: Sequence[Path],
    decode: Decoder,
    workers: int,
    on_progress: Callable[[int, int], None] | None,
) -> list[StoredImage]:
    """Decode ``paths`` (in order) into ``folder``: pixels appended as each finishes, then the index."""
    stored: list[StoredImage] = []
    window = max(1, 2 * workers)  # images in flight: bounds the memory decoding uses
    with (folder / PIXELS).open("wb") as fh, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: list[Future[tuple[np.ndarray, tuple[int, int]]]] = []
        submitted = 0
        for done in range(len(paths)):
            while submitted < len(paths) and len(pending) < window:
                pending.append(pool.submit(decode, paths[submitted]))
                submitted += 1
            pixels, orig_hw = pending.pop(0).result()
            pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
            stored.append(StoredImage(paths[done].name, orig_hw, tuple(pixels.shape), fh.tell()))
            fh.write(pixels.data)
            if on_progress is not None:
                on_progress(done + 1, len(paths))
        fh.flush()
        os.fsync(fh.fileno())
    index = {"format": FORMAT_VERSION, "images": [[s.file_name, *s.orig_hw, *s.shape, s.offset] for s in stored]}
    (folder / INDEX).write_text(json.dumps(index))
    return stored


def _read_index(folder: Path) -> list[StoredImage] | None:
    """The entry's index, or None when it is missing, foreign or inconsistent with its pixels file."""
    try:
        index = json.loads((folder / INDEX).read_text())
        size = (folder / PIXELS).stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("format") != FORMAT_VERSION:
        return None
    try:
        stored = [
            StoredImage(str(n), (int(h0), int(w0)), (int(h), int(w), int(c)), int(o))
            for n, h0, w0, h, w, c, o in index["images"]
        ]
    except (KeyError, TypeError, ValueError):
        return None
    expected = sum(s.nbytes for s in stored)
    return stored if expected == size else None


def _map(folder: Path, stored: list[StoredImage], hit: bool) -> MappedSplit:
    size = sum(s.nbytes for s in stored)
    pixels = np.memmap(folder / PIXELS, dtype=np.uint8, mode="r", shape=(size,)) if size else np.zeros(0, np.uint8)
    return MappedSplit(images=stored, pixels=pixels, hit=hit)


# ---------------------------------------------------------------------------------------------------------
# The cache


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    with path.open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class DecodeCache:
    """Entries under ``root``, at most ``max_bytes`` of pixels in all (least recently used go first)."""

    def __init__(self, root: Path, max_bytes: int, memo: DigestMemo | None = None) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.memo = memo or DigestMemo()

    def entries(self) -> list[tuple[str, int, float]]:
        """(key, bytes, last use) of every published entry, least recently used first."""
        found = []
        for folder in self.root.iterdir() if self.root.is_dir() else []:
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            with contextlib.suppress(OSError):
                found.append((folder.name, (folder / PIXELS).stat().st_size, (folder / INDEX).stat().st_mtime))
        return sorted(found, key=lambda e: e[2])

    def open(
        self,
        paths: Sequence[Path],
        img_size: int,
        decode: Decoder,
        workers: int = 8,
        on_progress: Callable[[int, int], None] | None = None,
        size_hint: int | None = None,
    ) -> MappedSplit:
        """The decoded split, from the cache or decoded now (and published when it fits the bound).

        ``size_hint`` (bytes, e.g. from the JSON's image sizes) lets a split that cannot fit skip the
        lock and go straight to a private file.
        """
        if self.max_bytes <= 0 or (size_hint is not None and size_hint > self.max_bytes):
            return decode_private(paths, decode, workers, on_progress, self.root)
        key = entry_key(img_size, [p.name for p in paths], self.memo.digests(paths))
        self.root.mkdir(parents=True, exist_ok=True)
        with _flock(self.root / f".{key}.lock"):
            folder = self.root / key
            stored = _read_index(folder)
            if stored is not None and [s.file_name for s in stored] == [p.name for p in paths]:
                os.utime(folder / INDEX)  # last use, for LRU
                split = _map(folder, stored, hit=True)
                if on_progress is not None:
                    on_progress(len(paths), len(paths))
                return split
            if folder.exists():
                self._discard(folder)  # unreadable or foreign: decode afresh
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
            try:
                stored = _decode_into(tmp, paths, decode, workers, on_progress)
                split = _map(tmp, stored, hit=False)
                if split.pixels.nbytes > self.max_bytes:
                    return split  # too big to share: the mapping stays valid after the folder goes
                os.rename(tmp, folder)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        self.evict(keep=key)
        return split

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove least recently used entries until the total fits ``max_bytes``; returns their keys."""
        removed = []
        with _flock(self.root / ".evict.lock"):
            entries = self.entries()
            total = sum(size for _, size, _ in entries)
            for key, size, _ in entries:
                if total <= self.max_bytes:
                    break
                if key == keep:
                    continue
                if self._discard(self.root / key):
                    removed.append(key)
                total -= size
        return removed

    def _discard(self, folder: Path) -> bool:
        trash = self.root / f".trash-{uuid.uuid4().hex}"
        try:
            os.rename(folder, trash)  # atomic: the name is gone at once; mapped pixels stay readable
        except OSError:
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True


def decode_private(
    paths: Sequence[Path],
    decode: Decoder,
    workers: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    parent: Path | None = None,
) -> MappedSplit:
    """Decode into a job-private file, mapped and unlinked at once (memory bounded, nothing shared)."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".private-", dir=parent))
    try:
        stored = _decode_into(tmp, paths, decode, workers, on_progress)
        return _map(tmp, stored, hit=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stored_size(entries: Sequence[dict[str, Any]], img_size: int) -> int:
    """Bytes a split's decoded pixels take at ``img_size``, from the JSON's width and height."""
    total = 0
    for entry in entries:
        try:
            h0, w0 = int(entry["height"]), int(entry["width"])
        except (KeyError, TypeError, ValueError):
            return 0  # unknown: let the cache decide after decoding
        r = img_size / max(h0, w0, 1)
        total += (math.ceil(h0 * r) * math.ceil(w0 * r) if r != 1 else h0 * w0) * 3
    return total
