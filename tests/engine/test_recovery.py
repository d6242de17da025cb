"""Training-free recovery: bias compensation keeps the next layers' means, BN recalibration fits the data.

Bias compensation is checked numerically on a small net with the couplings YOLOv5 has (a residual add
tying two convs' channels, a concatenation, a consumer with its own BatchNorm, a biased head conv like
Detect's): channels whose BatchNorm scale γ is tiny output the constant act(β), so after removing them
with compensation every consumer's mean output (interior pixels) must be where it was.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunebench.contract import JobRequest
from prunebench.datasets.catalog import load_catalog, resolve_dataset
from prunebench.worker.engine.checkpoints import load_model
from prunebench.worker.engine.pipeline import run_local
from prunebench.worker.engine.pruning import ChannelOptions, apply_pruning
from prunebench.worker.engine.pruning.channel import ChannelPlan
from prunebench.worker.engine.recovery import bias_compensation, bn_recalibration
from prunebench.worker.engine.yolo.layers import Conv
from tests.support.paths import DEMO_CHECKPOINT

WEAK_RESIDUAL = [1, 4]  # channels of stem and a (tied by the residual add)
WEAK_BRANCH = [2]  # a channel of b


class CoupledNet(nn.Module):
    """stem -> (stem + a(stem)) ‖ b(stem) -> {mid: Conv with BN, head: biased conv}."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = Conv(3, 8, 3)
        self.a = Conv(8, 8, 1)
        self.b = Conv(8, 4, 1)
        self.mid = Conv(12, 6, 3)
        self.head = nn.Conv2d(12, 5, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        c = torch.cat((s + self.a(s), self.b(s)), 1)
        return torch.cat((self.mid(c), self.head(c)), 1)


def _coupled_net() -> CoupledNet:
    torch.manual_seed(0)
    net = CoupledNet().eval()
    with torch.no_grad():
        for conv in (net.stem, net.a, net.b, net.mid):
            conv.bn.bias.uniform_(-2.0, 2.0)  # β far from 0: removed channels carry real constants
            conv.bn.running_mean.uniform_(-0.5, 0.5)
            conv.bn.running_var.uniform_(0.5, 2.0)
        for conv, weak in ((net.stem, WEAK_RESIDUAL), (net.a, WEAK_RESIDUAL), (net.b, WEAK_BRANCH)):
            conv.bn.weight[weak] = 1e-6  # γ ≈ 0: the channel outputs act(β) whatever the input
    return net


def _consumer_means(net: CoupledNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per output channel means over the interior pixels of mid's BatchNorm output and head's output."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        net.mid.bn.register_forward_hook(lambda _m, _i, out: seen.__setitem__("mid", out)),
        net.head.register_forward_hook(lambda _m, _i, out: seen.__setitem__("head", out)),
    ]
    with torch.no_grad():
        net(x)
    for hook in hooks:
        hook.remove()
    return {k: v[..., 1:-1, 1:-1].mean(dim=(0, 2, 3)) for k, v in seen.items()}  # no zero-padding border


def _prune(net: CoupledNet, compensate: bool) -> ChannelPlan:
    found: dict[str, object] = {}

    def hook(model: nn.Module, plan: ChannelPlan) -> None:
        found["plan"], found["shifts"] = plan, bias_compensation.measure_shifts(model, plan)

    options = ChannelOptions(importance="bn_scale", round_to=1, before_prune=hook)
    out = apply_pruning(net, "channel", 0.25, ["mid.*", "head"], options)
    plan = out.plan
    assert plan is not None
    if compensate:
        assert bias_compensation.apply(net, plan, found["shifts"]) == 4  # a, b, mid, head  # type: ignore[arg-type]
    return plan


def test_plan_removes_the_constant_channels_through_the_couplings() -> None:
    plan = _prune(_coupled_net(), compensate=False)
    removed = {cut.root: cut.removed for cut in plan.cuts}
    assert removed["stem.conv"] == WEAK_RESIDUAL and removed["b.conv"] == WEAK_BRANCH
    # Consumers lose the concat's matching inputs: a's and b's (offset 8) outputs.
    assert plan.consumer_inputs["mid.conv"] == plan.consumer_inputs["head"] == [*WEAK_RESIDUAL, 8 + 2]
    assert plan.consumer_inputs["a.conv"] == plan.consumer_inputs["b.conv"] == WEAK_RESIDUAL


def test_bias_compensation_keeps_the_next_layers_means() -> None:
    x = torch.rand(4, 3, 24, 24)
    dense = _coupled_net()
    reference = _consumer_means(dense, x)
    plain, compensated = _coupled_net(), _coupled_net()
    _prune(plain, compensate=False)
    _prune(compensated, compensate=True)
    kept, fixed = _consumer_means(plain, x), _consumer_means(compensated, x)
    for layer in ("mid", "head"):  # mid: folded into its BN's running mean; head: into its bias
        assert torch.allclose(fixed[layer], reference[layer], atol=1e-3), layer
        assert (kept[layer] - reference[layer]).abs().max() > 0.1, layer  # removal did shift them


def test_mean_field_values_follow_the_couplings() -> None:
    net = _coupled_net()
    values = bias_compensation.mean_field_inputs(net)
    act = nn.SiLU()
    residual = act(net.stem.bn.bias) + act(net.a.bn.bias)  # the add carries both constants
    expected = torch.cat((residual, act(net.b.bn.bias))).detach()
    assert torch.allclose(values["head"], expected, atol=1e-6)
    assert torch.allclose(values["a.conv"], act(net.stem.bn.bias).detach(), atol=1e-6)


def test_bias_compensation_needs_batchnorm() -> None:
    fused = load_model(DEMO_CHECKPOINT).model.fuse()
    with pytest.raises(bias_compensation.BiasCompensationError, match="fused"):
        bias_compensation.mean_field_inputs(fused)


def test_bias_compensation_on_yolov5_folds_into_batchnorms_and_detect_biases() -> None:
    model = load_model(DEMO_CHECKPOINT).model
    captured: dict[str, bias_compensation.Compensation] = {}
    options = ChannelOptions(before_prune=lambda m, p: captured.setdefault("c", bias_compensation.measure_shifts(m, p)))
    out = apply_pruning(model, "channel", 0.3, [], options)
    detect_bias = model.model[24].m[0].bias.clone()
    means = {n: m.bn.running_mean.clone() for n, m in model.named_modules() if isinstance(m, Conv)}
    assert out.plan is not None
    changed = bias_compensation.apply(model, out.plan, captured["c"])
    assert changed == len(out.plan.consumer_inputs)  # every consumer, Detect's three convs included
    assert not torch.equal(model.model[24].m[0].bias, detect_bias)
    moved = [
        n for n, m in model.named_modules() if isinstance(m, Conv) and not torch.equal(m.bn.running_mean, means[n])
    ]
    assert "model.1" in moved and "model.0" not in moved  # the stem consumes only the image
    with torch.no_grad():
        assert torch.isfinite(model.fuse()(torch.rand(1, 3, 64, 64))[0]).all()


# --- BatchNorm recalibration ----------------------------------------------------------------------------


def test_recalibration_fits_running_stats_to_the_data() -> None:
    model = load_model(DEMO_CHECKPOINT).model
    stem = model.model[0]
    weights = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }
    images = torch.rand(6, 3, 64, 64) * 0.5 + 0.25
    with torch.no_grad():
        pre = stem.conv(images)  # what the stem's BatchNorm sees
    seen = bn_recalibration.recalibrate(model, [images[:3], images[3:]])
    assert seen == 6
    assert torch.allclose(stem.bn.running_mean, pre.mean(dim=(0, 2, 3)), atol=1e-4)
    # momentum=None: the cumulative average of the two batches' unbiased variances
    halves = [pre[:3].var(dim=(0, 2, 3), unbiased=True), pre[3:].var(dim=(0, 2, 3), unbiased=True)]
    assert torch.allclose(stem.bn.running_var, (halves[0] + halves[1]) / 2, rtol=1e-3)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())  # no weight moved
    assert not model.training and not any(m.training for m in model.modules())
    assert all(m.momentum == 0.03 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_recalibration_after_pruning_moves_stats_toward_the_pruned_activations() -> None:
    model = load_model(DEMO_CHECKPOINT).model
    apply_pruning(model, "channel", 0.3, [])
    bn = model.model[1].bn  # sees the pruned stem's outputs
    stale = bn.running_mean.clone()
    images = torch.rand(4, 3, 64, 64)
    bn_recalibration.recalibrate(model, [images])
    with torch.no_grad():  # what model.1's BatchNorm now sees, through the recalibrated stem
        target = model.model[1].conv(model.model[0](images)).mean(dim=(0, 2, 3))
    assert (bn.running_mean - target).abs().max() < 1e-3
    assert (stale - target).abs().mean() > 0.05  # the stored statistics were off


def test_recalibration_refuses_fused_models_and_no_images() -> None:
    with pytest.raises(bn_recalibration.RecalibrationError, match="fused"):
        bn_recalibration.recalibrate(load_model(DEMO_CHECKPOINT).model.fuse(), [torch.rand(1, 3, 64, 64)])
    with pytest.raises(bn_recalibration.RecalibrationError, match="no calibration images"):
        bn_recalibration.recalibrate(copy.deepcopy(_coupled_net()), [])


# --- in the job pipeline --------------------------------------------------------------------------------


def test_a_recovered_point_reports_its_map_before_and_after() -> None:
    spec = resolve_dataset(load_catalog(None), "shapes-val")
    small = {"checkpoint": "x", "dataset": "shapes-val", "img_size": 128, "max_images": 8, "batch_size": 4}
    small |= {
        "device": "cpu",
        "method": "channel",
        "sparsity": 0.3,
        "importance": "taylor",
        "calibration": {"images": 6},
    }
    plain = run_local(JobRequest(**small), DEMO_CHECKPOINT, spec)
    recovered = run_local(
        JobRequest(**small, recovery=["bn_recalibration", "bias_compensation"]),
        DEMO_CHECKPOINT,
        spec,
    )
    dense, point = recovered.runs
    assert dense.recovery is None and plain.runs[1].recovery is None
    report = point.recovery
    assert report is not None and report.applied == ["bias_compensation", "bn_recalibration"]
    # The same pruned model (taylor: gradients on the same 6 labelled calibration images), before recovery.
    assert report.map_before == plain.runs[1].metrics.map
    assert report.map_after == point.metrics.map and report.map50_after == point.metrics.map50
    assert report.calibration_dataset == "shapes-val" and report.calibration_images == 6
    assert report.epochs is None and report.train_loss == [] and report.seconds > 0
    assert point.params == plain.runs[1].params  # recovery changes values, never shapes
    assert recovered.settings["recovery"] == ["bias_compensation", "bn_recalibration"]
