"""prunebench's model artifact: a ``torch.save``'d dict that ``torch.load(weights_only=True)`` reads.

Layout (version 1)::

    {"format": "prunebench", "version": 1,
     "yaml": <upstream-schema config dict, or an official name like "yolov5s">,
     "names": [class names], "stride": [8.0, 16.0, 32.0],
     "state": {tensor name: tensor | packed entry},
     "meta": {"fused": bool, "half": bool, ...caller's primitives}}

A *packed entry* stores a sparse floating tensor as
``{"encoding": "bitmask", "shape": [...], "mask": uint8 tensor, "values": 1-D tensor}``: ``mask`` is the
flattened non-zero pattern packed 8 per byte (numpy ``packbits``, big-endian bit order) and ``values`` the
non-zeros in row-major order. Tensors are packed only when that is smaller, so the file size reflects the
sparsity (at 50% zeros a float32 weight costs 1/32 + 1/2 of its dense bytes).

Values keep their dtype (float32: lossless) unless ``half=True`` stores floats as float16, the precision
upstream ships checkpoints in. The state holds exactly the tensors of ``model.state_dict()``: a fused
model's convs carry biases and no BatchNorm tensors; ``build_model`` fuses its freshly built model when it
sees that layout, so a saved fused model reloads with identical weights. Channel-pruned models store their
narrower tensors; ``build_model`` resizes layers to them (the config itself is unchanged).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunebench.infra.files import write_atomic_with

FORMAT = "prunebench"
VERSION = 1
# torch.save writes every tensor as its own 64-byte-aligned zip entry; a packed tensor costs one entry more.
_ENTRY_OVERHEAD_BYTES = 128
_PRIMITIVES = (str, int, float, bool, type(None))


def _is_plain(value: Any, depth: int = 0) -> bool:
    """True for data ``torch.load(weights_only=True)`` accepts without extra globals."""
    if depth > 32:
        return False
    if isinstance(value, _PRIMITIVES):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str | int) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _pack(tensor: torch.Tensor, half: bool) -> torch.Tensor | dict[str, Any]:
    """The tensor as stored: plain, or bitmask + non-zero values when that is smaller."""
    t = tensor.detach().cpu()
    if t.is_floating_point():
        t = t.half() if half else t.float()
    flat = t.reshape(-1)
    dense_bytes = flat.numel() * flat.element_size()
    if t.is_floating_point() and t.dim() > 0:
        nonzero = flat != 0
        nnz = int(nonzero.sum())
        packed_bytes = math.ceil(flat.numel() / 8) + nnz * flat.element_size() + _ENTRY_OVERHEAD_BYTES
        if packed_bytes < dense_bytes:
            mask = torch.from_numpy(np.packbits(nonzero.numpy()))
            return {"encoding": "bitmask", "shape": list(t.shape), "mask": mask, "values": flat[nonzero].clone()}
    return t.contiguous().clone()  # own storage: a view would drag its whole base storage into the file


def _unpack(name: str, entry: Any) -> torch.Tensor:
    if isinstance(entry, torch.Tensor):
        return entry.float() if entry.is_floating_point() else entry
    if not isinstance(entry, Mapping) or entry.get("encoding") != "bitmask":
        raise ValueError(f"{name}: unknown tensor encoding")
    shape, mask, values = entry.get("shape"), entry.get("mask"), entry.get("values")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError(f"{name}: bad shape")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.uint8 or not isinstance(values, torch.Tensor):
        raise ValueError(f"{name}: bad mask or values")
    numel = math.prod(shape)
    if mask.numel() != math.ceil(numel / 8):
        raise ValueError(f"{name}: mask size does not match shape {shape}")
    keep = torch.from_numpy(np.unpackbits(mask.numpy(), count=numel).astype(bool))
    if int(keep.sum()) != values.numel():
        raise ValueError(f"{name}: {values.numel()} values for {int(keep.sum())} mask bits")
    out = torch.zeros(numel, dtype=torch.float32)
    out[keep] = values.float().reshape(-1)
    return out.reshape(shape)


def unpack_state_dict(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The float32 state dict of a loaded artifact dict; ValueError when it is not a valid artifact."""
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        raise ValueError("not a prunebench artifact")
    if obj.get("version") != VERSION:
        raise ValueError(f"unsupported prunebench artifact version {obj.get('version')!r}")
    state = obj.get("state")
    if not isinstance(state, Mapping) or not state:
        raise ValueError("prunebench artifact has no 'state' tensors")
    return {str(name): _unpack(str(name), entry) for name, entry in state.items()}


def _names_list(names: Any, nc: int | None) -> list[str]:
    if isinstance(names, Mapping):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, Sequence) and not isinstance(names, str):
        return [str(n) for n in names]
    return [str(i) for i in range(nc or 0)]


def _stride_list(stride: Any) -> list[float]:
    if isinstance(stride, torch.Tensor):
        return [float(s) for s in stride.flatten().tolist()]
    if isinstance(stride, Sequence):
        return [float(s) for s in stride]
    return []


def _is_fused(model: nn.Module) -> bool:
    flag = getattr(model, "is_fused", None)
    if isinstance(flag, bool):
        return flag
    return not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def build_artifact(
    model: nn.Module,
    *,
    yaml: dict[str, Any] | str,
    names: Any,
    stride: Any,
    meta: Mapping[str, Any] | None = None,
    half: bool = False,
) -> dict[str, Any]:
    """The artifact dict for ``model`` (what ``save_model`` writes)."""
    user_meta = dict(meta or {})
    if not _is_plain(user_meta) or not _is_plain(yaml):
        raise TypeError("artifact yaml and meta may hold only str/int/float/bool/None, lists and dicts")
    state = {name: _pack(t, half) for name, t in model.state_dict().items()}
    packed = sum(isinstance(v, dict) for v in state.values())
    nc = getattr(model, "nc", None)
    return {
        "format": FORMAT,
        "version": VERSION,
        "yaml": yaml,
        "names": _names_list(names, nc if isinstance(nc, int) else None),
        "stride": _stride_list(stride),
        "state": state,
        "meta": {**user_meta, "fused": _is_fused(model), "half": half, "packed_tensors": packed},
    }


def atomic_save(obj: Any, path: Path) -> int:
    """torch.save to a temp file next to ``path`` then rename: readers never see a half-written file."""
    return write_atomic_with(path, lambda fh: torch.save(obj, fh))


class _ByteCounter(io.RawIOBase):
    """A write-only sink that only counts: torch.save's zip writer needs nothing more than ``write``."""

    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self.count += size
        return size


def _artifact_for(
    model: nn.Module,
    source: Any,
    *,
    yaml: dict[str, Any] | str | None,
    names: Any,
    stride: Any,
    meta: Mapping[str, Any] | None,
    half: bool,
) -> dict[str, Any]:
    def pick(value: Any, attr: str) -> Any:
        if value is not None:
            return value
        from_source = getattr(source, attr, None)
        return from_source if from_source is not None else getattr(model, attr, None)

    cfg = pick(yaml, "yaml")
    if not isinstance(cfg, dict | str):
        raise TypeError("save_model needs the model config ('yaml': dict or official name)")
    return build_artifact(
        model, yaml=cfg, names=pick(names, "names"), stride=pick(stride, "stride"), meta=meta, half=half
    )


def save_model(
    model: nn.Module,
    source: Any = None,
    path: str | os.PathLike[str] | None = None,
    *,
    yaml: dict[str, Any] | str | None = None,
    names: Any = None,
    stride: Any = None,
    meta: Mapping[str, Any] | None = None,
    half: bool = False,
) -> int:
    """Write ``model`` as a prunebench artifact at ``path``; returns the bytes written.

    ``yaml``/``names``/``stride`` default to those of ``source`` (anything with such attributes, e.g. a
    ``checkpoints.LoadedModel``), then to the model's own ``yaml``/``names``/``stride``.
    """
    if path is None:
        raise TypeError("save_model needs a path")
    artifact = _artifact_for(model, source, yaml=yaml, names=names, stride=stride, meta=meta, half=half)
    return atomic_save(artifact, Path(path))


def artifact_size(
    model: nn.Module,
    source: Any = None,
    *,
    yaml: dict[str, Any] | str | None = None,
    names: Any = None,
    stride: Any = None,
    meta: Mapping[str, Any] | None = None,
    half: bool = False,
) -> int:
    """Bytes ``save_model`` would write for the same arguments, computed without touching the disk."""
    artifact = _artifact_for(model, source, yaml=yaml, names=names, stride=stride, meta=meta, half=half)
    sink = _ByteCounter()
    torch.save(artifact, sink)
    return sink.count
