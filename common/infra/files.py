"""Files written and read whole: one content hash, one atomic write."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def sha256_file(path: Path) -> str:
    """sha256 hex digest of the file's bytes (hashlib.file_digest: streamed, constant memory).

    Raises OSError when the file cannot be read.
    """
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_atomic_with(path: Path, write: Callable[[BinaryIO], None]) -> int:
    """Create `path` through `write(fh)` so readers see the old file or the whole new one, never a part.

    Writes a temporary file beside `path`, fsyncs it and renames it over `path`; on any error the
    temporary file is removed and the error re-raised. Returns the bytes written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.stat().st_size


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see write_atomic_with)."""

    def write(fh: BinaryIO) -> None:
        fh.write(data)

    write_atomic_with(path, write)
