"""Parameter counts, sparsity, per-layer reports, GFLOPs and size on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from prunebench.worker.engine import measure
from prunebench.worker.engine.checkpoints import load_model
from tests.support.paths import DEMO_CHECKPOINT


def _tiny() -> nn.Sequential:
    """conv(3->4, 3x3, bias) -> BN(4) -> conv(4->2, 1x1, no bias), with known zeros."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1, bias=False))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1.0)
        net[0].weight.view(-1)[:27] = 0  # 27 of 108
        net[2].weight.view(-1)[:2] = 0  # 2 of 8
        net[0].bias[0] = 0  # 1 of 4
    return net


def test_counts_and_global_sparsity() -> None:
    net = _tiny()
    total = 108 + 4 + 4 + 4 + 8  # conv0 w+b, bn w+b, conv2 w (running stats are buffers, not counted)
    assert measure.count_params(net) == (total, total - 30)
    assert measure.global_sparsity(net) == pytest.approx(30 / total)


def test_conv_sparsity_counts_named_weights_only() -> None:
    net = _tiny()
    assert measure.conv_sparsity(net, ["0"]) == pytest.approx(27 / 108)
    assert measure.conv_sparsity(net, ["0", "2"]) == pytest.approx(29 / 116)
    assert measure.conv_sparsity(net, []) == 0.0
    with pytest.raises(KeyError):
        measure.conv_sparsity(net, ["1"])  # a BatchNorm, not a Conv2d


def test_layer_report_lists_every_conv() -> None:
    rows = measure.layer_report(_tiny(), {"2"})
    assert [r.name for r in rows] == ["0", "2"]
    first, second = rows
    assert (first.shape, first.params, first.zeros, first.pruned) == ([4, 3, 3, 3], 108, 27, False)
    assert first.sparsity == pytest.approx(0.25)
    assert (second.shape, second.params, second.zeros, second.pruned) == ([2, 4, 1, 1], 8, 2, True)


def test_gflops_of_one_conv_is_two_macs_per_output() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    macs = 8 * 64 * 64 * 3 * 3 * 3
    assert measure.gflops(conv, img_size=64) == pytest.approx(2 * macs / 1e9)


def test_gflops_of_fused_demo_matches_upstream_summary() -> None:
    model = load_model(DEMO_CHECKPOINT).model.fuse()
    assert round(measure.gflops(model, 640), 1) == 4.5  # upstream prints 4.5 GFLOPs for fused YOLOv5n
    assert measure.gflops(model, 320) == pytest.approx(measure.gflops(model, 640) / 4, rel=1e-6)
    assert not model.training


def test_size_on_disk_of_file_and_of_model(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"x" * 1234)
    assert measure.size_on_disk(path) == 1234
    net = _tiny()
    size = measure.size_on_disk(net, yaml="yolov5n", names=["a"], stride=[8.0])
    assert size > 4 * 124
