"""Torch-free inspection of uploaded checkpoints (the API service imports this; it must never import torch).

A torch checkpoint is a zip archive holding ``<root>/data.pkl`` (the object graph) and ``<root>/data/<key>``
(raw tensor bytes). Unpickling runs code named by the pickle, so uploads are never unpickled normally:
``data.pkl`` is walked by an Unpickler whose ``find_class`` maps an explicit allow-list of globals onto inert
placeholder classes and refuses everything else, and whose ``persistent_load`` never touches tensor data.
Nothing a checkpoint names is imported or executed.

Every size the file controls is bounded before anything is allocated from it (see README "Checkpoint
limits"): the pickle's memo indices are checked by a scan of its opcodes before the C unpickler (which
sizes its memo table by the largest index) sees them; the allow-list holds no callable that allocates
from an argument; the unpickled graph's nesting depth is measured iteratively; class counts, names,
strides and the model config (`prunebench.checkpoints.limits`) are checked before they are expanded;
and every tensor storage the pickle declares must match its archive entry's size, the total bounded by
what the config's parameter count can need. The allow-list's stand-ins are created per call, so nothing
one file does to them reaches another.

Recognised layouts (``CheckpointMeta.format``):

* ``"yolov5"``: upstream YOLOv5 ``train.py`` output, a dict whose ``ema`` or ``model`` is a pickled
  ``models.yolo.DetectionModel`` (older: ``Model``), or a bare pickled model.
* ``"state_dict"``: ``{"state_dict": {name: tensor}, "yaml": dict | "yolov5s", "names": [...]}``.
* ``"prunebench"``: prunebench's own artifacts, a dict with ``"format": "prunebench"`` and ``yaml``,
  ``names``, ``stride`` keys.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import pickle
import pickletools
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeGuard

from prunebench.checkpoints.architectures import arch_of_yaml, builtin_yaml_name, official_config
from prunebench.checkpoints.limits import (
    MAX_NUM_CLASSES,
    ArchitectureError,
    check_num_classes,
    check_stride,
    estimate_architecture,
    max_tensor_bytes,
)
from prunebench.contract import CheckpointFormat

# Archive limits. Real YOLOv5 pickles are well under 1 MiB (x-size, unstripped: a few MiB); tensors live
# in separate entries. Limits guard against zip bombs and pathological archives, not honest files.
MAX_PICKLE_BYTES = 16 * 1024 * 1024
MAX_TOTAL_UNCOMPRESSED = 8 * 1024**3
MAX_ENTRIES = 100_000
MAX_COMPRESSION_RATIO = 200
MAX_STRIDE_BYTES = 1024
MAX_DEPTH = 100
"""Deepest nesting of the unpickled object graph (an upstream YOLOv5 model: about 25)."""
MAX_NAME_CHARS = 256
"""Longest class name accepted."""
MAX_BYTEARRAY = 1024 * 1024
"""Largest ``bytearray`` a pickle may build (torch checkpoints hold none; tensors live in the archive)."""

_TORCH_DTYPES: dict[str, tuple[str, int]] = {
    # storage class -> (struct code, item size); only float kinds are ever decoded (for the stride).
    "HalfStorage": ("e", 2),
    "FloatStorage": ("f", 4),
    "DoubleStorage": ("d", 8),
    "BFloat16Storage": ("", 2),
    "LongStorage": ("q", 8),
    "IntStorage": ("i", 4),
    "ShortStorage": ("h", 2),
    "CharStorage": ("b", 1),
    "ByteStorage": ("B", 1),
    "BoolStorage": ("?", 1),
}


class CheckpointError(ValueError):
    """The file is not a checkpoint prunebench can (or will) load; the message says why."""


@dataclass
class CheckpointMeta:
    format: CheckpointFormat
    num_classes: int
    class_names: list[str]
    arch: str | None
    stride: list[float]
    yaml: dict[str, Any] | None = None
    # Tensor dtype of the weights as stored (e.g. "HalfStorage"): informative only.
    storage_types: list[str] = field(default_factory=list)
    # Sum of the declared (and size-checked) tensor storages: what torch.load will inflate.
    tensor_bytes: int = 0
    # Parameters the config describes (prunebench.checkpoints.limits.estimate_architecture).
    parameters: int = 0


# ---------------------------------------------------------------------------------------------------------
# Placeholders: what allowed globals turn into. None of them does anything beyond recording its arguments.


class InertStub:
    """Inert stand-in for an allowed class: accepts any constructor args and any pickled state."""

    qualname = "?"

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.args = args

    def __setstate__(self, state: object) -> None:
        # Upstream modules pickle their __dict__; (dict, slots) pairs also occur for some classes.
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict | type(None)):
            state = state[0]
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["state"] = state


class ModuleStub(InertStub):
    """A pickled nn.Module (upstream block or torch layer): only its __dict__ is kept."""


class StorageStub:
    def __init__(self, storage_type: str, key: str, numel: int) -> None:
        self.storage_type = storage_type
        self.key = key
        self.numel = numel


class TensorStub:
    def __init__(self, storage: object, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage = storage if isinstance(storage, StorageStub) else None
        self.offset = int(offset) if isinstance(offset, int) else 0
        self.size = tuple(size) if isinstance(size, tuple) else ()
        self.stride = tuple(stride) if isinstance(stride, tuple) else ()


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name


MAX_TENSOR_DIMS = 8


def _dims(values: object, what: str) -> tuple[int, ...]:
    if not isinstance(values, tuple | list) or len(values) > MAX_TENSOR_DIMS:
        raise CheckpointError(f"tensor {what} must be a tuple of at most {MAX_TENSOR_DIMS} integers")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**40 for v in values):
        raise CheckpointError(f"tensor {what} holds an invalid value")
    return tuple(values)


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object, *_: object) -> TensorStub:
    """A tensor placeholder; refuses views reaching past their storage or holding more elements than it.

    torch.load would rebuild a (10**9,)-element view with stride 0 over one stored float without
    complaint, and the first ``.float()`` would allocate 4 GB: honest checkpoints never hold such views.
    """
    dims, steps = _dims(size, "size"), _dims(stride, "stride")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 or len(steps) != len(dims):
        raise CheckpointError("tensor offset or stride is invalid")
    if isinstance(storage, StorageStub):
        elements = math.prod(dims)
        last = offset + sum((d - 1) * s for d, s in zip(dims, steps, strict=True)) if elements else offset - 1
        if elements > storage.numel or last >= storage.numel:
            raise CheckpointError(
                f"tensor of {elements} elements over storage {storage.key!r} of {storage.numel}: "
                "views beyond or larger than their storage are refused"
            )
    return TensorStub(storage, offset, dims, steps)


def _rebuild_parameter(data: object, *_: object) -> object:
    return data


def _encode_bytes(text: object, encoding: object = "latin1") -> bytes:
    # Protocol-2 pickles spell ``bytes`` values as _codecs.encode(str, "latin1"); only that form is allowed.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("refused global '_codecs.encode' with unexpected arguments")
    return text.encode("latin-1")


def stand_in(qualname: str, base: type[InertStub] = InertStub) -> type[InertStub]:
    """An inert class standing in for the global `qualname` (named like it; `qualname` records which).

    The inspector's unpickler and the engine's `torch.load(weights_only=True)` both map allowed
    globals onto these, so nothing a checkpoint names is ever imported.
    """
    return type(qualname.rsplit(".", 1)[-1], (base,), {"qualname": qualname})


# Upstream YOLOv5 blocks (models.common, models.yolo) that prunebench reimplements.
UPSTREAM_MODULES: tuple[str, ...] = (
    "models.yolo.DetectionModel",
    "models.yolo.Model",
    "models.yolo.Detect",
    "models.common.Conv",
    "models.common.Bottleneck",
    "models.common.BottleneckCSP",
    "models.common.C3",
    "models.common.SPP",
    "models.common.SPPF",
    "models.common.Focus",
    "models.common.Concat",
)
# torch.nn layers that appear inside upstream models.
TORCH_MODULES: tuple[str, ...] = (
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.activation.SiLU",
    "torch.nn.modules.activation.LeakyReLU",
    "torch.nn.modules.activation.Hardswish",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.activation.ReLU6",
    "torch.nn.modules.linear.Identity",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.upsampling.Upsample",
    "torch.nn.modules.padding.ZeroPad2d",
)
# Plain values seen in training metadata (``opt``, ``best_fitness`` of unstripped checkpoints).
INERT_VALUES: tuple[str, ...] = (
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib.Path",
    "argparse.Namespace",
    "numpy.core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
)
TENSOR_REBUILDERS: tuple[str, ...] = (
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
)

# Better messages for checkpoints we know are not YOLOv5 detectors.
_KNOWN_FOREIGN: dict[str, str] = {
    "ultralytics.": "an Ultralytics (YOLOv8/YOLO11/YOLOv5u) checkpoint; only original YOLOv5 is supported",
    "models.yolo.SegmentationModel": "a YOLOv5 segmentation checkpoint; only detection models are supported",
    "models.yolo.Segment": "a YOLOv5 segmentation checkpoint; only detection models are supported",
    "models.yolo.ClassificationModel": "a YOLOv5 classification checkpoint; only detection is supported",
}
# Blocks of official hub variants (yolov5s-ghost, yolov5s-transformer, ...) prunebench does not build.
for _block in ("GhostConv", "GhostBottleneck", "C3Ghost", "C3TR", "TransformerBlock", "TransformerLayer", "C3SPP"):
    _KNOWN_FOREIGN[f"models.common.{_block}"] = (
        f"the {_block} block (an official hub variant such as yolov5s-ghost or yolov5s-transformer) is not "
        "supported; prunebench builds models of Conv, C3, BottleneckCSP, Focus, SPP(F), Concat and Detect"
    )


def _bounded_bytearray(*args: object) -> bytearray:
    # ``bytearray(N)`` would allocate N bytes from a 5-byte argument: only copies of pickled data.
    if len(args) > 2 or (args and isinstance(args[0], int)):
        raise CheckpointError("refused global 'builtins.bytearray' with a size argument")
    first = args[0] if args else b""
    if isinstance(first, str) and len(args) == 2:
        data = _encode_bytes(first, args[1])
    elif isinstance(first, bytes | bytearray):
        data = bytes(first)
    else:
        raise CheckpointError("refused global 'builtins.bytearray' with unexpected arguments")
    if len(data) > MAX_BYTEARRAY:
        raise CheckpointError(f"bytearray of {len(data)} bytes (limit {MAX_BYTEARRAY})")
    return bytearray(data)


def _device(spec: object, index: object = None) -> str:
    # torch.device("cuda", 0): only plain strings; str() of an arbitrary (shared, nested) graph could be huge.
    if not isinstance(spec, str) or len(spec) > 64 or not (index is None or isinstance(index, int)):
        raise CheckpointError("refused global 'torch.device' with unexpected arguments")
    return spec if index is None else f"{spec}:{index}"


def _build_allow_list() -> dict[str, object]:
    """Globals a checkpoint may name, mapped to fresh stand-ins: built per unpickling, never shared.

    A pickle can mutate what it resolves (BUILD sets attributes); fresh objects per call keep that
    from reaching any other file's inspection.
    """
    allowed: dict[str, object] = {
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "builtins.bytearray": lambda *a: _bounded_bytearray(*a),
        "_codecs.encode": lambda *a: _encode_bytes(*a),
        "torch.Size": lambda *a: tuple(*a),
        "torch.device": lambda *a: _device(*a),
    }
    for name in UPSTREAM_MODULES + TORCH_MODULES:
        allowed[name] = stand_in(name, ModuleStub)
    for name in INERT_VALUES:
        allowed[name] = stand_in(name)
    for name in ("torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2"):
        allowed[name] = lambda *a: _rebuild_tensor(*a)
    for name in ("torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"):
        allowed[name] = lambda *a: _rebuild_parameter(*a)
    for storage in _TORCH_DTYPES:
        allowed[f"torch.{storage}"] = _StorageType(storage)
    for dtype in ("float16", "float32", "float64", "bfloat16", "int64", "int32", "uint8", "bool"):
        allowed[f"torch.{dtype}"] = dtype
    return allowed


ALLOWED_GLOBALS: frozenset[str] = frozenset(_build_allow_list())
"""Dotted names of every global a checkpoint may name."""


def normalize_global(module: str, name: str) -> str:
    """Dotted name of a pickled global, with Python 2 names (protocol < 3) mapped as Python 3 would."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def refusal_message(qualname: str) -> str:
    for prefix, why in _KNOWN_FOREIGN.items():
        if qualname.startswith(prefix):
            return f"refused global {qualname[:200]!r}: {why}"
    # Truncated: a crafted GLOBAL line may be megabytes long, and the message goes into a 422 body.
    return f"refused global {qualname[:200]!r}: not on the checkpoint allow-list"


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals, to per-call placeholders; never imports or calls anything else.

    Records every tensor storage the pickle declares (``storages``: key -> (storage type, element count)).
    """

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self._allowed = _build_allow_list()
        self.storages: dict[str, tuple[str, int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        qualname = normalize_global(module, name)
        if qualname not in self._allowed:
            raise CheckpointError(refusal_message(qualname))
        return self._allowed[qualname]

    def persistent_load(self, pid: Any) -> Any:
        # torch's id: ("storage", storage_type, key, location, numel); tensor bytes are not read here.
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise CheckpointError("refused persistent id: not a torch storage reference")
        storage_type = pid[1].name if isinstance(pid[1], _StorageType) else None
        key, numel = pid[2], pid[4]
        if storage_type not in _TORCH_DTYPES or not isinstance(key, str) or len(key) > 64:
            raise CheckpointError("refused persistent id: not a torch storage reference")
        if isinstance(numel, bool) or not isinstance(numel, int) or not 0 <= numel < 2**40:
            raise CheckpointError(f"tensor storage {key!r} declares an invalid size")
        known = self.storages.setdefault(key, (storage_type, numel))
        if known != (storage_type, numel):
            raise CheckpointError(f"tensor storage {key!r} is declared twice with different sizes")
        return StorageStub(storage_type, key, numel)


_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})


def _scan_opcodes(data: bytes) -> None:
    """Refuse memo indices no honest pickler writes, before the C unpickler sizes its memo by them.

    Picklers number memo entries 0, 1, 2, ... as objects appear, so an index is always below the
    count of opcodes before it; ``LONG_BINPUT 4000000000`` in a 20-byte file is an allocation attack.
    """
    for count, (op, arg, _pos) in enumerate(pickletools.genops(data)):
        if op.name in _MEMO_PUTS or op.name in _MEMO_GETS:
            index = int(arg) if isinstance(arg, int | str) else -1
            if not 0 <= index <= count:
                raise CheckpointError(f"corrupt checkpoint pickle: memo index {index} at opcode {count}")
        if op.name == "STOP":
            return


def safe_unpickle(data: bytes) -> Any:
    """Unpickle ``data`` through the allow-list; any refusal or malformed stream -> CheckpointError."""
    return _unpickle(data)[0]


def _unpickle(data: bytes) -> tuple[Any, dict[str, tuple[str, int]]]:
    try:
        _scan_opcodes(data)
        unpickler = _RestrictedUnpickler(io.BytesIO(data))
        obj = unpickler.load()
    except CheckpointError:
        raise
    except Exception as exc:  # a malformed stream fails in many ways (ValueError, TypeError, RecursionError...)
        raise CheckpointError(f"corrupt checkpoint pickle: {type(exc).__name__}: {str(exc)[:200]}") from None
    _check_depth(obj)
    return obj, unpickler.storages


def _children(obj: object) -> list[object] | None:
    """The objects `obj` refers to, or None for a leaf."""
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, list | tuple | set | frozenset):
        return list(obj)
    if isinstance(obj, InertStub):
        return [obj.__dict__]
    if isinstance(obj, TensorStub):
        return [obj.size, obj.stride]
    return None


def _check_depth(root: object) -> None:
    """Refuse object graphs nested deeper than MAX_DEPTH (longest acyclic path), without recursion.

    Later code (repr, copy, the model builder) recurses over these objects; a 100,000-deep list
    would end in a RecursionError anywhere. Shared sub-graphs are measured once (memoised heights).
    """
    heights: dict[int, int] = {}
    top = _children(root)
    if top is None:
        return
    # Frames: [node, its children, next child index, tallest child so far].
    stack: list[list[Any]] = [[root, top, 0, 0]]
    on_path = {id(root)}
    while stack:
        frame = stack[-1]
        node, kids, index, best = frame
        if index == len(kids):
            stack.pop()
            on_path.discard(id(node))
            heights[id(node)] = best + 1
            if best + 1 > MAX_DEPTH:
                raise CheckpointError(f"checkpoint pickle is nested deeper than {MAX_DEPTH} levels")
            if stack:
                stack[-1][3] = max(stack[-1][3], best + 1)
            continue
        frame[2] = index + 1
        child = kids[index]
        known = heights.get(id(child))
        if known is not None:
            frame[3] = max(best, known)
            continue
        grand = _children(child)
        if grand is None or id(child) in on_path:
            frame[3] = max(best, 1 if grand is None else 0)
            continue
        if len(stack) >= MAX_DEPTH:
            raise CheckpointError(f"checkpoint pickle is nested deeper than {MAX_DEPTH} levels")
        on_path.add(id(child))
        stack.append([child, grand, 0, 0])


# ---------------------------------------------------------------------------------------------------------
# Archive handling


def _sniff_non_zip(head: bytes) -> str:
    if not head:
        return "empty file"
    if head[:1] == b"\x80":
        # Pre-1.6 torch.save wrote bare pickles (magic number first); never unpickled here.
        return (
            "legacy (non-zip) torch serialization or raw pickle is not supported; "
            "re-save the checkpoint with a current torch.save"
        )
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON/text file, not a torch checkpoint"
    if head[:4] == b"PK\x03\x04":
        return "corrupt or truncated zip archive"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "a tar archive (very old torch format), not supported"
    return "not a torch checkpoint (expected a torch zip archive)"


def _open_archive(path: Path) -> tuple[zipfile.ZipFile, str]:
    """Open and sanity-check the zip; returns it and the root folder name (prefix of data.pkl)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint: {exc.strerror or exc}") from None
    if not zipfile.is_zipfile(path):
        raise CheckpointError(_sniff_non_zip(head))
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt or truncated zip archive: {exc}") from None
    try:
        infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            raise CheckpointError(f"zip archive has too many entries ({len(infos)})")
        total = 0
        for info in infos:
            total += info.file_size
            if (
                info.compress_size
                and info.file_size > 1024 * 1024
                and (info.file_size / info.compress_size > MAX_COMPRESSION_RATIO)
            ):
                raise CheckpointError(f"zip entry {info.filename!r} has a suspicious compression ratio")
        if total > MAX_TOTAL_UNCOMPRESSED:
            raise CheckpointError("zip archive declares too much uncompressed data")
        roots = [i.filename[: -len("/data.pkl")] for i in infos if i.filename.endswith("/data.pkl")]
        roots = [r for r in roots if r and "/" not in r]
        if len(roots) != 1:
            raise CheckpointError("zip archive is not a torch checkpoint (no single <root>/data.pkl)")
        return archive, roots[0]
    except CheckpointError:
        archive.close()
        raise


def _read_entry(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(f"checkpoint archive lacks {name!r}") from None
    if info.file_size > limit:
        raise CheckpointError(f"{name!r} is too large ({info.file_size} bytes, limit {limit})")
    try:
        with archive.open(info) as fh:
            data = fh.read(limit + 1)  # bounded even if the header lies about the size
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"corrupt or truncated zip archive: {exc}") from None
    if len(data) > limit:
        raise CheckpointError(f"{name!r} is too large (limit {limit} bytes)")
    return data


def read_pickle(path: Path) -> tuple[Any, zipfile.ZipFile, str]:
    """Safely unpickle a checkpoint's object graph; the caller closes the returned archive."""
    obj, archive, root, _ = _read_checked(path)
    return obj, archive, root


def _read_checked(path: Path) -> tuple[Any, zipfile.ZipFile, str, int]:
    """(object graph, archive, root, declared tensor bytes), every storage checked against its entry."""
    archive, root = _open_archive(path)
    try:
        obj, storages = _unpickle(_read_entry(archive, f"{root}/data.pkl", MAX_PICKLE_BYTES))
        tensor_bytes = _check_storages(archive, root, storages)
    except CheckpointError:
        archive.close()
        raise
    return obj, archive, root, tensor_bytes


def _check_storages(archive: zipfile.ZipFile, root: str, storages: dict[str, tuple[str, int]]) -> int:
    """Total bytes of the declared storages; each must exist with exactly its declared size.

    torch.load inflates every referenced entry whole, so an entry larger than its storage (a
    highly compressed blob behind a one-element tensor) is refused here, before anything is inflated.
    """
    total = 0
    for key, (storage_type, numel) in storages.items():
        name = f"{root}/data/{key}"
        try:
            info = archive.getinfo(name)
        except KeyError:
            raise CheckpointError(f"checkpoint archive lacks tensor data {name!r}") from None
        expected = numel * _TORCH_DTYPES[storage_type][1]
        if info.file_size != expected:
            raise CheckpointError(
                f"tensor data {name!r} holds {info.file_size} bytes but its storage declares {expected}"
            )
        total += expected
    if total > MAX_TOTAL_UNCOMPRESSED:
        raise CheckpointError(f"checkpoint declares {total} bytes of tensors (limit {MAX_TOTAL_UNCOMPRESSED})")
    return total


# ---------------------------------------------------------------------------------------------------------
# Interpreting the object graph


def _name(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise CheckpointError(f"class names must be strings, got {type(value).__name__}")
    text = str(value)
    if len(text) > MAX_NAME_CHARS:
        raise CheckpointError(f"class name longer than {MAX_NAME_CHARS} characters")
    return text


def _checked_nc(nc: object) -> int:
    try:
        return check_num_classes(nc)
    except ArchitectureError as exc:
        raise CheckpointError(str(exc)) from None


def class_names(names: object, nc: int | None) -> list[str]:
    """Class names from a list, a tuple or an ``{index: name}`` dict; padded with indices up to ``nc``.

    Raises CheckpointError for more than MAX_NUM_CLASSES names (or indices), non-string names, or more
    names than ``nc``; ``nc`` itself must be at most MAX_NUM_CLASSES.
    """
    if nc is not None and nc > 0:
        nc = _checked_nc(nc)
    limit = MAX_NUM_CLASSES if nc is None else nc
    if isinstance(names, dict | list | tuple) and len(names) > limit:
        raise CheckpointError(f"checkpoint has {len(names)} class names but at most {limit} classes")
    if isinstance(names, dict):
        indexed: dict[int, str] = {}
        for k, v in names.items():
            try:
                index = int(k) if isinstance(k, int | str) and not isinstance(k, bool) and len(str(k)) < 8 else -1
            except ValueError:
                index = -1
            if not 0 <= index < limit:
                raise CheckpointError(f"class names dict must map indices 0..{limit - 1} to names")
            indexed[index] = _name(v)
        size = max(indexed, default=-1) + 1
        result = [indexed.get(i, str(i)) for i in range(size)]
    elif isinstance(names, list | tuple):
        result = [_name(n) for n in names]
    elif names is None:
        result = []
    else:
        raise CheckpointError(f"class names must be a list or dict, got {type(names).__name__}")
    if nc is not None:
        if len(result) > nc:
            raise CheckpointError(f"checkpoint has {len(result)} class names but the model has {nc} classes")
        result += [str(i) for i in range(len(result), nc)]
    return result


def _decode_floats(archive: zipfile.ZipFile, root: str, tensor: object) -> list[float] | None:
    """The values of a small 1-D float tensor (the stride), or None when it is not one."""
    if not isinstance(tensor, TensorStub) or tensor.storage is None or len(tensor.size) != 1:
        return None
    code, itemsize = _TORCH_DTYPES.get(tensor.storage.storage_type, ("", 0))
    if code not in ("e", "f", "d"):
        return None
    size, step, offset = tensor.size[0], (tensor.stride[0] if tensor.stride else 1), tensor.offset
    # Bounded before the loop: a size of 10**9 with a zero step would decode one value 10**9 times.
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (size, step, offset)):
        return None
    if not 1 <= size <= 8 or not 1 <= step <= 8 or not 0 <= offset <= 64:
        raise CheckpointError("checkpoint stride must be a tensor of 1 to 8 values")
    try:
        raw = _read_entry(archive, f"{root}/data/{tensor.storage.key}", MAX_STRIDE_BYTES)
    except CheckpointError:
        return None  # the stride is informative only; callers fall back to the standard strides
    values: list[float] = []
    for i in range(size):
        start = (offset + i * step) * itemsize
        if start + itemsize > len(raw):
            return None
        values.append(float(struct.unpack_from("<" + code, raw, start)[0]))
    return values


def _stride(values: list[float] | None, yaml_cfg: dict[str, Any] | None) -> list[float]:
    if values is None:
        return _default_stride(yaml_cfg)
    if not all(math.isfinite(v) for v in values):
        raise CheckpointError("checkpoint stride values must be finite")
    try:
        return check_stride(values)
    except ArchitectureError as exc:
        raise CheckpointError(str(exc)) from None


def _default_stride(yaml_cfg: dict[str, Any] | None) -> list[float]:
    anchors = yaml_cfg.get("anchors", []) if isinstance(yaml_cfg, dict) else []
    levels = len(anchors) if isinstance(anchors, list) else 3
    levels = levels if 0 < levels <= 8 else 3
    return [float(2 ** (3 + i)) for i in range(levels)]


UPSTREAM_MODEL_CLASSES = ("models.yolo.DetectionModel", "models.yolo.Model")


def qualname_of(obj: object) -> str | None:
    """The global a stand-in stands for (from its class: a pickled instance cannot change it)."""
    return type(obj).qualname if isinstance(obj, InertStub) else None


def is_upstream_model(obj: object) -> TypeGuard[InertStub]:
    """Is `obj` the stand-in of a pickled upstream YOLOv5 model (DetectionModel, or the older Model)?"""
    return qualname_of(obj) in UPSTREAM_MODEL_CLASSES


def find_upstream_model(obj: object) -> InertStub | None:
    """The pickled DetectionModel of an upstream checkpoint (EMA weights preferred, as upstream loads)."""
    if is_upstream_model(obj):
        return obj
    if isinstance(obj, dict):
        for key in ("ema", "model"):
            candidate = obj.get(key)
            if is_upstream_model(candidate):
                return candidate
    return None


def _modules_of(obj: object) -> dict[Any, Any]:
    """A pickled module's ``_modules`` dict ({} when absent or not a dict: never trusted to be one)."""
    modules = obj.__dict__.get("_modules") if isinstance(obj, InertStub) else None
    return modules if isinstance(modules, dict) else {}


def _detect_nc(model: InertStub) -> int | None:
    modules = _modules_of(_modules_of(model).get("model"))
    if not modules:
        return None
    head = list(modules.values())[-1]
    nc = head.__dict__.get("nc") if isinstance(head, InertStub) else None
    return nc if isinstance(nc, int) and not isinstance(nc, bool) else None


def _storage_types(root: object) -> list[str]:
    """Storage types of the tensors under `root` (each shared object visited once)."""
    found: set[str] = set()
    seen: set[int] = set()
    todo = [root]
    while todo and len(found) <= 8:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, TensorStub):
            if obj.storage is not None:
                found.add(obj.storage.storage_type)
        elif isinstance(obj, dict):
            todo.extend(obj.values())
        elif isinstance(obj, list | tuple):
            todo.extend(obj)
        elif isinstance(obj, InertStub):
            todo.append(obj.__dict__)
    return sorted(found)


def _check_config(yaml_cfg: dict[str, Any], nc: int, tensor_bytes: int) -> int:
    """Parameters of the config (refused when absurd); the file's tensors must fit such a model."""
    try:
        parameters = estimate_architecture(yaml_cfg, nc=nc).parameters
    except ArchitectureError as exc:
        raise CheckpointError(str(exc)) from None
    _check_tensor_bytes(parameters, tensor_bytes)
    return parameters


def _check_tensor_bytes(parameters: int, tensor_bytes: int) -> None:
    if tensor_bytes > max_tensor_bytes(parameters):
        raise CheckpointError(
            f"checkpoint holds {tensor_bytes} bytes of tensors, more than a {parameters:,}-parameter model "
            f"needs (limit {max_tensor_bytes(parameters)})"
        )


def _describe_upstream(model: InertStub, archive: zipfile.ZipFile, root: str, tensor_bytes: int) -> CheckpointMeta:
    yaml_cfg = model.__dict__.get("yaml")
    if not isinstance(yaml_cfg, dict):
        raise CheckpointError("upstream checkpoint model has no yaml config dict")
    nc = _detect_nc(model) or yaml_cfg.get("nc")
    if not isinstance(nc, int) or nc <= 0:
        raise CheckpointError("cannot determine the number of classes")
    parameters = _check_config(yaml_cfg, nc, tensor_bytes)
    return CheckpointMeta(
        format="yolov5",
        num_classes=nc,
        class_names=class_names(model.__dict__.get("names"), nc),
        arch=arch_of_yaml(yaml_cfg),
        stride=_stride(_decode_floats(archive, root, model.__dict__.get("stride")), yaml_cfg),
        yaml=yaml_cfg,
        storage_types=_storage_types(model.__dict__.get("_modules")),
        tensor_bytes=tensor_bytes,
        parameters=parameters,
    )


def _describe_dict(obj: dict[Any, Any], archive: zipfile.ZipFile, root: str, tensor_bytes: int) -> CheckpointMeta:
    fmt: CheckpointFormat = "prunebench" if obj.get("format") == "prunebench" else "state_dict"
    spec = obj.get("yaml")
    name = builtin_yaml_name(spec)
    yaml_cfg = spec if isinstance(spec, dict) else None
    if yaml_cfg is None and name is None:
        raise CheckpointError(f"{fmt} checkpoint needs 'yaml' (a config dict or an official model name)")
    names = obj.get("names")
    nc = yaml_cfg.get("nc") if yaml_cfg is not None else None
    if not isinstance(nc, int) or isinstance(nc, bool):
        nc = len(names) if isinstance(names, list | tuple | dict) and names else 80
    if yaml_cfg is not None:
        parameters = _check_config(yaml_cfg, nc, tensor_bytes)
    else:
        parameters = _check_config(official_config(name or "", _checked_nc(nc)), nc, tensor_bytes)
    stride_raw = obj.get("stride")
    if isinstance(stride_raw, list | tuple) and all(isinstance(s, int | float) for s in stride_raw):
        stride = _stride([float(s) for s in stride_raw], yaml_cfg)
    else:
        stride = _stride(_decode_floats(archive, root, stride_raw), yaml_cfg)
    return CheckpointMeta(
        format=fmt,
        num_classes=nc,
        class_names=class_names(names, nc),
        arch=name or arch_of_yaml(yaml_cfg),
        stride=stride,
        yaml=yaml_cfg,
        storage_types=_storage_types(obj.get("state_dict")),
        tensor_bytes=tensor_bytes,
        parameters=parameters,
    )


BARE_STATE_DICT_HINT = (
    "this file is a bare state dict (parameter names -> tensors) without its architecture; re-save it as "
    "torch.save({'state_dict': state_dict, 'yaml': 'yolov5s' (the official size it was trained from) or the "
    "model's yaml dict, 'names': [class names]}, 'model.pt')"
)


def describe(obj: object, archive: zipfile.ZipFile, root: str, tensor_bytes: int = 0) -> CheckpointMeta:
    """Interpret a safely unpickled object graph as one of the supported layouts."""
    model = find_upstream_model(obj)
    if model is not None:
        return _describe_upstream(model, archive, root, tensor_bytes)
    if not isinstance(obj, dict):
        raise CheckpointError(f"unrecognised checkpoint layout (top-level {type(obj).__name__})")
    if obj.get("format") == "prunebench" or "state_dict" in obj:
        return _describe_dict(obj, archive, root, tensor_bytes)
    if obj and all(isinstance(v, TensorStub) for v in obj.values()):
        raise CheckpointError(BARE_STATE_DICT_HINT)
    keys = ", ".join(sorted(k[:40] if isinstance(k, str) else type(k).__name__ for k in list(obj)[:50])[:10])
    raise CheckpointError(f"unrecognised checkpoint layout (top-level keys: {keys})")


def inspect_checkpoint(path: Path) -> CheckpointMeta:
    """Describe a checkpoint without importing torch or running anything it contains.

    Raises CheckpointError, and only CheckpointError, for every file it will not accept.
    """
    try:
        obj, archive, root, tensor_bytes = _read_checked(Path(path))
        with archive:
            return describe(obj, archive, root, tensor_bytes)
    except CheckpointError:
        raise
    except Exception as exc:  # a crafted graph can break interpretation anywhere: it is still a bad file
        raise CheckpointError(f"malformed checkpoint: {type(exc).__name__}: {str(exc)[:200]}") from None
