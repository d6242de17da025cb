"""Load detector checkpoints into prunebench's own ``DetectionModel`` without running checkpoint code.

Accepted files (all torch zip archives):

* **Upstream YOLOv5** (``train.py`` output: ``{"model": DetectionModel, "ema": ..., "opt": ...}``, or a
  bare pickled model). Read with ``torch.load(weights_only=True)`` where every upstream global is mapped
  onto an inert stand-in class, so no upstream code is needed or run; the tensors are then loaded strictly
  into a model rebuilt from the pickled ``yaml`` config. EMA weights are preferred, as upstream does.
* **State dict**: ``torch.save({"state_dict": {name: tensor}, "yaml": cfg_or_name, "names": [...]})``
  where ``yaml`` is an upstream-schema config dict or an official name (``"yolov5n"`` .. ``"yolov5x"``),
  and ``names`` (optional) is a list or ``{index: name}`` dict. Tensor names are those of
  ``DetectionModel.state_dict()`` (identical to upstream's). ``"stride"`` may be given but is recomputed.
* **prunebench artifact**: ``{"format": "prunebench", "yaml": ..., "names": ..., "stride": ...}`` whose
  tensors ``prunebench.worker.engine.artifacts.unpack_state_dict`` extracts; channel-pruned shapes are fine.

Every file is first vetted by the torch-free ``prunebench.checkpoints.inspect`` walker, so refusals read the
same in the API and the worker. All failures raise ``CheckpointError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench.checkpoints.architectures import builtin_yaml_name
from prunebench.checkpoints.inspect import (
    INERT_VALUES,
    TORCH_MODULES,
    UPSTREAM_MODULES,
    CheckpointError,
    InertStub,
    class_names,
    find_upstream_model,
    inspect_checkpoint,
    qualname_of,
    refusal_message,
    stand_in,
)
from prunebench.checkpoints.limits import INPUT_CHANNELS
from prunebench.worker.engine.yolo.configs import get_config
from prunebench.worker.engine.yolo.layers import Focus
from prunebench.worker.engine.yolo.model import DetectionModel, build_model

# The activations upstream has used in Conv/BottleneckCSP across versions (<= v3 LeakyReLU/Hardswish).
_ACTIVATION_FACTORIES: dict[str, Any] = {
    "torch.nn.modules.activation.SiLU": lambda d: nn.SiLU(),
    "torch.nn.modules.activation.LeakyReLU": lambda d: nn.LeakyReLU(float(d.get("negative_slope", 0.01))),
    "torch.nn.modules.activation.Hardswish": lambda d: nn.Hardswish(),
    "torch.nn.modules.activation.ReLU": lambda d: nn.ReLU(),
    "torch.nn.modules.activation.ReLU6": lambda d: nn.ReLU6(),
    "torch.nn.modules.linear.Identity": lambda d: nn.Identity(),
}
_ACTIVATION_TYPES = (nn.SiLU, nn.LeakyReLU, nn.Hardswish, nn.ReLU, nn.ReLU6, nn.Identity)
# State-dict entries of old upstream checkpoints that current models no longer have.
_LEGACY_KEYS = re.compile(r"(^|\.)anchor_grid$")


@dataclass
class LoadedModel:
    model: DetectionModel  # float32, eval mode, not fused (unless the file itself held fused weights)
    names: list[str]
    nc: int
    stride: list[float]
    format: str
    yaml: dict[str, Any]
    arch: str | None


def _stand_ins() -> list[tuple[type[InertStub], str]]:
    """Fresh stand-in classes for one load: nothing a file does to them can reach another file's load."""
    return [(stand_in(name), name) for name in (*UPSTREAM_MODULES, *TORCH_MODULES, *INERT_VALUES)]


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(list(_stand_ins())):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files; all mean "cannot load"
        text = str(exc)
        match = re.search(r"GLOBAL ([\w.]+)", text)
        if match:
            name = match.group(1)
            # torch reports builtins without their module ("GLOBAL exec"); restore it for the message.
            raise CheckpointError(refusal_message(name if "." in name else f"builtins.{name}")) from None
        raise CheckpointError(f"cannot read checkpoint: {type(exc).__name__}: {text[:300]}") from None


def _walk(node: InertStub, prefix: str = "") -> list[tuple[str, InertStub]]:
    """(path, module) pairs of a stand-in module tree, root first."""
    found = [(prefix, node)]
    for name, child in (node.__dict__.get("_modules") or {}).items():
        if isinstance(child, InertStub):
            found.extend(_walk(child, f"{prefix}.{name}" if prefix else str(name)))
    return found


def _state_of(tree: list[tuple[str, InertStub]]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path, module in tree:
        attrs = module.__dict__
        dot = f"{path}." if path else ""
        for name, value in (attrs.get("_parameters") or {}).items():
            if isinstance(value, torch.Tensor):
                state[dot + name] = value.detach()
        skip = attrs.get("_non_persistent_buffers_set") or set()
        for name, value in (attrs.get("_buffers") or {}).items():
            if isinstance(value, torch.Tensor) and name not in skip:
                state[dot + name] = value
    return {k: v for k, v in state.items() if not _LEGACY_KEYS.search(k)}


def _sync_module_settings(model: DetectionModel, tree: list[tuple[str, InertStub]]) -> None:
    """Carry over per-module settings a config cannot express: activations and BatchNorm eps."""
    ours = dict(model.named_modules())
    for path, pickled in tree:
        target = ours.get(path)
        if target is None:
            continue
        attrs = pickled.__dict__
        factory = _ACTIVATION_FACTORIES.get(qualname_of(pickled) or "")
        if factory is not None and isinstance(target, _ACTIVATION_TYPES):
            replacement = factory(attrs)
            if type(replacement) is not type(target) or repr(replacement) != repr(target):
                parent, _, leaf = path.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, leaf, replacement)
        elif isinstance(target, nn.BatchNorm2d) and isinstance(attrs.get("eps"), float):
            target.eps = attrs["eps"]


def _build(yaml_cfg: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> DetectionModel:
    float_state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        return build_model(yaml_cfg, float_state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise CheckpointError(f"weights do not match the model config: {str(exc)[:500]}") from None


def _infer_nc(state: Mapping[str, torch.Tensor], anchors_per_level: int) -> int | None:
    """Class count from the first detection conv (its outputs are anchors x (5 + nc))."""
    heads = [k for k in state if re.fullmatch(r"model\.\d+\.m\.0\.weight", k)]
    if not heads:
        return None
    out = int(state[max(heads, key=lambda k: int(k.split(".")[1]))].shape[0])
    return out // anchors_per_level - 5 if out % anchors_per_level == 0 else None


def _resolve_yaml(spec: object, names: object, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    if isinstance(spec, dict):
        return dict(spec)
    arch = builtin_yaml_name(spec)
    if arch is None:
        raise CheckpointError("checkpoint needs 'yaml': a config dict or an official name like 'yolov5s'")
    nc: int | None = len(names) if isinstance(names, list | tuple | dict) and names else None
    if nc is None:
        nc = _infer_nc(state, 3)
    return get_config(arch, nc=nc or 80)


def _check_input_channels(model: DetectionModel) -> None:
    """Refuse models that do not take RGB input (a ``ch: 1`` yaml, or first-layer weights of another width).

    Checked here, not at the first batch: a state dict can narrow the first conv whatever the yaml says.
    """
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    expected = INPUT_CHANNELS * (4 if isinstance(model.model[0], Focus) else 1)
    if first is not None and first.in_channels != expected:
        raise CheckpointError(
            f"the model's first layer takes {first.in_channels} input channels, not {expected}: prunebench "
            f"evaluates RGB images, so only {INPUT_CHANNELS}-channel models are supported"
        )


def _finish(model: DetectionModel, names: object, fmt: str, yaml_cfg: dict[str, Any], arch: str | None) -> LoadedModel:
    _check_input_channels(model)
    nc = model.nc
    resolved = class_names(names, nc)
    model.names = resolved
    return LoadedModel(
        model=model.float().eval(),
        names=resolved,
        nc=nc,
        stride=[float(s) for s in model.stride.tolist()],
        format=fmt,
        yaml=yaml_cfg,
        arch=arch,
    )


def _load_upstream(obj: Any, arch: str | None) -> LoadedModel:
    root = find_upstream_model(obj)
    if root is None:
        raise CheckpointError("upstream checkpoint holds no DetectionModel under 'ema' or 'model'")
    yaml_cfg = root.__dict__.get("yaml")
    if not isinstance(yaml_cfg, dict):
        raise CheckpointError("upstream checkpoint model has no yaml config dict")
    tree = _walk(root)
    state = _state_of(tree)
    yaml_cfg = dict(yaml_cfg)
    heads = [m for _, m in tree if qualname_of(m) == "models.yolo.Detect"]
    head_nc = heads[-1].__dict__.get("nc") if heads else None
    if isinstance(head_nc, int):
        yaml_cfg["nc"] = head_nc  # the head is authoritative when an old yaml disagrees
    model = _build(yaml_cfg, state)
    _sync_module_settings(model, tree)
    return _finish(model, root.__dict__.get("names"), "yolov5", yaml_cfg, arch)


def _load_state_dict_format(obj: dict[str, Any], arch: str | None) -> LoadedModel:
    state = obj.get("state_dict")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("'state_dict' must map parameter names to tensors")
    yaml_cfg = _resolve_yaml(obj.get("yaml"), obj.get("names"), state)
    model = _build(yaml_cfg, state)
    return _finish(model, obj.get("names"), "state_dict", yaml_cfg, arch)


def _load_prunebench(obj: dict[str, Any], arch: str | None) -> LoadedModel:
    from prunebench.worker.engine.artifacts import unpack_state_dict  # lazy: artifacts is an optional sibling

    try:
        state = unpack_state_dict(obj)
    except CheckpointError:
        raise
    except Exception as exc:  # a malformed artifact can fail in many ways; report, don't crash
        raise CheckpointError(f"corrupt prunebench artifact: {type(exc).__name__}: {exc}") from None
    yaml_cfg = _resolve_yaml(obj.get("yaml"), obj.get("names"), state)
    model = _build(yaml_cfg, state)
    return _finish(model, obj.get("names"), "prunebench", yaml_cfg, arch)


def load_model(path: Path) -> LoadedModel:
    """Load any supported checkpoint as a float32 eval-mode, unfused DetectionModel."""
    path = Path(path)
    meta = inspect_checkpoint(path)  # refuses unsafe or malformed files before torch sees them
    obj = _torch_load(path)
    if meta.format == "yolov5":
        return _load_upstream(obj, meta.arch)
    if not isinstance(obj, dict):
        raise CheckpointError("unrecognised checkpoint layout")
    if meta.format == "prunebench":
        return _load_prunebench(obj, meta.arch)
    return _load_state_dict_format(obj, meta.arch)
