"""Torch-free inspection of uploaded checkpoints (the API service imports this; it must never import torch).

A torch checkpoint is a zip archive holding ``<root>/data.pkl`` (the object graph) and ``<root>/data/<key>``
(raw tensor bytes). Unpickling runs code named by the pickle, so uploads are never unpickled normally:
``data.pkl`` is walked by an Unpickler whose ``find_class`` maps an explicit allow-list of globals onto inert
placeholder classes and refuses everything else, and whose ``persistent_load`` never touches tensor data.
Nothing a checkpoint names is imported or executed.

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
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from prunebench.checkpoints.architectures import arch_of_yaml, builtin_yaml_name
from prunebench.contract import CheckpointFormat

# Archive limits. Real YOLOv5 pickles are well under 1 MiB (x-size, unstripped: a few MiB); tensors live
# in separate entries. Limits guard against zip bombs and pathological archives, not honest files.
MAX_PICKLE_BYTES = 64 * 1024 * 1024
MAX_TOTAL_UNCOMPRESSED = 8 * 1024**3
MAX_ENTRIES = 100_000
MAX_COMPRESSION_RATIO = 200
MAX_STRIDE_BYTES = 1024

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


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object, *_: object) -> TensorStub:
    return TensorStub(storage, offset, size, stride)  # type: ignore[arg-type]


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


def _build_allow_list() -> dict[str, object]:
    allowed: dict[str, object] = {
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "builtins.bytearray": bytearray,
        "_codecs.encode": _encode_bytes,
        "torch.Size": tuple,
        "torch.device": str,
    }
    for name in UPSTREAM_MODULES + TORCH_MODULES:
        allowed[name] = stand_in(name, ModuleStub)
    for name in INERT_VALUES:
        allowed[name] = stand_in(name)
    for name in ("torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2"):
        allowed[name] = _rebuild_tensor
    for name in ("torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"):
        allowed[name] = _rebuild_parameter
    for storage in _TORCH_DTYPES:
        allowed[f"torch.{storage}"] = _StorageType(storage)
    for dtype in ("float16", "float32", "float64", "bfloat16", "int64", "int32", "uint8", "bool"):
        allowed[f"torch.{dtype}"] = dtype
    return allowed


_ALLOWED: dict[str, object] = _build_allow_list()


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
            return f"refused global {qualname!r}: {why}"
    return f"refused global {qualname!r}: not on the checkpoint allow-list"


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals, to placeholders; never imports or calls anything else."""

    def find_class(self, module: str, name: str) -> Any:
        qualname = normalize_global(module, name)
        if qualname not in _ALLOWED:
            raise CheckpointError(refusal_message(qualname))
        return _ALLOWED[qualname]

    def persistent_load(self, pid: Any) -> Any:
        # torch's id: ("storage", storage_type, key, location, numel); tensor bytes are not read here.
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise CheckpointError("refused persistent id: not a torch storage reference")
        storage_type = pid[1].name if isinstance(pid[1], _StorageType) else str(pid[1])
        numel = pid[4] if isinstance(pid[4], int) else 0
        return StorageStub(storage_type, str(pid[2]), numel)


def safe_unpickle(data: bytes) -> Any:
    """Unpickle ``data`` through the allow-list; any refusal or malformed stream -> CheckpointError."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except CheckpointError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        struct.error,
        RecursionError,
        MemoryError,
    ) as exc:
        raise CheckpointError(f"corrupt checkpoint pickle: {type(exc).__name__}: {exc}") from None


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
    archive, root = _open_archive(path)
    try:
        obj = safe_unpickle(_read_entry(archive, f"{root}/data.pkl", MAX_PICKLE_BYTES))
    except CheckpointError:
        archive.close()
        raise
    return obj, archive, root


# ---------------------------------------------------------------------------------------------------------
# Interpreting the object graph


def class_names(names: object, nc: int | None) -> list[str]:
    """Class names from a list, a tuple or an ``{index: name}`` dict; padded with indices up to ``nc``."""
    if isinstance(names, dict):
        try:
            indexed = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise CheckpointError("class names dict must map integer indices to names") from None
        size = max(indexed, default=-1) + 1
        result = [indexed.get(i, str(i)) for i in range(size)]
    elif isinstance(names, list | tuple):
        result = [str(n) for n in names]
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
    if not isinstance(tensor, TensorStub) or tensor.storage is None or len(tensor.size) != 1:
        return None
    code, itemsize = _TORCH_DTYPES.get(tensor.storage.storage_type, ("", 0))
    if code not in ("e", "f", "d"):
        return None
    try:
        raw = _read_entry(archive, f"{root}/data/{tensor.storage.key}", MAX_STRIDE_BYTES)
    except CheckpointError:
        return None  # the stride is informative only; callers fall back to the standard strides
    step = tensor.stride[0] if tensor.stride else 1
    values: list[float] = []
    for i in range(tensor.size[0]):
        start = (tensor.offset + i * step) * itemsize
        if start + itemsize > len(raw):
            return None
        values.append(float(struct.unpack_from("<" + code, raw, start)[0]))
    return values


def _default_stride(yaml_cfg: dict[str, Any] | None) -> list[float]:
    levels = len(yaml_cfg.get("anchors", [])) if isinstance(yaml_cfg, dict) else 3
    levels = levels if isinstance(levels, int) and levels > 0 else 3
    return [float(2 ** (3 + i)) for i in range(levels)]


UPSTREAM_MODEL_CLASSES = ("models.yolo.DetectionModel", "models.yolo.Model")


def is_upstream_model(obj: object) -> TypeGuard[InertStub]:
    """Is `obj` the stand-in of a pickled upstream YOLOv5 model (DetectionModel, or the older Model)?"""
    return isinstance(obj, InertStub) and obj.qualname in UPSTREAM_MODEL_CLASSES


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


def _detect_nc(model: InertStub) -> int | None:
    layers = model.__dict__.get("_modules", {}).get("model")
    modules = getattr(layers, "__dict__", {}).get("_modules", {})
    if not modules:
        return None
    head = list(modules.values())[-1]
    nc = getattr(head, "__dict__", {}).get("nc")
    return nc if isinstance(nc, int) else None


def _storage_types(obj: object, found: set[str], depth: int = 0) -> None:
    if depth > 200 or len(found) > 8:
        return
    if isinstance(obj, TensorStub):
        if obj.storage is not None:
            found.add(obj.storage.storage_type)
    elif isinstance(obj, dict):
        for v in obj.values():
            _storage_types(v, found, depth + 1)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _storage_types(v, found, depth + 1)
    elif isinstance(obj, InertStub):
        _storage_types(obj.__dict__, found, depth + 1)


def describe(obj: object, archive: zipfile.ZipFile, root: str) -> CheckpointMeta:
    """Interpret a safely unpickled object graph as one of the supported layouts."""
    model = find_upstream_model(obj)
    if model is not None:
        yaml_cfg = model.__dict__.get("yaml")
        if not isinstance(yaml_cfg, dict):
            raise CheckpointError("upstream checkpoint model has no yaml config dict")
        nc = _detect_nc(model) or yaml_cfg.get("nc")
        if not isinstance(nc, int) or nc <= 0:
            raise CheckpointError("cannot determine the number of classes")
        stride = _decode_floats(archive, root, model.__dict__.get("stride")) or _default_stride(yaml_cfg)
        found: set[str] = set()
        _storage_types(model.__dict__.get("_modules"), found)
        return CheckpointMeta(
            format="yolov5",
            num_classes=nc,
            class_names=class_names(model.__dict__.get("names"), nc),
            arch=arch_of_yaml(yaml_cfg),
            stride=stride,
            yaml=yaml_cfg,
            storage_types=sorted(found),
        )
    if not isinstance(obj, dict):
        raise CheckpointError(f"unrecognised checkpoint layout (top-level {type(obj).__name__})")
    if obj.get("format") == "prunebench" or "state_dict" in obj:
        fmt: CheckpointFormat = "prunebench" if obj.get("format") == "prunebench" else "state_dict"
        spec = obj.get("yaml")
        name = builtin_yaml_name(spec)
        yaml_cfg = spec if isinstance(spec, dict) else None
        if yaml_cfg is None and name is None:
            raise CheckpointError(f"{fmt} checkpoint needs 'yaml' (a config dict or an official model name)")
        names = obj.get("names")
        nc = yaml_cfg.get("nc") if yaml_cfg is not None else None
        if not isinstance(nc, int):
            nc = len(names) if isinstance(names, list | tuple | dict) and names else 80
        stride_raw = obj.get("stride")
        if isinstance(stride_raw, list | tuple) and all(isinstance(s, int | float) for s in stride_raw):
            stride = [float(s) for s in stride_raw]
        else:
            stride = _decode_floats(archive, root, stride_raw) or _default_stride(yaml_cfg)
        found = set()
        _storage_types(obj.get("state_dict"), found)
        return CheckpointMeta(
            format=fmt,
            num_classes=nc,
            class_names=class_names(names, nc),
            arch=name or arch_of_yaml(yaml_cfg),
            stride=stride,
            yaml=yaml_cfg,
            storage_types=sorted(found),
        )
    keys = ", ".join(sorted(str(k) for k in obj)[:10])
    raise CheckpointError(f"unrecognised checkpoint layout (top-level keys: {keys})")


def inspect_checkpoint(path: Path) -> CheckpointMeta:
    """Describe a checkpoint without importing torch or running anything it contains."""
    obj, archive, root = read_pickle(Path(path))
    with archive:
        return describe(obj, archive, root)
