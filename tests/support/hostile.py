"""Hostile checkpoint material for the safety tests: what an attacker's upload would look like."""

from __future__ import annotations

import builtins
import os
import zipfile
from pathlib import Path


def write_torch_zip(path: Path, pickle_bytes: bytes, compress: int = zipfile.ZIP_STORED) -> Path:
    """A torch-style archive around arbitrary pickle bytes."""
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        zf.writestr("archive/data.pkl", pickle_bytes)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
        zf.writestr("archive/.format_version", "1")
    return path


class SystemPayload:
    """Unpickles as `os.system("touch <marker>")`: the marker file proves whether the payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class ExecPayload:
    """Unpickles as `exec(...)` writing the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))
