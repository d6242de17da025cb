"""YOLOv5 detection model assembled from an upstream-schema config dict.

The layer graph, channel scaling and module attribute names follow upstream's ``parse_model`` rules so that
an upstream state dict loads with ``strict=True``. ``build_model`` additionally accepts state dicts of
channel-pruned models, whose convolutions are narrower than the config says.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from prunebench.worker.engine.yolo.layers import (
    C3,
    SPP,
    SPPF,
    Bottleneck,
    BottleneckCSP,
    Concat,
    Conv,
    Detect,
    Focus,
)

# Modules whose first arg is an output width that the width multiple scales.
_WIDTH_SCALED: tuple[type[nn.Module], ...] = (Conv, Bottleneck, SPP, SPPF, Focus, BottleneckCSP, C3)
# Modules whose repeat count is passed into the block (as its ``n``) instead of stacking copies.
_REPEAT_INSIDE: tuple[type[nn.Module], ...] = (BottleneckCSP, C3)

_MODULES: dict[str, type[nn.Module]] = {
    "Conv": Conv,
    "Focus": Focus,
    "Bottleneck": Bottleneck,
    "BottleneckCSP": BottleneckCSP,
    "C3": C3,
    "SPP": SPP,
    "SPPF": SPPF,
    "Concat": Concat,
    "Detect": Detect,
    "nn.Upsample": nn.Upsample,
    "nn.MaxPool2d": nn.MaxPool2d,
    "nn.BatchNorm2d": nn.BatchNorm2d,
    "nn.ZeroPad2d": nn.ZeroPad2d,  # yolov3-tiny pads before its stride-1 pooling
}

_ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "SiLU": nn.SiLU,
    "ReLU": nn.ReLU,
    "ReLU6": nn.ReLU6,
    "Hardswish": nn.Hardswish,
    "LeakyReLU": nn.LeakyReLU,
    "Identity": nn.Identity,
}
_ACT_RE = re.compile(r"^(?:torch\.)?(?:nn\.)?(\w+)\(\s*([0-9.eE+-]*)\s*\)$")


def make_divisible(x: float, divisor: int = 8) -> int:
    """Round a scaled channel count up to a multiple of ``divisor`` (hardware-friendly widths)."""
    return math.ceil(x / divisor) * divisor


def _activation_factory(spec: object) -> Callable[[], nn.Module] | None:
    """Parse the optional yaml ``activation`` string (e.g. ``nn.LeakyReLU(0.1)``) without eval()."""
    if spec is None:
        return None
    match = _ACT_RE.match(str(spec).strip())
    if match is None or match.group(1) not in _ACTIVATIONS:
        raise ValueError(f"unsupported activation {spec!r}")
    cls = _ACTIVATIONS[match.group(1)]
    arg = match.group(2)
    if arg:
        value = float(arg)
        return lambda: cls(value)
    return cls


def _resolve_module(name: object) -> type[nn.Module]:
    key = str(name)
    if key.startswith("torch.nn."):
        key = key.removeprefix("torch.")
    if key not in _MODULES:
        raise ValueError(f"unsupported module {name!r} in model config")
    return _MODULES[key]


def parse_model(cfg: Mapping[str, Any], ch: int) -> tuple[nn.Sequential, list[int]]:
    """Instantiate the layer list; returns the Sequential and the indices whose outputs must be kept."""
    anchors = cfg["anchors"]
    nc = int(cfg["nc"])
    gd, gw = float(cfg["depth_multiple"]), float(cfg["width_multiple"])
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else int(anchors)
    no = na * (nc + 5)
    symbols: dict[str, Any] = {"nc": nc, "anchors": anchors, "None": None}

    layers: list[nn.Module] = []
    save: list[int] = []
    chans: list[int] = [ch]
    c2 = ch
    for i, (f, n, m_name, raw_args) in enumerate(list(cfg["backbone"]) + list(cfg["head"])):
        m = _resolve_module(m_name)
        args = [symbols.get(a, a) if isinstance(a, str) else a for a in raw_args]
        n = max(round(n * gd), 1) if n > 1 else n
        if m in _WIDTH_SCALED:
            c1, c2 = chans[f], args[0]
            if c2 != no:  # a conv that feeds detection outputs directly must keep its exact width
                c2 = make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
            if m in _REPEAT_INSIDE:
                args.insert(2, n)
                n = 1
        elif m is nn.BatchNorm2d:
            args = [chans[f]]
        elif m is Concat:
            c2 = sum(chans[x] for x in f)
        elif m is Detect:
            args = [*args, [chans[x] for x in f]]
            if isinstance(args[1], int):  # anchor count only: placeholder anchors, learned later
                args[1] = [list(range(args[1] * 2))] * len(f)
        else:
            c2 = chans[f]

        module = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        # Graph bookkeeping read by the forward pass (and by tools that walk the layers).
        module.i, module.f, module.type = i, f, m_name
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
        if i == 0:
            chans = []
        chans.append(c2)
    return nn.Sequential(*layers), sorted(set(save))


class DetectionModel(nn.Module):
    """A YOLOv5 detector. In eval mode ``forward`` returns ``(pred, feature_maps)`` with ``pred`` shaped
    ``[B, N, 5 + nc]`` (pixel xywh, objectness, class probabilities) decoded like upstream inference."""

    def __init__(self, yaml_cfg: Mapping[str, Any], ch: int = 3, nc: int | None = None) -> None:
        super().__init__()
        cfg: dict[str, Any] = copy.deepcopy(dict(yaml_cfg))
        ch = cfg["ch"] = int(cfg.get("ch", ch))
        if nc is not None:
            cfg["nc"] = int(nc)
        self.yaml = cfg
        self.model, self.save = parse_model(copy.deepcopy(cfg), ch)
        self.names: list[str] = [str(i) for i in range(int(cfg["nc"]))]

        act = _activation_factory(cfg.get("activation"))
        if act is not None:
            for module in self.model.modules():
                if isinstance(module, Conv) and isinstance(module.act, nn.SiLU):
                    module.act = act()

        head = self.model[-1]
        if not isinstance(head, Detect):
            raise ValueError("model config must end with a Detect layer")
        # Strides come from a dummy pass in training mode (raw per-level maps), as upstream does.
        s = 256
        self.train()
        with torch.no_grad():
            maps = self.forward(torch.zeros(1, ch, s, s))
        head.stride = torch.tensor([s / x.shape[-2] for x in maps])
        self._check_anchor_order(head)
        with torch.no_grad():
            head.anchors /= head.stride.view(-1, 1, 1)  # stored in grid units, like upstream
        head.initialize_biases()

    @property
    def stride(self) -> torch.Tensor:
        return self.model[-1].stride

    @property
    def nc(self) -> int:
        return int(self.model[-1].nc)

    @staticmethod
    def _check_anchor_order(head: Detect) -> None:
        # Anchor sizes must grow with stride; configs written the other way round are flipped.
        area = head.anchors.prod(-1).mean(-1).view(-1)
        da = area[-1] - area[0]
        ds = head.stride[-1] - head.stride[0]
        if da != 0 and da.sign() != ds.sign():
            with torch.no_grad():
                head.anchors[:] = head.anchors.flip(0)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        outputs: list[torch.Tensor | None] = []
        y: Any = x
        for m in self.model:
            if m.f != -1:
                y = outputs[m.f] if isinstance(m.f, int) else [y if j == -1 else outputs[j] for j in m.f]
            y = m(y)
            outputs.append(y if m.i in self.save else None)
        return y

    def fuse(self) -> DetectionModel:
        """Fold every Conv's BatchNorm into its conv weights (in place); returns self."""
        for module in self.model.modules():
            if isinstance(module, Conv) and "bn" in module._modules:
                module.conv = fuse_conv_and_bn(module.conv, module.bn)
                del module.bn
        return self

    @property
    def is_fused(self) -> bool:
        return not any(isinstance(m, Conv) and "bn" in m._modules for m in self.model.modules())


@torch.no_grad()
def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A Conv2d with bias equivalent to ``bn(conv(x))`` in eval mode."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    fused.requires_grad_(False)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_(scale * conv_bias + bn.bias - bn.weight * bn.running_mean / torch.sqrt(bn.running_var + bn.eps))
    return fused


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)


def _adapt_conv(conv: nn.Conv2d, weight: torch.Tensor, has_bias: bool) -> nn.Conv2d:
    out_ch = int(weight.shape[0])
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    groups = out_ch if depthwise else conv.groups
    return nn.Conv2d(
        int(weight.shape[1]) * groups,
        out_ch,
        kernel_size=tuple(int(k) for k in weight.shape[2:]),
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=groups,
        bias=has_bias,
        padding_mode=conv.padding_mode,
    )


def _adapt_bn(bn: nn.BatchNorm2d, num_features: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(
        num_features,
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
    )


def adapt_to_state_dict(model: DetectionModel, state_dict: Mapping[str, torch.Tensor]) -> DetectionModel:
    """Resize Conv2d/BatchNorm2d modules to the shapes a (channel-pruned) state dict holds, in place.

    A saved fused model (conv biases, no BN tensors) makes the model fuse first so the key sets agree.
    """
    if not model.is_fused and any(
        f"{n}.conv.bias" in state_dict and f"{n}.bn.weight" not in state_dict
        for n, m in model.named_modules()
        if isinstance(m, Conv)
    ):
        model.fuse()
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Conv2d):
            weight = state_dict.get(f"{name}.weight")
            if weight is not None and weight.dim() == 4 and tuple(weight.shape) != tuple(module.weight.shape):
                _set_submodule(model, name, _adapt_conv(module, weight, f"{name}.bias" in state_dict))
        elif isinstance(module, nn.BatchNorm2d):
            ref = state_dict.get(f"{name}.running_mean", state_dict.get(f"{name}.weight"))
            if ref is not None and ref.dim() == 1 and ref.shape[0] != module.num_features:
                _set_submodule(model, name, _adapt_bn(module, int(ref.shape[0])))
    return model


def build_model(yaml_cfg: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor] | None = None) -> DetectionModel:
    """Build a float32 eval-mode model; with ``state_dict``, resize layers to it and load it strictly."""
    model = DetectionModel(yaml_cfg)
    if state_dict is not None:
        adapt_to_state_dict(model, state_dict)
        model.load_state_dict(dict(state_dict), strict=True)
    return model.float().eval()
