"""Size limits for untrusted checkpoints, and a torch-free size estimate of a YOLOv5 model config.

A checkpoint's yaml decides how much memory building and running the model takes (``nc: 200000`` or
``width_multiple: 40`` in a 2 KB file asks for tens of GB). The API refuses such files at upload and the
worker refuses them before building any module, both through `estimate_architecture`, which walks the
layer rows the way upstream's ``parse_model`` scales them (channel counts, repeats) and sums parameter
counts and per-image activation sizes without allocating anything.

The limits are far above every official model (yolov5x6: 140 M parameters, widest layer 1280 channels,
80 classes) and far below what would exhaust a worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_NUM_CLASSES = 10_000
"""Largest class count accepted (LVIS has 1,203; Objects365 365; Open Images 601)."""
MAX_MULTIPLE = 4.0
"""Largest depth_multiple / width_multiple accepted (official sizes use at most 1.33 and 1.25)."""
MAX_CHANNELS = 8192
"""Widest layer accepted after width scaling (official models: at most 1280)."""
MAX_REPEATS = 64
"""Most repeats of one block after depth scaling (official models: at most 12)."""
MAX_LAYERS = 512
"""Most layer rows (backbone + head) in a config (official models: 25 to 34)."""
MAX_PARAMETERS = 300_000_000
"""Most parameters (weights and BatchNorm buffers) a config may describe (1.2 GB in float32)."""
MAX_STRIDE = 1024.0
"""Largest per-level stride accepted (official models: 8 to 64)."""
MAX_LEVELS = 8
"""Most detection levels (official models: 3, P6 models 4)."""
INPUT_CHANNELS = 3
"""prunebench feeds RGB images: models must take 3 input channels (yaml ``ch``)."""
BYTES_PER_PARAMETER_IN_FILE = 16
"""Most tensor bytes a file may hold per parameter of its config: fp16 model + fp16 EMA + fp32 Adam
moments of an unstripped upstream training checkpoint is 12 bytes per parameter."""
TENSOR_BYTES_SLACK = 16 * 1024 * 1024
"""Tensor bytes allowed on top of the per-parameter bound (anchors, small extras)."""

# Blocks prunebench's model builder knows; anything else is named in the refusal.
_WIDTH_SCALED = {"Conv", "Bottleneck", "SPP", "SPPF", "Focus", "BottleneckCSP", "C3"}
_SAME_SHAPE = {"nn.BatchNorm2d", "nn.ZeroPad2d"}
SUPPORTED_BLOCKS: tuple[str, ...] = (
    *sorted(_WIDTH_SCALED),
    "Concat",
    "Detect",
    "nn.Upsample",
    "nn.MaxPool2d",
    "nn.BatchNorm2d",
    "nn.ZeroPad2d",
)


class ArchitectureError(ValueError):
    """The config is malformed, uses an unsupported block, or exceeds a limit; the message says which."""


@dataclass(frozen=True)
class ArchEstimate:
    """What a config costs: parameters and, per image at 640x640, activation element counts."""

    parameters: int
    num_classes: int
    levels: int
    anchors_per_level: int
    saved_elements_640: int
    """Elements of the layer outputs kept for later layers (the skip connections), one 640x640 image."""
    peak_elements_640: int
    """Largest transient of one layer (its input plus about three outputs' worth), one 640x640 image."""
    total_elements_640: int
    """Elements of every layer output: what training keeps for the backward pass, one 640x640 image."""
    detect_channels: int
    """Sum over levels of anchors x (5 + nc): output channels of the detection convolutions."""

    def inference_bytes(self, img_size: int, batch: int) -> int:
        """Float32 activation bytes of a no-grad forward pass (kept maps, largest transient, decoded output).

        Estimated, not measured: element counts scale with the image area; the decoded output is
        anchors x (5 + nc) per cell, held about three times over (raw maps, sigmoid, concatenation).
        """
        area = (img_size / 640.0) ** 2
        per_image = (self.saved_elements_640 + self.peak_elements_640) * area + self._detect_elements(img_size) * 3
        return int(per_image * 4 * batch)

    def training_bytes(self, img_size: int, batch: int) -> int:
        """Float32 activation bytes of a training step: every layer output kept, about 3x with BatchNorm/act."""
        area = (img_size / 640.0) ** 2
        per_image = self.total_elements_640 * area * 3 + self._detect_elements(img_size) * 3
        return int(per_image * 4 * batch)

    def _detect_elements(self, img_size: int) -> float:
        # Cells per level shrink by the level's stride (8, 16, 32, ...).
        cells = sum((img_size / (8 * 2**i)) ** 2 for i in range(self.levels))
        return cells * self.anchors_per_level * (self.num_classes + 5)


def _int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ArchitectureError(f"{what} must be an integer from {low} to {high}, got {_show(value)}")
    return value


def _number(value: object, what: str, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= high or math.isnan(value):
        raise ArchitectureError(f"{what} must be a number in (0, {high}], got {_show(value)}")
    return float(value)


def _show(value: object) -> str:
    """A short, safe rendering of an untrusted value (never a repr of an arbitrary object graph)."""
    if isinstance(value, bool | int | float) or value is None:
        return repr(value)[:40]
    if isinstance(value, str):
        return repr(value[:40])
    return type(value).__name__


def check_num_classes(nc: object) -> int:
    return _int(nc, "the number of classes (nc)", 1, MAX_NUM_CLASSES)


def _anchors(cfg: dict[str, Any]) -> tuple[int, int]:
    """(levels, anchors per level) from ``anchors``: a list of per-level (w, h) lists, or a count."""
    anchors = cfg.get("anchors", 3)
    if isinstance(anchors, list):
        if not 1 <= len(anchors) <= MAX_LEVELS or not all(isinstance(a, list) for a in anchors):
            raise ArchitectureError(f"anchors must be 1 to {MAX_LEVELS} lists of (w, h) pairs")
        per_level = len(anchors[0]) // 2
        _int(per_level, "anchors per level", 1, 16)
        return len(anchors), per_level
    return 3, _int(anchors, "anchors", 1, 16)


def _conv(c1: int, c2: int, k: int = 1, g: int = 1) -> int:
    # Conv2d weight plus BatchNorm weight, bias, running mean and running variance.
    return c1 * c2 * k * k // max(g, 1) + 4 * c2


def _block_params(name: str, c1: int, c2: int, n: int, args: list[Any]) -> int:
    """Parameter count of one block, from the constructor arguments prunebench's layers take."""
    k = args[1] if len(args) > 1 and isinstance(args[1], int) and not isinstance(args[1], bool) else 1
    if name == "Conv":
        return _conv(c1, c2, min(k, 15))
    if name == "Focus":
        return _conv(4 * c1, c2, min(k, 15))
    hidden = c2 // 2
    bottleneck = _conv(hidden, hidden, 1) + _conv(hidden, hidden, 3)
    if name == "Bottleneck":
        return _conv(c1, hidden) + _conv(hidden, c2, 3)
    if name == "C3":
        return 2 * _conv(c1, hidden) + _conv(2 * hidden, c2) + n * bottleneck
    if name == "BottleneckCSP":
        return _conv(c1, hidden) + 2 * c1 * hidden + _conv(2 * hidden, c2) + 4 * hidden + n * bottleneck
    # SPP / SPPF: a 1x1 conv to c1/2, pooling, and a 1x1 conv over the concatenated pools.
    pools = len(args[1]) if name == "SPP" and len(args) > 1 and isinstance(args[1], list | tuple) else 3
    return _conv(c1, c1 // 2) + _conv(c1 // 2 * (pools + 1), c2)


def _rows(cfg: dict[str, Any]) -> list[Any]:
    backbone, head = cfg.get("backbone"), cfg.get("head")
    if not isinstance(backbone, list) or not isinstance(head, list):
        raise ArchitectureError("model config needs 'backbone' and 'head' layer lists")
    rows = backbone + head
    if not 1 <= len(rows) <= MAX_LAYERS:
        raise ArchitectureError(f"model config must have 1 to {MAX_LAYERS} layers, has {len(rows)}")
    return rows


def _sources(f: object, count: int) -> list[int]:
    items = f if isinstance(f, list) else [f]
    if not items or len(items) > MAX_LAYERS:
        raise ArchitectureError("a layer's 'from' must be a layer index or a list of them")
    out = []
    for x in items:
        idx = _int(x, "a layer's 'from' index", -count, count - 1)
        out.append(idx % count)
    return out


def unsupported_block_message(name: str) -> str:
    return (
        f"unsupported block {name!r} in the model config: prunebench builds YOLOv5 detectors from "
        f"{', '.join(SUPPORTED_BLOCKS)}; GhostConv, C3Ghost, C3TR (transformer) and the other hub variants' "
        "blocks are not supported"
    )


def estimate_architecture(cfg: object, nc: int | None = None) -> ArchEstimate:
    """Parameter and activation estimate of an upstream-schema config dict; raises ArchitectureError.

    `nc` overrides ``cfg["nc"]`` (an upstream checkpoint's head is authoritative). Checks, before any
    arithmetic that could grow: nc, multiples, input channels, layer count, repeats, widths, strides.
    """
    if not isinstance(cfg, dict):
        raise ArchitectureError("model config must be a dict")
    classes = check_num_classes(cfg.get("nc") if nc is None else nc)
    gd = _number(cfg.get("depth_multiple", 1.0), "depth_multiple", MAX_MULTIPLE)
    gw = _number(cfg.get("width_multiple", 1.0), "width_multiple", MAX_MULTIPLE)
    ch = cfg.get("ch", INPUT_CHANNELS)
    if ch != INPUT_CHANNELS or isinstance(ch, bool):
        raise ArchitectureError(
            f"the model takes {_show(ch)} input channel(s) (yaml 'ch'); prunebench evaluates RGB images, "
            f"so only {INPUT_CHANNELS}-channel models are supported"
        )
    levels, per_level = _anchors(cfg)
    no = per_level * (classes + 5)
    rows = _rows(cfg)
    chans: list[int] = []
    scales: list[int] = []  # downsampling factor of each layer's output
    elements: list[int] = []  # output elements per 640x640 image
    used_later: set[int] = set()
    params = 0
    peak = 0
    detect_channels = 0
    for i, row in enumerate(rows):
        if not isinstance(row, list | tuple) or len(row) != 4:
            raise ArchitectureError(f"layer {i} must be [from, repeats, module, args]")
        f, n, name, args = row
        name = str(name).removeprefix("torch.") if isinstance(name, str) else _show(name)
        if not isinstance(args, list):
            raise ArchitectureError(f"layer {i} ({name}) args must be a list")
        repeats = _int(n, f"layer {i} repeats", 1, MAX_REPEATS)
        repeats = max(round(repeats * gd), 1) if repeats > 1 else repeats
        _int(repeats, f"layer {i} repeats after depth_multiple", 1, MAX_REPEATS)
        src = _sources(f, i) if i else [0]
        c_in = chans[src[0]] if i else INPUT_CHANNELS
        s_in = scales[src[0]] if i else 1
        if i:
            used_later.update(s for s, raw in zip(src, f if isinstance(f, list) else [f], strict=True) if raw != -1)
        if name in _WIDTH_SCALED:
            c2 = args[0] if args else None
            c2 = _int(c2, f"layer {i} ({name}) channels", 1, MAX_CHANNELS)
            if c2 != no:
                c2 = math.ceil(c2 * gw / 8) * 8
            _int(c2, f"layer {i} ({name}) channels after width_multiple", 1, MAX_CHANNELS)
            block = _block_params(name, c_in, c2, repeats if name in ("C3", "BottleneckCSP") else 1, args)
            params += block * (1 if name in ("C3", "BottleneckCSP") else repeats)
            stride = args[2] if name in ("Conv", "Focus") and len(args) > 2 else 1
            scale = s_in * (2 if name == "Focus" else 1) * _int(stride, f"layer {i} stride", 1, 64)
        elif name in _SAME_SHAPE:
            c2, scale = c_in, s_in
            params += 4 * c2 if name == "nn.BatchNorm2d" else 0
        elif name == "Concat":
            c2, scale = sum(chans[s] for s in src), s_in
        elif name == "nn.Upsample":
            factor = args[1] if len(args) > 1 else 2
            factor = round(factor) if isinstance(factor, float) and math.isfinite(factor) else factor
            c2 = c_in
            scale = max(s_in // _int(factor, f"layer {i} upsample factor", 1, 64), 1)
        elif name == "nn.MaxPool2d":
            k = args[0] if args else 2
            c2 = c_in
            scale = s_in * _int(args[1] if len(args) > 1 else k, f"layer {i} pooling stride", 1, 64)
        elif name == "Detect":
            if not isinstance(cfg.get("anchors"), list):
                levels = len(src)  # ``anchors: 3`` gives a count per level; the levels are Detect's inputs
            if len(src) != levels:
                raise ArchitectureError(f"Detect takes {len(src)} levels but anchors define {levels}")
            params += sum((chans[s] + 1) * no for s in src)
            detect_channels = no * len(src)
            c2, scale = 0, s_in
        else:
            raise ArchitectureError(unsupported_block_message(name))
        if scale > MAX_STRIDE:
            raise ArchitectureError(f"layer {i} ({name}) downsamples by {scale}, more than {MAX_STRIDE:g}")
        if params > MAX_PARAMETERS:
            raise ArchitectureError(f"model config describes more than {MAX_PARAMETERS:,} parameters")
        cells = (640 // scale) ** 2 if scale <= 640 else 1
        out_elements = c2 * cells
        peak = max(peak, c_in * (640 // max(s_in, 1)) ** 2 + 3 * out_elements * repeats)
        chans.append(c2)
        scales.append(scale)
        elements.append(out_elements)
    if not rows or str(rows[-1][2]) != "Detect":
        raise ArchitectureError("model config must end with a Detect layer")
    return ArchEstimate(
        parameters=params,
        num_classes=classes,
        levels=levels,
        anchors_per_level=per_level,
        saved_elements_640=sum(elements[j] for j in used_later),
        peak_elements_640=peak,
        total_elements_640=sum(elements),
        detect_channels=detect_channels,
    )


def check_stride(values: list[float]) -> list[float]:
    """Per-level strides as stored in a checkpoint: 1 to MAX_LEVELS finite values in [1, MAX_STRIDE]."""
    if not 1 <= len(values) <= MAX_LEVELS:
        raise ArchitectureError(f"checkpoint stride must have 1 to {MAX_LEVELS} levels, has {len(values)}")
    for v in values:
        if not (isinstance(v, int | float) and 1.0 <= v <= MAX_STRIDE):
            raise ArchitectureError(f"checkpoint stride values must be in [1, {MAX_STRIDE:g}], got {_show(v)}")
    return [float(v) for v in values]


def max_tensor_bytes(parameters: int) -> int:
    """Most tensor bytes a checkpoint of a config with `parameters` may hold (see BYTES_PER_PARAMETER_IN_FILE)."""
    return parameters * BYTES_PER_PARAMETER_IN_FILE + TENSOR_BYTES_SLACK
