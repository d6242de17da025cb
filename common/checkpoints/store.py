"""Where checkpoints live and how a name or id finds one. Torch-free: the API and the workers share it.

Three sources, looked up in this order:

- `models_dir` (PRUNEBENCH_MODELS_DIR): files mounted by the operator, addressed by file name
  (`yolov5s.pt`). Inspected lazily on first use and cached by (size, mtime), so a listing does not
  re-read gigabytes; a replaced file is re-inspected and gets a new id.
- the builtin demo checkpoint (`yolov5n_shapes.pt`) when `builtin_assets` is on.
- uploads: `store_dir/checkpoints/<sha256>.pt` with `<sha256>.json` (its CheckpointInfo) beside it.
  The JSON is written last, so a checkpoint without one is an interrupted upload and is ignored.

Ids are the sha256 of the file's bytes, so the same bytes uploaded twice are one checkpoint. Each
uploader becomes one of its owners (`<sha256>.owners/<sha256 of owner name>`, one empty file per owner:
creating a file is atomic, so concurrent uploads of the same bytes never lose an owner). Mounted and
builtin checkpoints have no owner and are visible to every caller.
Names never reach the file system unchecked: path-like names are refused, and a models_dir entry
whose real path (after symlinks) leaves models_dir is treated as absent.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prunebench import DEMO_ASSETS
from prunebench.checkpoints.inspect import CheckpointError, CheckpointMeta, inspect_checkpoint
from prunebench.config import Settings
from prunebench.contract import CheckpointInfo
from prunebench.infra.files import sha256_file, write_atomic
from prunebench.jobs.store import utcnow

BUILTIN_CHECKPOINT = DEMO_ASSETS / "yolov5n_shapes.pt"
CHECKPOINT_SUFFIXES = (".pt", ".pth")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
INCOMING = ".incoming"
"""Sub-folder of the uploads folder holding uploads in flight (same file system: renames are atomic)."""

__all__ = ["CheckpointError", "CheckpointStore", "UnknownCheckpoint", "info_from_meta"]


class UnknownCheckpoint(KeyError):
    def __init__(self, ref: str, reason: str = "no such checkpoint") -> None:
        super().__init__(ref)
        self.ref = ref
        self.reason = reason


def is_plain_name(name: str) -> bool:
    """A file name, not a path: no separators, no leading dot, no NUL, not empty."""
    return bool(name) and "/" not in name and "\\" not in name and "\x00" not in name and not name.startswith(".")


def info_from_meta(
    meta: CheckpointMeta, *, sha: str, name: str, size: int, source: str, owner: str | None = None
) -> CheckpointInfo:
    return CheckpointInfo(
        id=sha,
        name=name,
        size_bytes=size,
        format=meta.format,
        num_classes=meta.num_classes,
        class_names=meta.class_names,
        source=source,
        arch=meta.arch,
        stride=meta.stride,
        owner=owner,
    )


@dataclass(frozen=True)
class _Cached:
    size: int
    mtime_ns: int
    info: CheckpointInfo | None
    error: str | None


class CheckpointStore:
    """Lists, resolves and stores checkpoints for one deployment's settings."""

    # Shared by every store in the process: inspection of a mounted file is the expensive part.
    _cache: dict[Path, _Cached] = {}  # noqa: RUF012 - deliberately process-wide
    _lock = threading.Lock()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.uploads_dir = settings.uploads_dir

    # -- mounted and builtin files ------------------------------------------------------------------

    def _describe_file(self, path: Path, name: str, source: str) -> CheckpointInfo:
        """CheckpointInfo of a mounted/builtin file, cached by (size, mtime); raises CheckpointError."""
        stat = path.stat()
        with self._lock:
            hit = self._cache.get(path)
        if hit is None or hit.size != stat.st_size or hit.mtime_ns != stat.st_mtime_ns:
            try:
                meta = inspect_checkpoint(path)
                info = info_from_meta(meta, sha=sha256_file(path), name=name, size=stat.st_size, source=source)
                hit = _Cached(stat.st_size, stat.st_mtime_ns, info, None)
            except CheckpointError as exc:
                hit = _Cached(stat.st_size, stat.st_mtime_ns, None, str(exc))
            with self._lock:
                self._cache[path] = hit
        if hit.info is None:
            raise CheckpointError(hit.error or "unreadable checkpoint")
        return hit.info

    def _models_dir_path(self, name: str) -> Path | None:
        """The file `name` in models_dir, if it is a checkpoint file that really lives there."""
        root = self.settings.models_dir
        if root is None or not is_plain_name(name) or not name.endswith(CHECKPOINT_SUFFIXES):
            return None
        try:
            real_root = root.resolve(strict=True)
            real = (root / name).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        # A symlink pointing outside the mounted folder could expose any file the API can read.
        if real.parent != real_root or not real.is_file():
            return None
        return real

    def _mounted(self) -> list[tuple[Path, str, str]]:
        """(path, name, source) of every mounted and builtin checkpoint file."""
        found: list[tuple[Path, str, str]] = []
        root = self.settings.models_dir
        if root is not None and root.is_dir():
            for entry in sorted(root.iterdir()):
                path = self._models_dir_path(entry.name)
                if path is not None:
                    found.append((path, entry.name, "models_dir"))
        if self.settings.builtin_assets and BUILTIN_CHECKPOINT.is_file():
            found.append((BUILTIN_CHECKPOINT, BUILTIN_CHECKPOINT.name, "builtin"))
        return found

    # -- uploads ------------------------------------------------------------------------------------

    def upload_path(self, sha: str) -> Path:
        return self.uploads_dir / f"{sha}.pt"

    def _upload_meta_path(self, sha: str) -> Path:
        return self.uploads_dir / f"{sha}.json"

    def _uploaded(self, sha: str) -> CheckpointInfo | None:
        meta = self._upload_meta_path(sha)
        if not SHA256_HEX.match(sha) or not meta.is_file() or not self.upload_path(sha).is_file():
            return None
        return CheckpointInfo.model_validate_json(meta.read_bytes())

    def _uploads(self) -> list[CheckpointInfo]:
        if not self.uploads_dir.is_dir():
            return []
        infos = []
        for meta in sorted(self.uploads_dir.glob("*.json")):
            info = self._uploaded(meta.stem)
            if info is not None:
                infos.append(info)
        return infos

    def _owners_dir(self, sha: str) -> Path:
        return self.uploads_dir / f"{sha}.owners"

    @staticmethod
    def _hashed_file_name(owner: str) -> str:
        # Hashed: owner and upload names could hold any character a file name must not.
        return hashlib.sha256(owner.encode("utf-8")).hexdigest()

    def add_owner(self, sha: str, owner: str) -> None:
        folder = self._owners_dir(sha)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / self._hashed_file_name(owner)).touch()

    def is_owner(self, info: CheckpointInfo, principal: str) -> bool:
        """Whether `principal` uploaded these bytes (any of its uploads counts)."""
        if info.source != "upload":
            return False
        if info.owner == principal:
            return True
        return (self._owners_dir(info.id) / self._hashed_file_name(principal)).is_file()

    def _aliases_dir(self, sha: str) -> Path:
        return self.uploads_dir / f"{sha}.names"

    def add_alias(self, sha: str, name: str) -> None:
        """Another upload of the same bytes under another file name: that name finds them too."""
        folder = self._aliases_dir(sha)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / self._hashed_file_name(name), name.encode("utf-8"))

    def has_name(self, info: CheckpointInfo, name: str) -> bool:
        return info.name == name or (self._aliases_dir(info.id) / self._hashed_file_name(name)).is_file()

    def incoming_dir(self) -> Path:
        path = self.uploads_dir / INCOMING
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_upload(self, tmp: Path, sha: str, name: str, owner: str | None) -> tuple[CheckpointInfo, bool]:
        """Inspect a fully received upload and commit it; returns (info, created).

        Raises CheckpointError (the temporary file is deleted) when it is not a usable checkpoint.
        The commit is two renames: bytes first, then the metadata JSON that makes them visible.
        """
        try:
            existing = self._uploaded(sha)
            if existing is not None:
                if owner is not None:
                    self.add_owner(sha, owner)
                if name != existing.name:
                    self.add_alias(sha, name)
                return existing.model_copy(update={"name": name}), False
            size = tmp.stat().st_size
            meta = inspect_checkpoint(tmp)
            info = info_from_meta(meta, sha=sha, name=name, size=size, source="upload", owner=owner)
            info.created_at = utcnow()
            os.replace(tmp, self.upload_path(sha))
            if owner is not None:
                self.add_owner(sha, owner)  # before the metadata that makes the upload visible
            write_atomic(self._upload_meta_path(sha), info.model_dump_json(indent=1).encode())
            return info, True
        finally:
            tmp.unlink(missing_ok=True)

    # -- lookup -------------------------------------------------------------------------------------

    def list(self) -> list[CheckpointInfo]:
        infos: list[CheckpointInfo] = []
        for path, name, source in self._mounted():
            try:
                infos.append(self._describe_file(path, name, source))
            except (CheckpointError, OSError):
                # An unusable mounted file is the operator's to fix; it must not break the listing.
                continue
        infos.extend(self._uploads())
        return infos

    def resolve(self, ref: str, visible: Callable[[CheckpointInfo], bool] | None = None) -> tuple[CheckpointInfo, Path]:
        """The checkpoint called `ref` (sha256 id or file name) and its path; raises UnknownCheckpoint.

        `visible` narrows the lookup of uploads by name to those the caller may see, so one owner's
        `det.pt` never shadows another's.
        """
        if not is_plain_name(ref):
            raise UnknownCheckpoint(ref, "checkpoint references are ids or plain file names, not paths")
        if SHA256_HEX.match(ref):
            uploaded = self._uploaded(ref)
            if uploaded is not None:
                return uploaded, self.upload_path(ref)
            for path, name, source in self._mounted():
                try:
                    info = self._describe_file(path, name, source)
                except (CheckpointError, OSError):
                    continue
                if info.id == ref:
                    return info, path
            raise UnknownCheckpoint(ref)
        mounted = self._models_dir_path(ref)
        candidates: list[tuple[Path, str, str]] = []
        if mounted is not None:
            candidates.append((mounted, ref, "models_dir"))
        if self.settings.builtin_assets and ref == BUILTIN_CHECKPOINT.name:
            candidates.append((BUILTIN_CHECKPOINT, ref, "builtin"))
        for path, name, source in candidates:
            try:
                return self._describe_file(path, name, source), path
            except CheckpointError as exc:
                raise UnknownCheckpoint(ref, f"checkpoint {ref!r} is not usable: {exc}") from exc
        # Uploads by any file name they were uploaded under: the newest one wins.
        named = [info for info in self._uploads() if self.has_name(info, ref) and (visible is None or visible(info))]
        if named:
            newest = max(named, key=lambda i: i.created_at.timestamp() if i.created_at else 0.0)
            return newest, self.upload_path(newest.id)
        raise UnknownCheckpoint(ref)
