"""Where checkpoints live and how a name or id finds one. Torch-free: the API and the workers share it.

Three sources, looked up in this order:

- `models_dir` (PRUNEBENCH_MODELS_DIR): files mounted by the operator, addressed by file name
  (`yolov5s.pt`). Inspected lazily on first use and cached by (size, mtime), so a listing does not
  re-read gigabytes; a replaced file is re-inspected and gets a new id.
- the builtin demo checkpoint (`yolov5n_shapes.pt`) when `builtin_assets` is on.
- uploads: `store_dir/checkpoints/<sha256>.pt` with `<sha256>.json` (its CheckpointInfo) beside it.
  The JSON is written last, so a checkpoint without one is an interrupted upload and is ignored.

Ids are the sha256 of the file's bytes, so the same bytes uploaded twice are one checkpoint (one blob).
Each uploader becomes one of its owners with its own view of the blob
(`<sha256>.owners/<sha256 of owner name>`, one JSON file per owner: the names it uploaded the bytes
under and when it first did). An owner sees only its view: another owner's file name, upload time or
existence never shows in its listing, lookups by name or upload answers (a new owner's upload of known
bytes is a 201 like any new upload). Files per owner, so concurrent uploads never lose an owner; an
empty owner file (older deployments) means the blob's own name and time. Mounted and builtin
checkpoints have no owner and are visible to every caller.

A mounted file prunebench cannot load is listed with ``usable: false`` and its ``problem``; it never
breaks the listing or lookups of other checkpoints (whatever the inspector or the file system raises).
Names never reach the file system unchecked: path-like names are refused, and a models_dir entry
whose real path (after symlinks) leaves models_dir is treated as absent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
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

log = logging.getLogger(__name__)
MAX_NAMES_PER_OWNER = 100
"""Most file names one owner's view of a blob remembers (the oldest beyond that are dropped)."""


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
class _View:
    """One owner's view of an uploaded blob: the names it uploaded it under (first first) and when."""

    names: tuple[str, ...]
    created_at: datetime | None


@dataclass(frozen=True)
class _Cached:
    size: int
    mtime_ns: int
    info: CheckpointInfo | None
    error: str | None
    sha: str = ""  # of an unusable file, for its listing entry


def _sha_or_empty(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError:
        return ""


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
            except Exception as exc:  # any failure makes this one file unusable, nothing more
                reason = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
                hit = _Cached(stat.st_size, stat.st_mtime_ns, None, reason[:500], _sha_or_empty(path))
            with self._lock:
                self._cache[path] = hit
        if hit.info is None:
            raise CheckpointError(hit.error or "unreadable checkpoint")
        return hit.info

    def _unusable(self, path: Path, name: str, source: str, reason: str) -> CheckpointInfo:
        """The listing entry of a mounted file that cannot be loaded (its id is still its sha256, hashed once)."""
        with self._lock:
            hit = self._cache.get(path)
        sha, size = (hit.sha, hit.size) if hit is not None else ("", 0)
        return CheckpointInfo(
            id=sha,
            name=name,
            size_bytes=size,
            format=None,
            num_classes=0,
            class_names=[],
            source=source,
            usable=False,
            problem=reason,
        )

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
        try:
            return CheckpointInfo.model_validate_json(meta.read_bytes())
        except (OSError, ValueError) as exc:
            # A damaged metadata file hides that one upload; it must not break anyone else's requests.
            log.warning("upload metadata %s is unreadable (%s); ignored", meta, type(exc).__name__)
            return None

    def _uploads(self, principal: str | None = None) -> list[CheckpointInfo]:
        """Every upload, or (with `principal`) only its own: others' metadata is never even parsed."""
        if not self.uploads_dir.is_dir():
            return []
        infos = []
        for meta in sorted(self.uploads_dir.glob("*.json")):
            if principal is not None and not self._owner_file(meta.stem, principal).is_file():
                continue
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

    def _owner_file(self, sha: str, owner: str) -> Path:
        return self._owners_dir(sha) / self._hashed_file_name(owner)

    def _read_view(self, info: CheckpointInfo, owner: str) -> _View | None:
        """`owner`'s view of the uploaded blob `info`, or None when `owner` never uploaded it."""
        path = self._owner_file(info.id, owner)
        try:
            raw = path.read_bytes()
        except OSError:
            return _View((info.name,), info.created_at) if info.owner == owner else None
        if not raw.strip():  # an owner recorded before views existed: the blob's own name and time
            return _View((info.name,), info.created_at)
        try:
            data = json.loads(raw)
            names = tuple(str(n) for n in data["names"]) or (info.name,)
            created = datetime.fromisoformat(data["created_at"]) if data.get("created_at") else None
        except (ValueError, KeyError, TypeError):
            log.warning("owner view %s is unreadable; the blob's own name is used", path)
            return _View((info.name,), info.created_at)
        return _View(names, created)

    def _write_view(self, sha: str, owner: str, view: _View) -> None:
        data = {"names": list(view.names), "created_at": view.created_at.isoformat() if view.created_at else None}
        write_atomic(self._owner_file(sha, owner), json.dumps(data).encode())

    def add_owner(self, sha: str, owner: str, name: str | None = None) -> tuple[_View, bool]:
        """Record `owner` as an uploader of blob `sha` under `name`; returns (its view, whether it is new)."""
        info = self._uploaded(sha)
        view = self._read_view(info, owner) if info is not None else None
        if view is None:
            view = _View((name,) if name else (), utcnow())
            self._write_view(sha, owner, view)
            return view, True
        if name and name not in view.names:
            view = _View((*view.names, name)[-MAX_NAMES_PER_OWNER:], view.created_at)
            self._write_view(sha, owner, view)
        return view, False

    def is_owner(self, info: CheckpointInfo, principal: str) -> bool:
        """Whether `principal` uploaded these bytes (any of its uploads counts)."""
        if info.source != "upload":
            return False
        if info.owner == principal:
            return True
        return self._owner_file(info.id, principal).is_file()

    def owner_view(self, info: CheckpointInfo, principal: str) -> CheckpointInfo | None:
        """The upload `info` as `principal` uploaded it (its first name, its time, itself as owner), or None."""
        view = self._read_view(info, principal)
        if view is None:
            return None
        return info.model_copy(update={"name": view.names[0], "created_at": view.created_at, "owner": principal})

    def _aliases_dir(self, sha: str) -> Path:
        return self.uploads_dir / f"{sha}.names"

    def add_alias(self, sha: str, name: str) -> None:
        """Another upload of the same bytes under another file name, without an owner (auth disabled)."""
        folder = self._aliases_dir(sha)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / self._hashed_file_name(name), name.encode("utf-8"))

    def has_name(self, info: CheckpointInfo, name: str, principal: str | None = None) -> bool:
        """Whether `name` finds the upload: among `principal`'s own names, or (None) any uploader's."""
        if principal is not None:
            view = self._read_view(info, principal)
            return view is not None and name in view.names
        if info.name == name or (self._aliases_dir(info.id) / self._hashed_file_name(name)).is_file():
            return True
        folder = self._owners_dir(info.id)
        owners = sorted(folder.iterdir()) if folder.is_dir() else []
        return any(name in self._names_in(path) for path in owners)

    @staticmethod
    def _names_in(path: Path) -> list[str]:
        try:
            data = json.loads(path.read_bytes() or b"{}")
            return [str(n) for n in data.get("names", [])]
        except (OSError, ValueError, AttributeError):
            return []

    def incoming_dir(self) -> Path:
        path = self.uploads_dir / INCOMING
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_upload(self, tmp: Path, sha: str, name: str, owner: str | None) -> tuple[CheckpointInfo, bool]:
        """Inspect a fully received upload and commit it; returns (the uploader's view, created).

        `created` is True when the uploader did not hold these bytes before, even if another owner
        did: nothing in the answer tells them apart. Raises CheckpointError (the temporary file is
        deleted) when it is not a usable checkpoint. The commit is two renames: bytes first, then the
        metadata JSON that makes them visible.
        """
        try:
            existing = self._uploaded(sha)
            if existing is not None:
                if owner is None:
                    if name != existing.name:
                        self.add_alias(sha, name)
                    return existing.model_copy(update={"name": name}), False
                view, created = self.add_owner(sha, owner, name)
                # Named as just uploaded; the time is this owner's first upload of the bytes, never another's.
                mine = existing.model_copy(update={"name": name, "created_at": view.created_at})
                return mine.model_copy(update={"owner": owner}), created
            size = tmp.stat().st_size
            meta = inspect_checkpoint(tmp)
            info = info_from_meta(meta, sha=sha, name=name, size=size, source="upload", owner=owner)
            info.created_at = utcnow()
            os.replace(tmp, self.upload_path(sha))
            if owner is not None:  # before the metadata that makes the upload visible
                self._write_view(sha, owner, _View((name,), info.created_at))
            write_atomic(self._upload_meta_path(sha), info.model_dump_json(indent=1).encode())
            return info, True
        finally:
            tmp.unlink(missing_ok=True)

    # -- lookup -------------------------------------------------------------------------------------

    def list(self, principal: str | None = None) -> list[CheckpointInfo]:
        """Mounted and builtin checkpoints (unusable ones flagged, with their problem), then uploads.

        With `principal`, only the uploads it owns (see `_uploads`).
        """
        infos: list[CheckpointInfo] = []
        for path, name, source in self._mounted():
            try:
                infos.append(self._describe_file(path, name, source))
            except (CheckpointError, OSError) as exc:
                # The operator's to fix: shown as unusable, never breaking the listing.
                infos.append(self._unusable(path, name, source, str(exc)))
        infos.extend(self._uploads(principal))
        return infos

    def resolve(
        self,
        ref: str,
        visible: Callable[[CheckpointInfo], bool] | None = None,
        principal: str | None = None,
    ) -> tuple[CheckpointInfo, Path]:
        """The checkpoint called `ref` (sha256 id or file name) and its path; raises UnknownCheckpoint.

        `visible` narrows the lookup of uploads by name to those the caller may see, so one owner's
        `det.pt` never shadows another's; with `principal`, an upload's names are only those that
        principal uploaded it under (another owner's file name finds nothing).
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
            except (CheckpointError, OSError) as exc:
                raise UnknownCheckpoint(ref, f"checkpoint {ref!r} is not usable: {exc}") from exc
        # Uploads by any file name they were uploaded under: the newest one wins.
        named = [
            info
            for info in self._uploads(principal)
            if (visible is None or visible(info)) and self.has_name(info, ref, principal)
        ]
        if principal is not None:
            named = [view for info in named if (view := self.owner_view(info, principal)) is not None]
        if named:
            newest = max(named, key=lambda i: i.created_at.timestamp() if i.created_at else 0.0)
            return newest, self.upload_path(newest.id)
        raise UnknownCheckpoint(ref)
