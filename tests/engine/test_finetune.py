"""Fine-tuning: upstream's optimizer recipe, masks that hold, shapes that stay, and exact resume.

Everything trains the bundled demo YOLOv5n on a few images of the bundled shapes-train-mini split at
64-128 px for one to three epochs: the point is behaviour, not accuracy.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from prunebench.contract import FinetuneSettings, Progress
from prunebench.datasets.catalog import DatasetSpec, load_catalog
from prunebench.worker.engine import measure
from prunebench.worker.engine.checkpoints import load_model
from prunebench.worker.engine.pruning import apply_pruning
from prunebench.worker.engine.reporting import JobCanceled
from prunebench.worker.engine.train import finetune
from prunebench.worker.engine.train.data import TrainSet
from prunebench.worker.engine.train.trainer import (
    ModelEMA,
    TrainConfig,
    load_checkpoint,
    parameter_groups,
    train,
)
from prunebench.worker.engine.yolo.model import DetectionModel
from tests.support.paths import DEMO_CHECKPOINT

CPU = torch.device("cpu")
CLASS_MAP = list(range(80))  # the YOLO split's category id = class index


@pytest.fixture(scope="module")
def unfused() -> DetectionModel:
    return load_model(DEMO_CHECKPOINT).model


@pytest.fixture(scope="module")
def train_spec() -> DatasetSpec:
    return load_catalog(None)["shapes-train-mini"]


def _settings(**overrides: object) -> FinetuneSettings:
    base: dict[str, object] = {"dataset": "shapes-train-mini", "epochs": 1, "img_size": 96, "batch_size": 4}
    base.update(overrides)
    base.setdefault("max_images", 8)
    return FinetuneSettings.model_validate(base)


def _data(spec: DatasetSpec, settings: FinetuneSettings) -> TrainSet:
    return finetune.make_train_set(spec, CLASS_MAP, settings)


# --- the optimizer recipe -------------------------------------------------------------------------------


def test_parameter_groups_are_upstreams_three(unfused: DetectionModel) -> None:
    biases, weights, norm_weights = parameter_groups(unfused)
    bn = [m for m in unfused.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {id(p) for p in norm_weights} == {id(m.weight) for m in bn}
    assert all(p.dim() == 1 for p in biases) and len(biases) == len(bn) + 3  # BN biases + Detect conv biases
    assert all(p.dim() == 4 for p in weights)
    assert len(biases) + len(weights) + len(norm_weights) == len(list(unfused.parameters()))

    settings = _settings()
    config = finetune.train_config(settings)
    from prunebench.worker.engine.train.trainer import make_optimizer

    optimizer = make_optimizer(unfused, config, weight_decay=5e-4)
    decays = [g["weight_decay"] for g in optimizer.param_groups]
    assert decays == [0.0, 5e-4, 0.0]
    assert all(g["nesterov"] and g["momentum"] == 0.937 for g in optimizer.param_groups)


@pytest.mark.parametrize("cos_lr", [False, True])
def test_lr_schedule_runs_from_one_to_lrf(cos_lr: bool) -> None:
    config = TrainConfig(epochs=10, lrf=0.01, cos_lr=cos_lr)
    factors = [config.lr_factor(e) for e in range(11)]
    assert factors[0] == pytest.approx(1.0) and factors[10] == pytest.approx(0.01)
    assert all(a > b for a, b in itertools.pairwise(factors))
    if not cos_lr:
        assert factors[5] == pytest.approx(0.505)
    else:
        assert factors[5] == pytest.approx(0.505) and factors[1] == pytest.approx(
            1 - 0.99 * (1 - math.cos(math.pi / 10)) / 2
        )


def test_ema_decay_ramps_up_to_09999(unfused: DetectionModel) -> None:
    ema = ModelEMA(nn.Linear(2, 2))
    ema.updates = 1
    assert ema.decay() == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)))
    ema.updates = 100_000
    assert ema.decay() == pytest.approx(0.9999, abs=1e-8)


def test_ema_moves_towards_the_model() -> None:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    d = ema.decay()
    assert float(ema.ema.weight) == pytest.approx(1 - d)


# --- masks and shapes -------------------------------------------------------------------------------------


def test_unstructured_masks_survive_finetuning(unfused: DetectionModel, train_spec: DatasetSpec) -> None:
    fused = copy.deepcopy(unfused).fuse()
    outcome = apply_pruning(fused, "l1_unstructured", 0.5, [])  # global_magnitude: the pipeline test below
    before = measure.conv_sparsity(outcome.model, outcome.pruned_layers)
    zeros_before = {n: m.weight == 0 for n, m in outcome.model.named_modules() if isinstance(m, nn.Conv2d)}
    settings = _settings()
    result = finetune.run_finetune(
        outcome.model, unfused, outcome.pruned_layers, True, _data(train_spec, settings), settings, CPU
    )
    tuned = result.model
    assert measure.conv_sparsity(tuned, outcome.pruned_layers) == before  # equal, not approximately
    convs = {n: m for n, m in tuned.named_modules() if isinstance(m, nn.Conv2d)}
    for name, zero in zeros_before.items():
        assert bool((convs[name].weight[zero] == 0).all()), name
    # It did train: the surviving weights moved.
    moved = sum(
        int((convs[n].weight != m.weight).sum())
        for n, m in outcome.model.named_modules()
        if isinstance(m, nn.Conv2d) and n in convs
    )
    assert moved > 0 and not any(isinstance(m, nn.BatchNorm2d) for m in tuned.modules())


def test_a_fused_pruned_model_becomes_its_unfused_twin(unfused: DetectionModel) -> None:
    """Training starts exactly from the pruned model: unfused + transferred zeros fuses back to it."""
    fused = copy.deepcopy(unfused).fuse()
    outcome = apply_pruning(fused, "l1_unstructured", 0.3, [])
    twin, masks = finetune.trainable_model(outcome.model, unfused, outcome.pruned_layers, True)
    assert any(isinstance(m, nn.BatchNorm2d) for m in twin.modules()) and set(masks) == set(outcome.pruned_layers)
    refused = copy.deepcopy(twin).eval().fuse()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(refused(x)[0], outcome.model.eval()(x)[0], atol=1e-4)


def test_channel_pruned_model_trains_in_its_smaller_shape(unfused: DetectionModel, train_spec: DatasetSpec) -> None:
    fused = copy.deepcopy(unfused).fuse()
    outcome = apply_pruning(fused, "channel", 0.3, [])
    shapes = {n: tuple(p.shape) for n, p in outcome.model.state_dict().items()}
    params, _ = measure.count_params(outcome.model)
    settings = _settings()
    result = finetune.run_finetune(
        outcome.model, unfused, outcome.pruned_layers, False, _data(train_spec, settings), settings, CPU
    )
    assert {n: tuple(p.shape) for n, p in result.model.state_dict().items()} == shapes
    assert measure.count_params(result.model)[0] == params


# --- checkpoints, resume, cancel ---------------------------------------------------------------------------


class StopAfterEpochs:
    """A reporter that asks to stop once ``epochs`` epochs were checkpointed (a worker dying mid-run)."""

    def __init__(self, checkpoint: Path, epochs: int) -> None:
        self.checkpoint = checkpoint
        self.epochs = epochs
        self.seen: list[Progress] = []

    def progress(self, progress: Progress) -> None:
        self.seen.append(progress)

    def should_stop(self) -> bool:
        if not self.checkpoint.exists():
            return False
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        return int(state["epoch"]) >= self.epochs


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(
    unfused: DetectionModel, train_spec: DatasetSpec, tmp_path: Path
) -> None:
    settings = _settings(epochs=3, img_size=64, max_images=8)
    data = _data(train_spec, settings)
    config = finetune.train_config(settings)
    straight = train(copy.deepcopy(unfused), data, config, CPU)

    checkpoint = tmp_path / "run-0.ckpt"
    with pytest.raises(JobCanceled):
        train(copy.deepcopy(unfused), data, config, CPU, checkpoint=checkpoint, reporter=StopAfterEpochs(checkpoint, 1))
    assert load_checkpoint(checkpoint, _identity(config, unfused, data))["epoch"] == 1
    resumed = train(copy.deepcopy(unfused), data, config, CPU, checkpoint=checkpoint)

    assert resumed.resumed_from == 1 and straight.resumed_from is None
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    assert [h.total for h in resumed.history] == [h.total for h in straight.history]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _identity(config: TrainConfig, model: nn.Module, data: TrainSet) -> dict:
    from prunebench.worker.engine.train.trainer import _identity as identity

    return identity(config, model, len(data))


def test_a_checkpoint_of_other_settings_is_not_resumed(
    unfused: DetectionModel, train_spec: DatasetSpec, tmp_path: Path
) -> None:
    settings = _settings(epochs=1, img_size=64, max_images=4)
    data = _data(train_spec, settings)
    checkpoint = tmp_path / "run-0.ckpt"
    train(copy.deepcopy(unfused), data, finetune.train_config(settings), CPU, checkpoint=checkpoint)
    other = finetune.train_config(_settings(epochs=1, img_size=64, max_images=4, lr0=0.02))
    assert train(copy.deepcopy(unfused), data, other, CPU, checkpoint=checkpoint).resumed_from is None
    checkpoint.write_bytes(b"torn")
    assert train(copy.deepcopy(unfused), data, other, CPU, checkpoint=checkpoint).resumed_from is None


def test_progress_reports_epochs_iterations_and_losses(unfused: DetectionModel, train_spec: DatasetSpec) -> None:
    settings = _settings(epochs=2, img_size=64, max_images=8)
    seen: list[dict] = []
    result = train(
        copy.deepcopy(unfused),
        _data(train_spec, settings),
        finetune.train_config(settings),
        CPU,
        on_progress=seen.append,
    )
    assert [(p["epoch"], p["iteration"]) for p in seen] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(p["epochs"] == 2 and p["iterations"] == 2 for p in seen)
    assert all(np.isfinite([p["box"], p["obj"], p["cls"]]).all() for p in seen)
    assert [h.epoch for h in result.history] == [1, 2]
    last = result.history[-1]
    assert last.total == pytest.approx(last.box + last.obj + last.cls)


def test_loader_worker_processes_make_the_same_batches(unfused: DetectionModel, train_spec: DatasetSpec) -> None:
    """The CUDA path loads data in worker processes; what it trains on must not change."""
    settings = _settings(epochs=1, img_size=64, max_images=8)
    data = _data(train_spec, settings)
    config = finetune.train_config(settings)
    inline = train(copy.deepcopy(unfused), data, config, CPU)
    workers = train(copy.deepcopy(unfused), data, dataclasses.replace(config, loader_workers=2), CPU)
    assert [h.total for h in workers.history] == [h.total for h in inline.history]


# --- through the job pipeline ------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Progress] = []

    def progress(self, progress: Progress) -> None:
        self.seen.append(progress)

    def should_stop(self) -> bool:
        return False


def test_a_finetune_job_reports_recovery_and_saves_the_finetuned_model(tmp_path: Path) -> None:
    from prunebench.contract import JobRequest
    from prunebench.worker.engine.pipeline import run_local

    catalog = load_catalog(None)
    request = JobRequest(
        checkpoint=DEMO_CHECKPOINT.name,
        dataset="shapes-val",
        sparsity=0.5,
        method="global_magnitude",
        img_size=64,
        batch_size=4,
        max_images=4,
        device="cpu",
        save_models=True,
        finetune=_settings(epochs=2, img_size=64, max_images=4).model_dump(),
    )
    reporter = Recorder()
    result = run_local(
        request, DEMO_CHECKPOINT, catalog["shapes-val"], reporter, tmp_path, train_dataset=catalog["shapes-train-mini"]
    )
    dense, pruned = result.runs
    assert dense.recovery is None  # the baseline is the checkpoint as given (finetune.dense is off)
    recovery = pruned.recovery
    assert recovery is not None and recovery.applied == ["finetune"] and recovery.epochs == 2
    assert [p.epoch for p in recovery.train_loss] == [1, 2] and recovery.resumed_from_epoch is None
    assert recovery.map_after == pruned.metrics.map and recovery.map50_after == pruned.metrics.map50
    assert recovery.seconds > 0 and all(p.seconds and p.seconds > 0 for p in recovery.train_loss)
    assert result.settings["finetune"]["epochs"] == 2

    stages = [p.stage for p in reporter.seen]
    assert "finetuning" in stages and stages.index("finetuning") < len(stages) - stages[::-1].index("evaluating")
    percents = [p.percent for p in reporter.seen]
    assert percents == sorted(percents), "progress must never move backwards"
    training = [p for p in reporter.seen if p.stage == "finetuning"]
    assert {(p.epoch, p.iteration) for p in training} == {(1, 1), (2, 1)} and training[0].loss is not None

    # The downloadable artifact is the fine-tuned model: it reloads with the same sparsity.
    saved = load_model(tmp_path / "run-1.pt").model
    assert saved.is_fused
    layers = [layer.name for layer in pruned.layers if layer.pruned]
    assert measure.conv_sparsity(saved, layers) == pytest.approx(pruned.sparsity, abs=1e-12)
    assert not (tmp_path / "finetune").exists()  # training checkpoints are gone once the job is done


def test_a_channel_pruned_point_finetunes_with_batchnorm_in_its_smaller_shape() -> None:
    from prunebench.contract import JobRequest
    from prunebench.worker.engine.pipeline import run_local

    catalog = load_catalog(None)
    request = JobRequest(
        checkpoint=DEMO_CHECKPOINT.name,
        dataset="shapes-val",
        sparsity=0.3,
        method="channel",
        img_size=64,
        batch_size=4,
        max_images=4,
        device="cpu",
        finetune=_settings(epochs=1, img_size=64, max_images=4).model_dump(),
    )
    reporter = Recorder()
    result = run_local(
        request, DEMO_CHECKPOINT, catalog["shapes-val"], reporter, train_dataset=catalog["shapes-train-mini"]
    )
    dense, pruned = result.runs
    assert pruned.recovery is not None and pruned.recovery.epochs == 1
    assert pruned.params < 0.8 * dense.params and pruned.gflops < dense.gflops
    assert pruned.sparsity == pytest.approx(0.3, abs=0.1)
