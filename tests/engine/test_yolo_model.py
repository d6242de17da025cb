"""DetectionModel: official architectures, decoding, fusing and loading pruned state dicts."""

from __future__ import annotations

import pytest
import torch

from prunebench.worker.engine.yolo.configs import ARCHITECTURES, get_config, guess_arch
from prunebench.worker.engine.yolo.layers import Conv, Detect
from prunebench.worker.engine.yolo.model import DetectionModel, build_model, make_divisible


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    # Fresh BNs are identity-like; random statistics make fusing non-trivial to get right.
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


@pytest.mark.parametrize(
    ("arch", "unfused", "fused"),
    [("yolov5n", 1_872_157, 1_867_405), ("yolov5s", 7_235_389, 7_225_885)],
)
def test_official_param_counts(arch: str, unfused: int, fused: int) -> None:
    model = DetectionModel(get_config(arch))
    assert _params(model) == unfused
    assert _params(model.fuse()) == fused  # upstream's "fused" summary figure


def test_configs_and_strides() -> None:
    assert ARCHITECTURES == ("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x")
    model = DetectionModel(get_config("yolov5n", nc=3))
    head = model.model[-1]
    assert isinstance(head, Detect)
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert head.nc == 3 and head.no == 8 and head.na == 3
    # Anchors are stored in grid units: pixels / stride.
    assert head.anchors[0, 0].tolist() == [10 / 8, 13 / 8]
    assert head.anchors[2, 2].tolist() == [373 / 32, 326 / 32]
    assert get_config("yolov5s")["width_multiple"] == 0.5
    assert guess_arch(0.67, 0.75) == "yolov5m" and guess_arch(0.5, 0.5) is None
    assert make_divisible(64 * 0.25) == 16 and make_divisible(20) == 24
    with pytest.raises(KeyError):
        get_config("yolov9")


def test_upstream_state_dict_key_names() -> None:
    keys = DetectionModel(get_config("yolov5n")).state_dict().keys()
    for key in (
        "model.0.conv.weight",
        "model.2.cv1.bn.running_mean",
        "model.2.m.0.cv2.conv.weight",
        "model.9.cv2.bn.num_batches_tracked",
        "model.24.m.0.weight",
        "model.24.m.2.bias",
        "model.24.anchors",
    ):
        assert key in keys
    assert not any(k.endswith(("stride", "anchor_grid", "grid")) for k in keys)


def test_eval_decoding_matches_formula() -> None:
    torch.manual_seed(0)
    model = DetectionModel(get_config("yolov5n", nc=2)).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        pred, maps = model(x)
    head = model.model[-1]
    assert pred.shape == (2, 3 * (8 * 12 + 4 * 6 + 2 * 3), 7)
    expected = []
    for i, raw in enumerate(maps):
        bs, na, ny, nx, no = raw.shape
        s = raw.sigmoid()
        yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        grid = torch.stack((xv, yv), -1).float()  # [ny, nx, 2]
        stride = float(head.stride[i])
        xy = (2 * s[..., :2] - 0.5 + grid) * stride
        wh = (2 * s[..., 2:4]) ** 2 * (head.anchors[i] * stride).view(1, na, 1, 1, 2)
        expected.append(torch.cat((xy, wh, s[..., 4:]), -1).reshape(bs, -1, no))
    # Order: level, anchor, y, x.
    torch.testing.assert_close(pred, torch.cat(expected, 1), atol=1e-4, rtol=1e-5)


def test_fuse_keeps_outputs() -> None:
    torch.manual_seed(1)
    model = DetectionModel(get_config("yolov5n", nc=5))
    _randomize_bn(model)
    model.eval()
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        before = model(x)[0]
        fused = model.fuse()
        after = fused(x)[0]
    assert fused is model and model.is_fused
    assert not any(isinstance(m, Conv) and hasattr(m, "bn") for m in model.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_training_mode_returns_raw_maps() -> None:
    model = DetectionModel(get_config("yolov5n", nc=1)).train()
    maps = model(torch.zeros(1, 3, 64, 64))
    assert isinstance(maps, list) and [m.shape[2] for m in maps] == [8, 4, 2]


def test_build_model_loads_channel_pruned_state_dict() -> None:
    cfg = get_config("yolov5n", nc=4)
    source = DetectionModel(cfg)
    _randomize_bn(source)
    state = source.state_dict()
    keep = 24  # model.1 is Conv(16 -> 32); keep 24 output channels
    for key in [k for k in state if k.startswith("model.1.") and not k.endswith("num_batches_tracked")]:
        state[key] = state[key][:keep].clone()
    for consumer in ("model.2.cv1.conv.weight", "model.2.cv2.conv.weight"):
        state[consumer] = state[consumer][:, :keep].clone()

    pruned = build_model(cfg, state)
    assert pruned.model[1].conv.out_channels == keep
    assert pruned.model[1].bn.num_features == keep
    assert pruned.model[2].cv1.conv.in_channels == keep
    assert not pruned.training
    for key, value in pruned.state_dict().items():
        torch.testing.assert_close(value, state[key].to(value.dtype))
    with torch.no_grad():
        pred, _ = pruned(torch.rand(1, 3, 64, 64))
    assert pred.shape == (1, 3 * (64 + 16 + 4), 9)


def test_build_model_accepts_fused_state_dict() -> None:
    cfg = get_config("yolov5n", nc=2)
    source = DetectionModel(cfg)
    _randomize_bn(source)
    source.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        reference = source(x)[0]
        fused_state = source.fuse().state_dict()
        rebuilt = build_model(cfg, fused_state)
        torch.testing.assert_close(rebuilt(x)[0], reference, atol=1e-4, rtol=1e-4)
    assert rebuilt.is_fused


def test_unknown_module_and_strict_mismatch_rejected() -> None:
    cfg = get_config("yolov5n")
    cfg["head"][-1][2] = "Segment"
    with pytest.raises(ValueError, match="Segment"):
        DetectionModel(cfg)
    state = DetectionModel(get_config("yolov5n")).state_dict()
    state["model.99.extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="Unexpected"):
        build_model(get_config("yolov5n"), state)


def test_activation_from_yaml() -> None:
    cfg = get_config("yolov5n")
    cfg["activation"] = "nn.LeakyReLU(0.1)"
    model = DetectionModel(cfg)
    act = model.model[0].act
    assert isinstance(act, torch.nn.LeakyReLU) and act.negative_slope == pytest.approx(0.1)
    cfg["activation"] = "__import__('os').system('true')"
    with pytest.raises(ValueError, match="unsupported activation"):
        DetectionModel(cfg)
