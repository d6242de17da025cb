"""Building blocks of YOLOv5 detectors, written from the published architecture.

Attribute names (``conv``, ``bn``, ``act``, ``cv1``..``cv4``, ``m``, ``anchors``) are part of the on-disk
contract: upstream checkpoints store tensors under exactly these names, so renaming any of them breaks
strict state-dict loading.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

# Upstream trains with these BatchNorm settings; eps also changes inference numerics, so it must match.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def autopad(k: int | Sequence[int], p: int | Sequence[int] | None = None, d: int = 1) -> int | list[int]:
    """'Same' padding for odd kernels when no explicit padding is given."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


def _make_act(act: bool | nn.Module) -> nn.Module:
    if act is True:
        return nn.SiLU()
    if isinstance(act, nn.Module):
        return act
    return nn.Identity()


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation; after fuse() the BN is folded into the conv."""

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int | Sequence[int] = 1,
        s: int = 1,
        p: int | Sequence[int] | None = None,
        g: int = 1,
        d: int = 1,
        act: bool | nn.Module = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = _make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A fused Conv has no "bn" submodule any more (same as upstream, so fused state dicts match).
        bn = self._modules.get("bn")
        y = self.conv(x)
        if bn is not None:
            y = bn(y)
        return self.act(y)


class Focus(nn.Module):
    """Space-to-depth stem of YOLOv5 <= v5.0: four pixel phases stacked on channels, then a Conv."""

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        act: bool | nn.Module = True,
    ) -> None:
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Phase order matters: the first conv's input channels were trained in this order.
        phases = (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2])
        return self.conv(torch.cat(phases, 1))


class Bottleneck(nn.Module):
    """1x1 then 3x3 Conv with an optional residual (only when input and output widths agree)."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class BottleneckCSP(nn.Module):
    """Cross-stage-partial block of YOLOv5 <= v3.x (plain convs on the bypass, BN over the concat)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(c_, c_, 1, 1, bias=False)
        self.cv4 = Conv(2 * c_, c2, 1, 1)
        self.bn = nn.BatchNorm2d(2 * c_, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU()
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.cv3(self.m(self.cv1(x)))
        y2 = self.cv2(x)
        return self.cv4(self.act(self.bn(torch.cat((y1, y2), 1))))


class C3(nn.Module):
    """CSP block with three Convs: a bottleneck stack on one branch, a 1x1 bypass, a 1x1 merge."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPP(nn.Module):
    """Spatial pyramid pooling with parallel max-pools of several sizes (YOLOv5 <= v5.0)."""

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x, *(pool(x) for pool in self.m)], 1))


class SPPF(nn.Module):
    """SPP with one max-pool applied repeatedly; equals SPP(k=(5, 9, 13)) for k=5 but is cheaper."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    """Concatenates a list of feature maps (the yaml's multi-input ``from`` entries)."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


class Detect(nn.Module):
    """Anchor-based detection head: one 1x1 conv per pyramid level, decoded like upstream inference.

    ``anchors`` is a persistent buffer in *grid units* (pixels / stride), as upstream stores it.
    ``stride`` is a plain tensor attribute (not in the state dict), set by the model after a dummy pass.
    """

    def __init__(self, nc: int = 80, anchors: Sequence[Sequence[float]] = (), ch: Sequence[int] = ()) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5  # xywh, objectness, class scores
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.inplace = True
        # Grids depend on input size, device, dtype and stride; cached so repeated inference is cheap.
        self._grid_cache: dict[tuple[int, int, int, str, torch.dtype], tuple[torch.Tensor, ...]] = {}
        self._stride = torch.ones(self.nl)

    @property
    def stride(self) -> torch.Tensor:
        return self._stride

    @stride.setter
    def stride(self, value: torch.Tensor) -> None:
        self._stride = torch.as_tensor(value, dtype=torch.float32).flatten()
        self._grid_cache.clear()

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        outputs: list[torch.Tensor] = []
        decoded: list[torch.Tensor] = []
        for i in range(self.nl):
            xi = self.m[i](x[i])
            bs, _, ny, nx = xi.shape
            # (bs, na*no, ny, nx) -> (bs, na, ny, nx, no): the flattening order of predictions downstream.
            xi = xi.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            outputs.append(xi)
            if self.training:
                continue
            grid, anchor_grid, stride = self._grid(nx, ny, i, xi.device, xi.dtype)
            xy, wh, rest = xi.sigmoid().split((2, 2, self.nc + 1), 4)
            # Same operation order as upstream so float results agree bit-for-bit where possible.
            xy = (xy * 2 + grid) * stride
            wh = (wh * 2) ** 2 * anchor_grid
            decoded.append(torch.cat((xy, wh, rest), 4).view(bs, self.na * nx * ny, self.no))
        if self.training:
            return outputs
        return torch.cat(decoded, 1), outputs

    def _grid(
        self, nx: int, ny: int, i: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (i, nx, ny, str(device), dtype)
        cached = self._grid_cache.get(key)
        if cached is not None:
            return cached[0], cached[1], cached[2]
        shape = (1, self.na, ny, nx, 2)
        yv, xv = torch.meshgrid(
            torch.arange(ny, device=device, dtype=dtype),
            torch.arange(nx, device=device, dtype=dtype),
            indexing="ij",
        )
        grid = torch.stack((xv, yv), 2).expand(shape) - 0.5  # decode maps sigmoid*2 onto [-0.5, 1.5] cells
        stride = self._stride.to(device=device, dtype=dtype)[i]
        anchor_grid = (self.anchors[i].to(dtype) * stride).view((1, self.na, 1, 1, 2)).expand(shape)
        self._grid_cache[key] = (grid, anchor_grid, stride)
        return grid, anchor_grid, stride

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        # Loading replaces the anchors in place, which would leave cached anchor grids stale.
        self._grid_cache.clear()
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[arg-type]

    def _apply(self, fn: object, *args: object, **kwargs: object) -> Detect:
        self._grid_cache.clear()
        return super()._apply(fn, *args, **kwargs)  # type: ignore[arg-type]

    def initialize_biases(self) -> None:
        """Prior for fresh models: few objects per image, uniform classes (only matters for training)."""
        for conv, s in zip(self.m, self.stride.tolist(), strict=True):
            b = conv.bias.view(self.na, -1)
            with torch.no_grad():
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                b[:, 5 : 5 + self.nc] += math.log(0.6 / (self.nc - 0.99999))
