"""The training loss equals upstream YOLOv5's ComputeLoss on a fixed model and batch.

Reference numbers (tests/fixtures/loss/upstream_loss.json) were computed by upstream's own code on the
bundled upstream checkpoint and the fixed batch in tests/fixtures/loss/batch.npz (see the README there).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from prunebench.worker.engine.checkpoints import load_model
from prunebench.worker.engine.train.loss import LossGains, YoloLoss, bbox_ciou
from tests.support.paths import DEMO_CHECKPOINT

FIXTURE = Path(__file__).parents[1] / "fixtures" / "loss"
REFERENCE = json.loads((FIXTURE / "upstream_loss.json").read_text())
TOLERANCE = 1e-4
GRAD_RELATIVE = 1e-4


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = np.load(FIXTURE / "batch.npz")
    return torch.from_numpy(data["images"]).float() / 255, torch.from_numpy(data["targets"])


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_model(DEMO_CHECKPOINT).model


def test_gains_are_scaled_like_upstream() -> None:
    gains = LossGains().scaled(nl=REFERENCE["nl"], nc=REFERENCE["nc"], img_size=REFERENCE["img_size"])
    for name in ("box", "obj", "cls", "anchor_t"):
        assert getattr(gains, name) == pytest.approx(REFERENCE["hyp"][name], abs=1e-12)
    # Fewer classes and two levels scale as upstream's train.py does.
    two = LossGains().scaled(nl=2, nc=8, img_size=640)
    assert (two.box, two.cls, two.obj) == pytest.approx((0.075, 0.075, 1.5))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_loss_components_equal_upstream(
    mode: str, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, targets = batch
    net = copy.deepcopy(model).requires_grad_(True).train(mode == "train")
    out = net(images)
    maps = out if mode == "train" else out[1]
    parts = YoloLoss.for_model(net, REFERENCE["img_size"])(maps, targets)
    expected = REFERENCE[mode]
    for name in ("box", "obj", "cls"):
        assert float(getattr(parts, name)) == pytest.approx(expected[name], abs=TOLERANCE), name
    assert float(parts.total.detach()) == pytest.approx(expected["total"], abs=TOLERANCE * len(images))

    parts.total.backward()
    grads = dict(net.named_parameters())
    for name, value in expected["grad_abs_sum"].items():
        grad = grads[name].grad
        assert grad is not None
        assert float(grad.abs().sum()) == pytest.approx(value, rel=GRAD_RELATIVE), name


def test_no_targets_gives_objectness_loss_only(
    model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, _ = batch
    net = copy.deepcopy(model).train()
    parts = YoloLoss.for_model(net, 320)(net(images[:1]), torch.zeros((0, 6)))
    assert float(parts.box) == 0.0 and float(parts.cls) == 0.0 and float(parts.obj) > 0.0


def test_ciou_of_identical_boxes_is_one_and_falls_with_distance() -> None:
    box = torch.tensor([[5.0, 5.0, 2.0, 3.0]])
    assert float(bbox_ciou(box, box)) == pytest.approx(1.0, abs=1e-6)
    shifted = torch.tensor([[6.0, 5.0, 2.0, 3.0]])
    far = torch.tensor([[9.0, 5.0, 2.0, 3.0]])
    assert 1.0 > float(bbox_ciou(shifted, box)) > float(bbox_ciou(far, box))
    assert float(bbox_ciou(far, box)) < 0  # disjoint: IoU 0 minus the distance penalty
