"""Content digests of dataset files, remembered per (path, size, mtime_ns) so unchanged files are hashed once.

A dataset's identity is its content: the annotations file's bytes and every listed image's bytes. The
result cache and the decode cache key on :func:`dataset_digest`, so an image rewritten in place is a new
key (a folder's modification time, the old key, does not change when a file inside is rewritten).

Hashing every image of COCO val2017 (0.8 GB) takes seconds, so each file's sha256 is memoised:

* in this process (a dict), and
* on this host, in a small SQLite file (``memo_path``) shared by every worker process and work-horse:
  rq forks a fresh horse per job, so an in-process memo alone would be empty at every job.

A memo entry is trusted only while the file's size and ``st_mtime_ns`` are unchanged. A rewrite that
keeps both (same size within one timestamp tick, or a copy that preserves mtime) is not noticed: that is
the price of not reading every byte for every job. Torch-free: the API and the rq parent may call it.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from prunebench.infra.files import sha256_file

_memo: dict[tuple[str, int, int], str] = {}
_memo_lock = threading.Lock()

MISSING = "missing"
"""The digest of a file that does not exist: the key changes when it appears; decoding reports it."""
SQLITE_TIMEOUT_S = 30.0


def _memo_key(path: Path) -> tuple[str, int, int]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return (str(path.absolute()), -1, -1)
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


class DigestMemo:
    """sha256 of files, memoised in-process and (when ``memo_path`` is given) in a host-wide SQLite file."""

    def __init__(self, memo_path: Path | None = None) -> None:
        self.memo_path = memo_path
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection | None:
        if self.memo_path is None:
            return None
        if self._db is None:
            self.memo_path.parent.mkdir(parents=True, exist_ok=True)
            # WAL: readers never block the one writer; several processes share the file safely.
            db = sqlite3.connect(self.memo_path, timeout=SQLITE_TIMEOUT_S, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS digests"
                " (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT)"
            )
            self._db = db
        return self._db

    def digest(self, path: Path) -> str:
        """sha256 hex of ``path``'s bytes (OSError if it cannot be read)."""
        return self.digests([path])[0]

    def digests(self, paths: Iterable[Path]) -> list[str]:
        """sha256 hex of each path (``MISSING`` for one that does not exist), in order."""
        keys = [_memo_key(p) for p in paths]
        with _memo_lock:
            found = {k: _memo[k] for k in keys if k in _memo}
        missing = [k for k in keys if k not in found]
        db = self._connect()
        if missing and db is not None:
            found.update(self._from_db(db, missing))
            missing = [k for k in keys if k not in found]
        computed = {k: sha256_file(Path(k[0])) for k in dict.fromkeys(missing) if k[1] >= 0}
        if computed and db is not None:
            with db:
                db.executemany(
                    "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?)", [(*k, v) for k, v in computed.items()]
                )
        found.update(computed)
        with _memo_lock:
            _memo.update(found)
        return [found.get(k, MISSING) for k in keys]

    @staticmethod
    def _from_db(db: sqlite3.Connection, keys: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], str]:
        wanted = set(keys)
        out: dict[tuple[str, int, int], str] = {}
        for start in range(0, len(keys), 500):  # SQLite's bound on host parameters
            chunk = [k[0] for k in keys[start : start + 500]]
            rows = db.execute(
                f"SELECT path, size, mtime_ns, sha256 FROM digests WHERE path IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for path, size, mtime_ns, sha in rows:
                if (path, size, mtime_ns) in wanted:
                    out[(path, size, mtime_ns)] = sha
        return out


def dataset_digest(annotations: Path, images_dir: Path, file_names: Iterable[str], memo: DigestMemo) -> str:
    """One sha256 over the annotations' digest and each listed image's (name, digest), in name order."""
    names = sorted(set(file_names))
    files = [annotations, *(images_dir / name for name in names)]
    digests = memo.digests(files)
    whole = hashlib.sha256(f"annotations:{digests[0]}\n".encode())
    for name, sha in zip(names, digests[1:], strict=True):
        whole.update(f"{name}:{sha}\n".encode())
    return whole.hexdigest()
