"""Hostile checkpoint material for the safety tests: what an attacker's upload would look like."""

from __future__ import annotations

import builtins
import os
import struct
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


# ---------------------------------------------------------------------------------------------------------
# Hand-assembled pickle opcodes (protocol 2): tiny files that ask the reader for huge or odd things.


def op_str(text: str) -> bytes:
    """BINUNICODE: push a str."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_global(module: str, name: str) -> bytes:
    """GLOBAL: push module.name (what find_class resolves)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_int(value: int) -> bytes:
    """BININT: push a 32-bit signed int."""
    return b"J" + struct.pack("<i", value)


def checkpoint_dict(*items: bytes, yaml: bytes | None = None) -> bytes:
    """``{"state_dict": {}, "yaml": <yaml or "yolov5n">, ...items}``: items are key/value opcode pairs."""
    return (
        b"\x80\x02}("
        + op_str("state_dict")
        + b"}"
        + op_str("yaml")
        + (yaml if yaml is not None else op_str("yolov5n"))
        + b"".join(items)
        + b"u."
    )


def yaml_dict(**values: int | float) -> bytes:
    """A yaml config dict of the given numeric keys (no layers: the limits refuse it first)."""
    body = b""
    for key, value in values.items():
        body += op_str(key) + (op_int(value) if isinstance(value, int) else b"G" + struct.pack(">d", value))
    return b"}(" + body + b"u"


def bytearray_of_size(n: int) -> bytes:
    """``bytearray(n)``: an allow-listed class asked to allocate n bytes."""
    return checkpoint_dict(op_str("blob") + op_global("builtins", "bytearray") + op_int(n) + b"\x85R")


def memo_index(index: int) -> bytes:
    """LONG_BINPUT at a huge memo index: the C unpickler grows its memo table to it."""
    return checkpoint_dict(op_str("m") + b"N" + b"r" + struct.pack("<I", index))


def names_dict_index(index: int) -> bytes:
    """``names: {index: "x"}``: a list padded up to index would be allocated."""
    return checkpoint_dict(op_str("names") + b"}" + op_int(index) + op_str("x") + b"s")


def names_padded_to(nc: int) -> bytes:
    """``yaml: {"nc": nc}``: names padded to nc."""
    return checkpoint_dict(yaml=yaml_dict(nc=nc))


def stride_tensor(size: int, step: int = 0) -> bytes:
    """A stride tensor of `size` elements over one stored float (step 0: the same value `size` times)."""
    tensor = (
        op_global("torch._utils", "_rebuild_tensor_v2")
        + b"(("
        + op_str("storage")
        + op_global("torch", "FloatStorage")
        + op_str("0")
        + op_str("cpu")
        + op_int(1)
        + b"tQ"
        + op_int(0)
        + b"("
        + op_int(size)
        + b"t("
        + op_int(step)
        + b"t\x89"
        + op_global("collections", "OrderedDict")
        + b")RtR"
    )
    return checkpoint_dict(op_str("stride") + tensor)


def deep_list(depth: int) -> bytes:
    """``names`` nested `depth` lists deep (recursion in anything that walks it)."""
    return checkpoint_dict(op_str("names") + b"]" * depth + b"a" * (depth - 1))


def deep_via_memo(depth: int) -> bytes:
    """Nesting `depth` deep built with a constant-size stack: each new list holds the previous (memo get)."""
    body = b"]q\x00"  # EMPTY_LIST, BINPUT 0
    for _ in range(depth):
        body += b"]h\x00a" + b"q\x00"  # new list, append memo[0], memo[0] = it
    return checkpoint_dict(op_str("names") + body)


def shared_reference_fanout(levels: int, fanout: int) -> bytes:
    """Billion laughs: level k is a list of `fanout` references to level k-1 (fanout**levels leaves)."""
    body = op_str("x") + b"q\x00"
    for _ in range(levels):
        body += b"](" + b"h\x00" * fanout + b"e" + b"q\x00"
    return checkpoint_dict(op_str("names") + body)


def modules_not_a_dict() -> bytes:
    """An upstream DetectionModel whose ``_modules`` is a list (code expecting a dict breaks)."""
    return (
        b"\x80\x02}("
        + op_str("model")
        + op_global("models.yolo", "DetectionModel")
        + b")\x81}("
        + op_str("yaml")
        + b"}("
        + op_str("nc")
        + op_int(2)
        + b"u"
        + op_str("_modules")
        + b"]ub"
        + b"u."
    )


def retyped_storage_class(new_name: str) -> bytes:
    """BUILD on the allow-listed ``torch.FloatStorage`` placeholder itself: tries to rename it for later files."""
    return checkpoint_dict(
        op_str("x") + op_global("torch", "FloatStorage") + b"}" + op_str("name") + op_str(new_name) + b"sb"
    )


def retyped_stand_in_class() -> bytes:
    """BUILD with slot state on the ``models.common.Conv`` placeholder class: tries to set class attributes."""
    return checkpoint_dict(
        op_str("x")
        + op_global("models.common", "Conv")
        + b"N}"
        + op_str("qualname")
        + op_str("models.yolo.Model")
        + b"s\x86b"
    )


def write_archive(
    path: Path, pickle_bytes: bytes, entries: dict[str, bytes] | None = None, compress: int = zipfile.ZIP_STORED
) -> Path:
    """A torch-style archive with `pickle_bytes` as data.pkl and extra ``archive/data/<key>`` entries."""
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        zf.writestr("archive/data.pkl", pickle_bytes)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
        for key, data in (entries or {}).items():
            zf.writestr(f"archive/data/{key}", data)
    return path
