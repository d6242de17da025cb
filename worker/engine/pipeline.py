"""The engine: one job = load a checkpoint, decode the dataset once, then prune/measure/evaluate/score
each sparsity point of the sweep. Knows nothing about Redis or HTTP; talks to the outside through a
``Reporter`` (progress, cancellation) and returns a ``JobResult``.

Upstream parity flow (what the reference numbers were produced with): the model is loaded as float32,
Conv+BN are fused, and only then pruned. Every sparsity point starts from a fresh copy of that fused
dense model, so points never compound. ``channel`` is the exception: it prunes a copy of the *unfused*
model (its criteria and recovery read BatchNorm statistics) and fuses the pruned model for evaluation.

The flow, and where other features hook in:

* ``_setup`` (once per job): load + fuse the checkpoint and move it to the job's device (points are
  copied and pruned there), decode the dataset (``data.decode_dataset``), build the scorer's
  ground-truth index (``scorers.make_scorer``).
* ``_run_point`` (per sparsity): ``_prune`` (a fresh copy of the dense model, pruned on the device)
  -> ``_measure`` (params, zeros, per-layer report; GFLOPs once per distinct architecture) ->
  ``_model_size`` (bytes counted as the artifact serialises; a file only when ``save_models``) ->
  ``_export`` (with ``export`` or ``latency``: the CPU float32 model to ONNX, checked against PyTorch,
  ``runtimes.export_run``) -> ``_to_device`` (fp16, channels_last, cudnn autotuning on CUDA) ->
  ``_evaluate`` (``evaluate``: prefetching loader, pre-process, inference, batched NMS) -> ``score``
  (COCO rows, the job's scorer, upstream's AP) -> ``_latency`` (with ``latency``: the latency suite on
  the evaluated model and its export, ``runtimes.time_run``). Recovery / fine-tuning belongs between
  ``_prune`` and ``_measure``; other runtimes replace the forward through ``evaluate``'s ``infer``.
* ``_recover`` (with ``recovery``, channel points only, between ``_prune`` and ``_measure``): the pruned
  model (still unfused) is evaluated first, then bias compensation and BatchNorm recalibration on the
  job's calibration images (``recovery.stage``); fine-tuning, when asked too, follows on that model.
* ``_finetune`` (with ``finetune``, per pruned point, between ``_prune`` and ``_measure``): evaluate the
  pruned model (once, shared with ``_recover``), fine-tune it (``train.finetune``: checkpointed every epoch under
  ``artifacts_dir/finetune/`` so a retried attempt, or a point re-run on another worker, resumes), and
  the run's ``recovery`` block holds both mAPs and the loss curve.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench.checkpoints.inspect import inspect_checkpoint
from prunebench.config import get_settings
from prunebench.contract import (
    CHANNEL_FIELDS,
    CheckpointInfo,
    JobRequest,
    JobResult,
    LatencyReport,
    Metrics,
    OnnxExport,
    Progress,
    RecoveryReport,
    RunDeltas,
    RunResult,
    SpeedMs,
)
from prunebench.datasets.catalog import CatalogError, CategoryMapping, DatasetSpec
from prunebench.infra.files import sha256_file
from prunebench.worker.engine import artifacts, measure, pruning, runtimes
from prunebench.worker.engine.checkpoints import LoadedModel, load_model
from prunebench.worker.engine.data import DecodedDataset, decode_dataset, grid_stride, network_size
from prunebench.worker.engine.decode_cache import DecodeCache
from prunebench.worker.engine.device import environment, resolve_device, use_half
from prunebench.worker.engine.evaluate import EVAL_SHARE, EvalConfig, EvalOutput, evaluate
from prunebench.worker.engine.export import ExportError
from prunebench.worker.engine.memory import check_job_fits
from prunebench.worker.engine.pruning import schedule, taylor
from prunebench.worker.engine.recovery import calibration, stage
from prunebench.worker.engine.reporting import JobCanceled, NullReporter, Reporter
from prunebench.worker.engine.scorers import CocoScorer, make_scorer
from prunebench.worker.engine.scoring import score
from prunebench.worker.engine.train import finetune
from prunebench.worker.engine.train.data import TrainSet
from prunebench.worker.engine.train.trainer import TrainOutcome


class PipelineError(ValueError):
    """The job cannot run as asked (e.g. the model's classes do not fit the dataset); the message says why."""


@dataclass
class _Job:
    """What stays fixed across the sweep of one job."""

    request: JobRequest
    reporter: Reporter
    loaded: LoadedModel
    dense: nn.Module  # fused float32 model on the job's device; never evaluated or pruned itself, only copied
    unfused: nn.Module  # the same before fusing (BatchNorm present): what channel pruning copies
    decoded: DecodedDataset  # its warnings (skipped images, size mismatches) go into every point's result
    class_map: list[int]
    scorer: CocoScorer  # the job's COCOeval, ground truth indexed once for every point
    device: torch.device
    half: bool
    points: list[float]
    artifacts_dir: Path | None
    gflops_by_arch: dict[Any, float] = field(default_factory=dict)  # architecture_key -> GFLOPs
    train_data: TrainSet | None = None  # with `finetune`: the training split, decoded once per job opening
    calibration: DecodedDataset | None = None  # channel with bn_recalibration or taylor: the calibration images
    calibration_class_map: list[int] = field(default_factory=list)  # model class -> its category ids
    schedule: dict[str, float] | None = None  # layer name -> sparsity: a per-layer schedule replaces `method`


@dataclass
class _Pruned:
    """One point's pruned model, before recovery."""

    model: nn.Module
    layers: list[str]
    achieved: float
    channels: stage.ChannelPoint | None = None  # channel: what bias compensation needs


@dataclass
class _Measured:
    sparsity: float
    global_sparsity: float
    params: int
    nonzero: int
    gflops: float
    layers: list[Any]


# ---------------------------------------------------------------------------------------------------------
# Progress


GFLOPS_IMG_SIZE = 640

# Share of one run's progress reached when scoring starts; pruning and saving start the run at 0.
STAGE_SHARE = {"scoring": EVAL_SHARE, "timing": EVAL_SHARE}
# With fine-tuning, a run is: evaluate the pruned model, train, evaluate again (shares of the run).
FT_BEFORE_SPAN = (0.0, 0.05)
FT_TRAIN_SPAN = (0.05, 0.8)
FT_AFTER_SPAN = (0.8, EVAL_SHARE)
# With training-free recovery only: evaluate the pruned model, recover (seconds), evaluate again.
REC_BEFORE_SPAN = (0.0, 0.45)
REC_AFTER_SPAN = (0.45, EVAL_SHARE)


def _progress(job: _Job | None, stage: str, run_index: int = 0, runs_total: int = 0, **extra: Any) -> Progress:
    sparsity = job.points[run_index] if job is not None and run_index < len(job.points) else None
    within_run = STAGE_SHARE.get(stage, 0.0)
    percent = 100.0 * (run_index + within_run) / runs_total if runs_total else 0.0
    fields: dict[str, Any] = {"percent": percent, "sparsity": sparsity}
    fields.update(extra)
    return Progress(stage=stage, run_index=run_index, runs_total=runs_total, **fields)


def _check_stop(reporter: Reporter) -> None:
    if reporter.should_stop():
        raise JobCanceled()


# ---------------------------------------------------------------------------------------------------------
# Setup


def _class_map(dataset: DatasetSpec, loaded: LoadedModel) -> list[int]:
    try:
        # By name when the model's class names match the categories' (see DatasetSpec.category_mapping).
        class_map = dataset.class_to_category(_class_names(loaded.names, loaded.nc))
    except CatalogError as exc:
        raise PipelineError(f"checkpoint does not fit dataset {dataset.name!r}: {exc}") from None
    if not any(c >= 0 for c in class_map):
        raise PipelineError(f"no model class maps to a category of dataset {dataset.name!r}")
    return class_map


def _check_dataset(dataset: DatasetSpec) -> None:
    """Read and validate the instances now: an unusable file fails the job before any model or image work."""
    try:
        dataset.info()
    except CatalogError as exc:
        raise PipelineError(str(exc)) from None


def _class_names(names: list[str], nc: int) -> list[str] | int:
    """The model's class names, or only their count when the names are not one per class."""
    return names if len(names) == nc else nc


CONF_COMPARABLE = 0.001
"""Upstream val.py's default conf_thres: mAP at a higher threshold is not comparable (upstream warns)."""


def _network_request(request: JobRequest, max_stride: float) -> JobRequest:
    """``request`` at the network size the model takes (img_size rounded up to its largest stride)."""
    size = network_size(request.img_size, max_stride)
    return request if size == request.img_size else request.model_copy(update={"img_size": size})


def settings_warnings(request: JobRequest, max_stride: float) -> list[str]:
    """Warnings about the evaluation settings: img_size rounded to the stride, conf_thres too high."""
    found = []
    size = network_size(request.img_size, max_stride)
    if size != request.img_size:
        found.append(
            f"img_size {request.img_size} is not a multiple of the model's largest stride "
            f"{grid_stride(max_stride)}: evaluated at {size}, as upstream rounds it"
        )
    if request.conf_thres > CONF_COMPARABLE:
        found.append(
            f"conf_thres {request.conf_thres:g} > {CONF_COMPARABLE:g}: mAP is not comparable to upstream's "
            "(it needs the low-confidence detections; upstream warns the same)"
        )
    return found


def _decoding_progress(reporter: Reporter, runs_total: int, name: str) -> Callable[[int, int], None]:
    def on_progress(done: int, total: int) -> None:
        # Decoding is per image; report roughly every 2% to keep the reporter cheap.
        if done == total or done % max(1, total // 50) == 0:
            reporter.progress(
                _progress(None, "decoding", 0, runs_total, images_done=done, images_total=total, message=name)
            )

    return on_progress


def _decode(
    request: JobRequest, dataset: DatasetSpec, reporter: Reporter, runs_total: int, cache: DecodeCache | None
) -> DecodedDataset:
    on_progress = _decoding_progress(reporter, runs_total, dataset.name)
    return decode_dataset(dataset, request.img_size, request.max_images, on_progress=on_progress, cache=cache)


def _train_data(request: JobRequest, spec: DatasetSpec, loaded: LoadedModel, reporter: Reporter) -> TrainSet:
    settings = request.finetune
    assert settings is not None
    on_progress = _decoding_progress(reporter, len(request.sweep()), spec.name)
    try:
        return finetune.make_train_set(spec, _class_map(spec, loaded), settings, on_progress)
    except CatalogError as exc:
        raise PipelineError(str(exc)) from None


def _setup(
    request: JobRequest,
    checkpoint_path: Path,
    dataset: DatasetSpec,
    reporter: Reporter,
    artifacts_dir: Path | None,
    decode_cache: DecodeCache | None,
    train_dataset: DatasetSpec | None = None,
    calibration_dataset: DatasetSpec | None = None,
) -> _Job:
    points = request.sweep()
    reporter.progress(_progress(None, "loading", 0, len(points)))
    _check_dataset(dataset)
    device = resolve_device(request.device)
    meta = inspect_checkpoint(checkpoint_path)
    # The network size (img_size rounded up to the largest stride) is what the memory estimate must size.
    request = _network_request(request, max(meta.stride or [32.0]))
    # Sized from the file's config before any module is built or tensor inflated: a job that would
    # exhaust this worker fails now, with the estimate, not minutes later in the kernel's OOM killer.
    check_job_fits(request, meta, device, get_settings().worker_memory_bytes)
    loaded = load_model(checkpoint_path)
    request = _network_request(request, max(loaded.stride, default=32.0))
    class_map = _class_map(dataset, loaded)
    if request.finetune is not None and train_dataset is None:
        raise PipelineError(f"fine-tuning needs its training dataset {request.finetune.dataset!r}")
    unfused = copy.deepcopy(loaded.model).float().eval().to(device)
    # Fuse first, then prune (upstream's parity flow); on the device, so each point is copied and pruned there.
    dense = loaded.model.float().eval().fuse().to(device)
    _check_stop(reporter)
    decoded = _decode(request, dataset, reporter, len(points), decode_cache)
    train_data = _train_data(request, train_dataset, loaded, reporter) if train_dataset and request.finetune else None
    calibrated, calibration_class_map = _calibration(
        request, decoded, class_map, calibration_dataset, loaded, reporter, decode_cache
    )
    scheduled = _schedule(request, dense)
    return _Job(
        schedule=scheduled,
        request=request,
        reporter=reporter,
        loaded=loaded,
        dense=dense,
        unfused=unfused,
        decoded=decoded,
        class_map=class_map,
        scorer=make_scorer(request.scorer, dataset.instances),
        device=device,
        half=use_half(request.half, device),
        points=points,
        artifacts_dir=artifacts_dir,
        train_data=train_data,
        calibration=calibrated,
        calibration_class_map=calibration_class_map,
    )


def _schedule(request: JobRequest, dense: nn.Module) -> dict[str, float] | None:
    """A ``layer_sparsities`` job's per-layer sparsities, resolved against the model's prunable layers."""
    if request.layer_sparsities is None or request.sparsity is None:
        return None
    try:
        layers = pruning.prunable_layers(dense, list(request.exclude))
        return schedule.resolve(layers, request.layer_sparsities, request.sparsity)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None


def _calibration(
    request: JobRequest,
    decoded: DecodedDataset,
    class_map: list[int],
    spec: DatasetSpec | None,
    loaded: LoadedModel,
    reporter: Reporter,
    cache: DecodeCache | None,
) -> tuple[DecodedDataset | None, list[int]]:
    """The calibration images (first N by file name) when BN recalibration or taylor needs them."""
    wanted = request.method == "channel" and ("bn_recalibration" in request.recovery or request.importance == "taylor")
    if not wanted:
        return None, []
    images = request.calibration.images
    if spec is None:  # the evaluated dataset itself, already decoded
        return calibration.subset(decoded, images), class_map
    on_progress = _decoding_progress(reporter, len(request.sweep()), spec.name)
    try:
        calibrated = decode_dataset(spec, request.img_size, images, on_progress=on_progress, cache=cache)
    except CatalogError as exc:
        raise PipelineError(f"calibration dataset {spec.name!r}: {exc}") from None
    return calibration.subset(calibrated, images), _class_map(spec, loaded)


# ---------------------------------------------------------------------------------------------------------
# One sweep point


def _prune(job: _Job, sparsity: float, fuse: bool = True) -> _Pruned:
    """A fresh copy of the dense model, pruned; with the pruned layer names and the achieved sparsity.

    ``fuse=False`` (recovery or fine-tuning next) keeps a channel-pruned model's BatchNorm layers."""
    if job.request.method == "channel":
        return _prune_channels(job, sparsity, fuse)
    model = copy.deepcopy(job.dense)
    if job.schedule is not None:
        pruned, achieved = schedule.apply(model, job.schedule)
        return _Pruned(model, pruned, achieved)
    if sparsity == 0.0 and job.request.method == "l1_unstructured":
        # The dense baseline: nothing to prune. Its sparsity is whatever zeros the checkpoint already has.
        layers = pruning.prunable_layers(model, list(job.request.exclude))
        return _Pruned(model, [], measure.conv_sparsity(model, layers))
    outcome = pruning.apply_pruning(model, job.request.method, sparsity, list(job.request.exclude))
    return _Pruned(outcome.model, list(outcome.pruned_layers), float(outcome.achieved))


def _prune_channels(job: _Job, sparsity: float, fuse: bool = True) -> _Pruned:
    """Channel pruning of the unfused model, fused for evaluation unless recovery or training follows."""
    if sparsity == 0.0:
        model = copy.deepcopy(job.unfused)
        return _Pruned(model.fuse() if fuse else model, [], 0.0)
    gradients = None
    if job.request.importance == "taylor":
        assert job.calibration is not None
        batches = taylor.labelled_batches(
            job.calibration, job.calibration_class_map, job.request.img_size, job.request.batch_size
        )
        gradients = taylor.gradient_fn(batches, job.request.img_size)
    point = stage.prune_channels(job.unfused, job.request, sparsity, gradients)
    return _Pruned(point.model.fuse() if fuse else point.model, point.pruned_layers, point.achieved, point)


def _gflops(job: _Job, model: nn.Module) -> float:
    """GFLOPs at 640x640 whatever the job's img_size (upstream's summary convention), once per architecture."""
    key = measure.architecture_key(model)
    if key not in job.gflops_by_arch:
        job.gflops_by_arch[key] = measure.gflops(model, GFLOPS_IMG_SIZE)
    return job.gflops_by_arch[key]


def _measure(job: _Job, model: nn.Module, pruned: list[str], achieved: float) -> _Measured:
    params, nonzero = measure.count_params(model)
    return _Measured(
        sparsity=achieved,
        global_sparsity=measure.global_sparsity(model),
        params=params,
        nonzero=nonzero,
        gflops=_gflops(job, model),
        layers=measure.layer_report(model, set(pruned)),
    )


def _model_size(job: _Job, model: nn.Module, run_index: int, within: float = 0.0) -> tuple[int, str | None]:
    """Bytes of the saved model; written as an artifact when asked, else only counted (no file).

    ``within``: the share of the run already done (saving follows fine-tuning when there is any)."""
    meta = {"sparsity": job.points[run_index], "method": job.request.method, "exclude": list(job.request.exclude)}
    if job.request.save_models and job.artifacts_dir is not None:
        runs = len(job.points)
        job.reporter.progress(_progress(job, "saving", run_index, runs, percent=100.0 * (run_index + within) / runs))
        relative = f"runs/{run_index}/model"
        path = job.artifacts_dir / f"run-{run_index}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        return artifacts.save_model(model, job.loaded, path, meta=meta), relative
    return artifacts.artifact_size(model, job.loaded, meta=meta), None


def _to_device(model: nn.Module, job: _Job) -> nn.Module:
    model = model.to(job.device).eval()
    if job.half:
        model = model.half()
    if job.device.type == "cuda":
        # NHWC suits tensor cores; rect batches come in few fixed shapes, so cuDNN's autotuning pays
        # once per shape and every later batch and sweep point reuses the choice.
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
        # One warm-up pass (as upstream val.py does) so CUDA/cuDNN setup is not billed to batch one.
        size = job.request.img_size
        dtype = torch.float16 if job.half else torch.float32
        with torch.no_grad():
            warm = torch.zeros(1, 3, size, size, device=job.device, dtype=dtype)
            model(warm.contiguous(memory_format=torch.channels_last))
    return model


def _export(job: _Job, model: nn.Module, run_index: int, scratch: Path) -> tuple[OnnxExport | None, Path | None]:
    """The run's checked ONNX export, when the job asked for export or latency."""
    if not runtimes.wants_onnx(job.request):
        return None, None
    job.reporter.progress(_progress(job, "exporting", run_index, len(job.points)))
    try:
        return runtimes.export_run(job.request, model, job.decoded, run_index, scratch, job.artifacts_dir)
    except ExportError as exc:
        raise PipelineError(f"run {run_index} (sparsity {job.points[run_index]}): {exc}") from exc


def _latency(job: _Job, model: nn.Module, onnx_path: Path | None, run_index: int, scratch: Path) -> list[LatencyReport]:
    if job.request.latency is None or onnx_path is None:
        return []
    job.reporter.progress(_progress(job, "timing", run_index, len(job.points)))
    return runtimes.time_run(job.request, model, job.device, job.half, onnx_path, scratch, job.points[run_index])


def _speed(out: EvalOutput) -> SpeedMs:
    per_image = 1000.0 / max(out.images, 1)
    t = out.times
    return SpeedMs(
        preprocess=t.preprocess * per_image,
        inference=t.inference * per_image,
        nms=t.nms * per_image,
        total=t.total * per_image,
    )


def _evaluate(job: _Job, model: nn.Module, run_index: int, span: tuple[float, float] = (0.0, EVAL_SHARE)) -> EvalOutput:
    config = EvalConfig(
        batch_size=job.request.batch_size,
        conf_thres=job.request.conf_thres,
        iou_thres=job.request.iou_thres,
        max_det=job.request.max_det,
        half=job.half,
        stride=grid_stride(max(job.loaded.stride)),
    )
    base = _progress(job, "evaluating", run_index, len(job.points))
    return evaluate(model, job.decoded, config, job.device, job.reporter, base, span=span)


# ---------------------------------------------------------------------------------------------------------
# Fine-tuning


@dataclass
class _Finetuned:
    outcome: TrainOutcome
    seconds: float


def _finetunes(job: _Job, sparsity: float) -> bool:
    settings = job.request.finetune
    return settings is not None and job.train_data is not None and (sparsity > 0.0 or settings.dense)


def _training_progress(job: _Job, run_index: int) -> Callable[[dict[str, Any]], None]:
    runs_total = len(job.points)
    start, end = FT_TRAIN_SPAN

    def report(p: dict[str, Any]) -> None:
        fraction = (p["epoch"] - 1 + p["iteration"] / p["iterations"]) / p["epochs"]
        loss = {"box": float(p["box"]), "obj": float(p["obj"]), "cls": float(p["cls"])}
        job.reporter.progress(
            _progress(
                job,
                "finetuning",
                run_index,
                runs_total,
                percent=100.0 * (run_index + start + (end - start) * fraction) / runs_total,
                epoch=p["epoch"],
                epochs=p["epochs"],
                iteration=p["iteration"],
                iterations=p["iterations"],
                loss=loss,
                message=f"epoch {p['epoch']}/{p['epochs']} batch {p['iteration']}/{p['iterations']} "
                + " ".join(f"{k} {v:.4f}" for k, v in loss.items()),
            )
        )

    return report


def _finetune(
    job: _Job, run_index: int, model: nn.Module, pruned: list[str], achieved: float
) -> tuple[nn.Module, float, _Finetuned]:
    """Fine-tune the pruned model; returns the fine-tuned (fused) model and its sparsity."""
    started = time.perf_counter()
    settings = job.request.finetune
    assert settings is not None and job.train_data is not None
    unstructured = job.request.method != "channel"  # every other method prunes by masking weights
    checkpoint = job.artifacts_dir / "finetune" / f"run-{run_index}.ckpt" if job.artifacts_dir else None
    outcome = finetune.run_finetune(
        model,
        job.unfused,
        pruned,
        unstructured,
        job.train_data,
        settings,
        job.device,
        checkpoint=checkpoint,
        reporter=job.reporter,
        on_progress=_training_progress(job, run_index),
    )
    if unstructured and pruned:
        achieved = measure.conv_sparsity(outcome.model, pruned)
    return outcome.model, achieved, _Finetuned(outcome, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------------
# Recovery (training-free steps, then fine-tuning) and its report


def _recovers(job: _Job, sparsity: float) -> bool:
    return job.request.method == "channel" and sparsity > 0.0 and bool(job.request.recovery)


def _evaluate_before(job: _Job, model: nn.Module, run_index: int, span: tuple[float, float]) -> Metrics:
    """mAP of the pruned model before any recovery, evaluated exactly as a point without recovery is."""
    before_model = copy.deepcopy(model)
    if not getattr(before_model, "is_fused", True):
        before_model = before_model.fuse()
    out = _evaluate(job, _to_device(before_model, job), run_index, span)
    del before_model
    before = score(out.detections, job.decoded.images, job.scorer, job.class_map)
    _check_stop(job.reporter)
    return before


def _recover(job: _Job, run_index: int, pruned: _Pruned) -> stage.Recovered:
    """Bias compensation and BatchNorm recalibration on the (unfused) pruned model, in place."""
    assert pruned.channels is not None
    runs = len(job.points)
    percent = 100.0 * (run_index + REC_BEFORE_SPAN[1]) / runs
    job.reporter.progress(_progress(job, "recovering", run_index, runs, percent=percent))
    cal = job.calibration
    batches = None
    if cal is not None:
        stride = grid_stride(max(job.loaded.stride))
        param = next(pruned.model.parameters())

        def batches() -> Any:
            return calibration.batches(cal, job.request.batch_size, stride, param.device, param.dtype)

    try:
        done = stage.recover(pruned.channels, job.request.recovery, batches)
    except ValueError as exc:
        raise PipelineError(f"recovery at sparsity {job.points[run_index]}: {exc}") from exc
    _check_stop(job.reporter)
    return done


def _recovery(
    job: _Job, before: Metrics, after: Metrics, steps: stage.Recovered | None, tuned: _Finetuned | None
) -> RecoveryReport:
    applied = list(steps.applied) if steps else []
    if tuned:
        applied.append("finetune")
    recalibrated = steps is not None and steps.calibration_images is not None
    return RecoveryReport(
        applied=applied,
        map_before=before.map,
        map50_before=before.map50,
        map_after=after.map,
        map50_after=after.map50,
        epochs=len(tuned.outcome.history) if tuned else None,
        train_loss=finetune.loss_curve(tuned.outcome) if tuned else [],
        seconds=(steps.seconds if steps else 0.0) + (tuned.seconds if tuned else 0.0),
        resumed_from_epoch=tuned.outcome.resumed_from if tuned else None,
        calibration_dataset=(job.request.calibration.dataset or job.request.dataset) if recalibrated else None,
        calibration_images=steps.calibration_images if steps else None,
    )


def _run_point(job: _Job, run_index: int) -> RunResult:
    started = time.perf_counter()
    sparsity = job.points[run_index]
    job.reporter.progress(_progress(job, "pruning", run_index, len(job.points)))
    tunes, recovers = _finetunes(job, sparsity), _recovers(job, sparsity)
    point = _prune(job, sparsity, fuse=not (tunes or recovers))
    model, pruned, achieved = point.model, point.layers, point.achieved
    before = (
        _evaluate_before(job, model, run_index, FT_BEFORE_SPAN if tunes else REC_BEFORE_SPAN)
        if tunes or recovers
        else None
    )
    steps = _recover(job, run_index, point) if recovers else None
    tuned: _Finetuned | None = None
    if tunes:
        model, achieved, tuned = _finetune(job, run_index, model, pruned, achieved)
    elif recovers:
        model = model.fuse()
    measured = _measure(job, model, pruned, achieved)
    size_bytes, artifact = _model_size(job, model, run_index, FT_TRAIN_SPAN[1] if tuned else 0.0)
    _check_stop(job.reporter)

    with tempfile.TemporaryDirectory(prefix="prunebench-onnx-") as scratch:
        onnx_report, onnx_path = _export(job, model, run_index, Path(scratch))
        model = _to_device(model, job)
        after_span = FT_AFTER_SPAN if tuned else REC_AFTER_SPAN if steps else (0.0, EVAL_SHARE)
        out = _evaluate(job, model, run_index, after_span)

        job.reporter.progress(_progress(job, "scoring", run_index, len(job.points)))
        metrics: Metrics = score(out.detections, job.decoded.images, job.scorer, job.class_map)
        latency = _latency(job, model, onnx_path, run_index, Path(scratch))
    del model
    if job.device.type == "cuda":
        torch.cuda.empty_cache()
    speed = _speed(out)
    return RunResult(
        sparsity_target=sparsity,
        sparsity=measured.sparsity,
        global_sparsity=measured.global_sparsity,
        params=measured.params,
        nonzero_params=measured.nonzero,
        gflops=measured.gflops,
        size_bytes=size_bytes,
        metrics=metrics,
        speed_ms_per_image=speed,
        images_per_second=out.images / out.times.total if out.times.total > 0 else 0.0,
        images=out.images,
        instances=job.decoded.instances,
        seconds=time.perf_counter() - started,
        batch_size_used=out.batch_size_used,
        oom_backoffs=out.oom_backoffs,
        layers=measured.layers,
        model_artifact=artifact,
        onnx=onnx_report,
        latency=latency,
        recovery=_recovery(job, before, metrics, steps, tuned) if before is not None else None,
        warnings=list(job.decoded.warnings),
    )


def _ratio(numerator: float | None, denominator: float | None) -> float:
    if not numerator or not denominator:
        return 1.0 if numerator == denominator else 0.0
    return float(numerator) / float(denominator)


def deltas(run: RunResult, dense: RunResult) -> RunDeltas:
    """``run`` against the job's dense baseline (ratios > 1 for speed mean faster)."""
    return RunDeltas(
        map=run.metrics.map - dense.metrics.map,
        map50=run.metrics.map50 - dense.metrics.map50,
        speed_ratio=_ratio(dense.speed_ms_per_image.total, run.speed_ms_per_image.total),
        size_ratio=_ratio(run.size_bytes, dense.size_bytes),
        params_ratio=_ratio(run.nonzero_params, dense.nonzero_params),
        gflops_ratio=_ratio(run.gflops, dense.gflops),
        latency_speedup=runtimes.speedups(run, dense),
    )


def _settings(request: JobRequest, device: torch.device, half: bool) -> dict[str, Any]:
    """The settings the points ran with (``request`` already at its network size)."""
    settings = request.eval_settings().model_dump()
    settings.update(
        device=str(device),
        half=half,
        method=request.method,
        exclude=list(request.exclude),
        **(request.model_dump(mode="json", include=set(CHANNEL_FIELDS)) if request.method == "channel" else {}),
        sparsities=list(request.sweep()),
        include_dense=request.include_dense,
    )
    if request.export is not None:
        settings["export"] = request.export.model_dump()
    if request.latency is not None:
        settings["latency"] = request.latency.model_dump()
    if request.finetune is not None:
        settings["finetune"] = request.finetune.model_dump()
    if request.layer_sparsities is not None:
        settings["layer_sparsities"] = dict(request.layer_sparsities)
    return settings


# ---------------------------------------------------------------------------------------------------------
# Entry points


def open_job(
    request: JobRequest,
    checkpoint_path: Path,
    dataset: DatasetSpec,
    reporter: Reporter,
    artifacts_dir: Path | None = None,
    decode_cache: DecodeCache | None = None,
    train_dataset: DatasetSpec | None = None,
    calibration_dataset: DatasetSpec | None = None,
) -> _Job:
    """Everything a job's points share: the fused dense model on the device, the decoded split, the scorer
    (and, with ``finetune``, the decoded training split ``train_dataset``; with BN recalibration or taylor,
    the calibration images of ``calibration_dataset``, or of ``dataset`` when that is None).

    Then :func:`run_point` per sweep index, in any order and in any process (fan-out runs points on
    several workers, each opening the job once), and :func:`assemble_result` over all the runs.
    """
    return _setup(
        request,
        Path(checkpoint_path),
        dataset,
        reporter,
        artifacts_dir,
        decode_cache,
        train_dataset,
        calibration_dataset,
    )


def run_point(job: _Job, run_index: int) -> RunResult:
    """Sweep point ``run_index`` of an opened job (its deltas are set by :func:`assemble_result`)."""
    _check_stop(job.reporter)
    if job.request.layer_sparsities is not None and job.request.include_dense and run_index == 0:
        job = replace(job, schedule=None)  # a scheduled job's dense baseline
    return _run_point(job, run_index)


def assemble_result(
    request: JobRequest,
    job_id: str,
    checkpoint_info: CheckpointInfo,
    dataset: DatasetSpec,
    runs: list[RunResult],
    *,
    worker: str | None = None,
) -> JobResult:
    """The job's result from its runs (sweep order): deltas against the job's own dense point.

    Fine-tuning checkpoints (``artifacts_dir/finetune``) let a re-run point resume; once every point
    has its result they are no longer needed: the caller removes them with :func:`drop_training_state`.
    """
    # The baseline is the job's own dense point (present whenever include_dense or 0.0 was asked).
    dense = next((r for r in runs if r.sparsity_target == 0.0), None)
    if dense is not None:
        for run in runs:
            run.deltas = deltas(run, dense)
    device = resolve_device(request.device)
    max_stride = max(checkpoint_info.stride or [32.0])
    mapping = _mapping(dataset, checkpoint_info)
    settings = _settings(_network_request(request, max_stride), device, use_half(request.half, device))
    settings.update(requested_img_size=request.img_size, category_map=mapping.mode)
    warnings = [
        *dataset.load_warnings,
        *mapping.warnings,
        *settings_warnings(request, max_stride),
        *(w for run in runs for w in run.warnings),
    ]
    return JobResult(
        job_id=job_id,
        checkpoint=checkpoint_info,
        dataset=dataset.info(),
        settings=settings,
        environment=environment(device, worker),
        runs=runs,
        created_at=datetime.now(UTC),
        warnings=list(dict.fromkeys(warnings)),  # each once, though every point reports the decode's
    )


def _mapping(dataset: DatasetSpec, info: CheckpointInfo) -> CategoryMapping:
    """The class -> category mapping the job used (decided the same way in ``_setup``)."""
    try:
        return dataset.category_mapping(_class_names(info.class_names, info.num_classes))
    except CatalogError:  # the points ran, so the mapping applied; only its description is lost
        return CategoryMapping([], "unknown")


def drop_training_state(artifacts_dir: Path | None) -> None:
    """Delete a finished job's fine-tuning checkpoints (kept until then so a retried point resumes)."""
    if artifacts_dir is not None:
        shutil.rmtree(Path(artifacts_dir) / "finetune", ignore_errors=True)


def run_pipeline(
    request: JobRequest,
    job_id: str,
    checkpoint_info: CheckpointInfo,
    checkpoint_path: Path,
    dataset: DatasetSpec,
    reporter: Reporter,
    artifacts_dir: Path | None = None,
    *,
    worker: str | None = None,
    decode_cache: DecodeCache | None = None,
    train_dataset: DatasetSpec | None = None,
    calibration_dataset: DatasetSpec | None = None,
) -> JobResult:
    """Run every sparsity point of ``request`` in this process; raises JobCanceled when the reporter says stop.

    Saved models (``request.save_models``) go to ``artifacts_dir/run-{k}.pt``; ``worker`` names this
    worker in the result's environment (default host:pid); ``decode_cache`` is the host's shared
    decoded-image cache (None: a job-private decode file); ``train_dataset`` is the catalog dataset
    ``request.finetune.dataset`` names (needed when fine-tuning), ``calibration_dataset`` the one
    ``request.calibration.dataset`` names (None: calibrate on ``dataset``).
    """
    job = open_job(
        request,
        Path(checkpoint_path),
        dataset,
        reporter,
        artifacts_dir,
        decode_cache,
        train_dataset,
        calibration_dataset,
    )
    if request.target is not None:  # no fixed sweep: the search picks the points (prunebench.worker.engine.target)
        from prunebench.worker.engine.target import run_target

        result = run_target(job, job_id, checkpoint_info, dataset, worker=worker)
        drop_training_state(artifacts_dir)
        return result
    runs = [run_point(job, k) for k in range(len(job.points))]
    drop_training_state(artifacts_dir)
    reporter.progress(_progress(job, "done", len(job.points), len(job.points), percent=100.0))
    return assemble_result(request, job_id, checkpoint_info, dataset, runs, worker=worker)


def local_checkpoint_info(path: Path) -> CheckpointInfo:
    """CheckpointInfo for a file on disk, as the service would describe an upload."""
    path = Path(path)
    meta = inspect_checkpoint(path)
    return CheckpointInfo(
        id=sha256_file(path),
        name=path.name,
        size_bytes=path.stat().st_size,
        format=meta.format,
        num_classes=meta.num_classes,
        class_names=meta.class_names,
        source="upload",
        arch=meta.arch,
        stride=meta.stride,
    )


def run_local(
    request: JobRequest,
    checkpoint_path: Path,
    dataset_spec: DatasetSpec,
    reporter: Reporter | None = None,
    artifacts_dir: Path | None = None,
    decode_cache: DecodeCache | None = None,
    train_dataset: DatasetSpec | None = None,
    calibration_dataset: DatasetSpec | None = None,
) -> JobResult:
    """Run a job in this process, without the service (CLI, benchmarks, tests)."""
    info = local_checkpoint_info(checkpoint_path)
    job_id = f"local-{uuid.uuid4().hex[:12]}"
    return run_pipeline(
        request,
        job_id,
        info,
        Path(checkpoint_path),
        dataset_spec,
        reporter or NullReporter(),
        artifacts_dir,
        decode_cache=decode_cache,
        train_dataset=train_dataset,
        calibration_dataset=calibration_dataset,
    )
