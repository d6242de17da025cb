"""The job contract: request and result schemas shared by the API and the workers.

This module is imported by both sides, so it must stay free of torch and of any
service or worker internals. Field names here are part of the public HTTP API.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, Self, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_SPARSITIES = 32
"""Upper bound on sweep points in one job: each point is a full evaluation pass."""

# -- names: every method, status, stage and outcome the API speaks, here and nowhere else ----------
# GET /v1/meta serves them (the dashboard and the CLI read them from there or from here).

PruneMethod = Literal["l1_unstructured", "global_magnitude", "channel", "semi_structured_2_4"]
PRUNE_METHODS: tuple[str, ...] = get_args(PruneMethod)

JobStatusName = Literal["queued", "running", "succeeded", "failed", "canceled"]
"""The values of `JobStatus` (the enum that code compares against)."""

Stage = Literal[
    "queued",
    "loading",
    "decoding",
    "pruning",
    "recovering",
    "finetuning",
    "saving",
    "exporting",
    "evaluating",
    "scoring",
    "timing",
    "done",
]
"""Where a job is (`Progress.stage`). A worker reports them in this order for each sparsity point."""
STAGES: tuple[str, ...] = get_args(Stage)

AttemptOutcome = Literal["succeeded", "cached", "failed", "canceled", "crashed", "abandoned"]
"""How one attempt ended (`Attempt.outcome`); prunebench.jobs.store explains each."""
ATTEMPT_OUTCOMES: tuple[str, ...] = get_args(AttemptOutcome)

CheckpointFormat = Literal["yolov5", "state_dict", "prunebench"]
"""How a checkpoint file is laid out (prunebench.checkpoints.inspect describes each)."""
CheckpointSource = Literal["upload", "models_dir", "builtin"]

SEMI_STRUCTURED_SPARSITY = 0.5
"""2:4 zeros exactly two of every four weights: the only sparsity `semi_structured_2_4` takes (besides 0)."""

Runtime = Literal["torch", "onnxruntime_cpu", "onnxruntime_cuda", "tensorrt"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)

"""Where latency is measured: PyTorch eager on the job's device, ONNX Runtime's CPU and CUDA execution
providers, and TensorRT (fp16, sparse tactics on). The GPU ones are skipped, with the reason, on CPU workers."""
ONNX_TOLERANCE = 1e-4
"""An exported model must match PyTorch: |onnxruntime - torch| <= 1e-4 * max(1, |torch|) per output value."""


ScorerName = Literal["faster_coco_eval", "pycocotools"]
"""COCO bbox scorers: faster-coco-eval (default; equal stats, faster) or pycocotools (what upstream calls)."""
SCORER_NAMES: tuple[str, ...] = get_args(ScorerName)
Importance = Literal["l1", "l2", "bn_scale", "lamp", "taylor"]
"""Channel importance criteria (torch-pruning's importance classes); see README "Channel pruning"."""
IMPORTANCES: tuple[str, ...] = get_args(Importance)
Allocation = Literal["uniform", "global"]
ALLOCATIONS: tuple[str, ...] = get_args(Allocation)
RecoveryStep = Literal["bias_compensation", "bn_recalibration"]
"""Training-free recovery after channel pruning; they run in this order whatever order they are given."""
RECOVERY_STEPS: tuple[str, ...] = get_args(RecoveryStep)
CHANNEL_FIELDS: tuple[str, ...] = (
    "importance",
    "allocation",
    "max_layer_sparsity",
    "round_to",
    "recovery",
    "calibration",
)
"""Request fields that only the ``channel`` method reads."""
TARGET_FIELDS: tuple[str, ...] = (
    "objective",
    "resolution",
    "max_search_sparsity",
    "screen_images",
    "analysis",
    "sensitivity_levels",
    "sensitivity_unit",
)
"""Request fields that only a ``target`` job reads."""

Sparsity = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]
EXCLUDE_PATTERN = re.compile(r"\A[A-Za-z0-9_.*?\[\]!-]{1,200}\Z")
"""A module-name pattern: names like `model.24.m.0` plus fnmatch's `*`, `?` and `[...]`."""


class JobStatus(StrEnum):
    """A job's status; its values are `JobStatusName`'s (a test holds the two equal)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


JOB_STATUSES: tuple[str, ...] = get_args(JobStatusName)
TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})
"""Statuses a job never leaves by itself (only a user's retry moves a failed or canceled job)."""


class EvalSettings(BaseModel):
    """How each sparsity point is evaluated. Defaults are upstream YOLOv5 val.py's."""

    model_config = ConfigDict(extra="forbid", strict=True)

    img_size: int = Field(640, ge=32, le=4096, description="Long side of the network input, pixels.")
    batch_size: int = Field(32, ge=1, le=512)
    conf_thres: float = Field(0.001, ge=0.0, le=1.0, allow_inf_nan=False)
    iou_thres: float = Field(0.6, ge=0.0, le=1.0, allow_inf_nan=False)
    max_det: int = Field(300, ge=1, le=30000)
    half: bool = Field(True, description="fp16 inference; only applies on CUDA, ignored on CPU.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d{1,2})$")
    max_images: int | None = Field(None, ge=1, description="Evaluate only the first N images (null = all).")
    scorer: ScorerName = Field(
        "faster_coco_eval", description="COCOeval implementation: faster_coco_eval (default) or pycocotools."
    )


class ExportSettings(BaseModel):
    """Export each run's model to ONNX (kept as a downloadable artifact), checked against PyTorch."""

    model_config = ConfigDict(extra="forbid", strict=True)

    opset: int = Field(18, ge=17, le=21, description="ONNX opset of the exported graph.")
    simplify: bool = Field(
        True, description="Simplify the graph with onnxslim; kept only if the simplified graph passes the check."
    )
    check_images: int = Field(4, ge=1, le=64, description="Real images of the job's dataset the check runs on.")


def _all_runtimes() -> list[Runtime]:
    return ["torch", "onnxruntime_cpu", "onnxruntime_cuda", "tensorrt"]


class LatencySettings(BaseModel):
    """The latency suite, one protocol for every run: warm-up, then timed iterations, median and p90."""

    model_config = ConfigDict(extra="forbid", strict=True)

    runtimes: list[Runtime] = Field(default_factory=_all_runtimes, min_length=1, max_length=len(RUNTIMES))
    batch_sizes: list[Annotated[int, Field(ge=1, le=512)]] | None = Field(
        None, min_length=1, max_length=4, description="Default: 1 and the job's batch_size."
    )
    warmup: int = Field(5, ge=0, le=1000, description="Untimed iterations before timing.")
    iterations: int = Field(20, ge=1, le=10000, description="Timed iterations; median and p90 are over these.")
    threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads (torch on CPU, ONNX Runtime CPU); default: the worker's cores."
    )

    @field_validator("runtimes")
    @classmethod
    def _unique_runtimes(cls, runtimes: list[str]) -> list[str]:
        return list(dict.fromkeys(runtimes))

    def batches(self, job_batch_size: int) -> list[int]:
        """The batch sizes to time, ascending."""
        return sorted(set(self.batch_sizes or [1, job_batch_size]))


def _plain_name(value: str) -> str:
    # Clients name things; they never send file-system paths.
    if "/" in value or "\\" in value or value in (".", "..") or "\x00" in value:
        raise ValueError("must be a plain name or id, not a path")
    return value


class FinetuneSettings(BaseModel):
    """Fine-tuning after pruning (and after any training-free recovery), before evaluation.

    Defaults are upstream YOLOv5 train.py's with hyp.scratch-low.yaml; the training step is prunebench's
    own implementation of that recipe (SGD with Nesterov momentum, warm-up, linear or cosine decay,
    EMA of weights, mosaic/affine/HSV/flip augmentation, AMP on CUDA)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    dataset: str = Field(
        ..., min_length=1, max_length=200, description="Training dataset: a catalog name, usually a train split."
    )
    epochs: int = Field(10, ge=1, le=1000)
    img_size: int = Field(640, ge=64, le=4096, description="Square training input, pixels; a multiple of 32.")
    batch_size: int = Field(16, ge=1, le=512)
    lr0: float = Field(0.01, gt=0.0, le=1.0, allow_inf_nan=False, description="Initial learning rate (SGD).")
    lrf: float = Field(0.01, gt=0.0, le=1.0, allow_inf_nan=False, description="Final lr as a fraction of lr0.")
    cos_lr: bool = Field(False, description="Cosine instead of linear learning-rate decay.")
    warmup_epochs: float = Field(3.0, ge=0.0, le=100.0, allow_inf_nan=False)
    momentum: float = Field(0.937, ge=0.0, lt=1.0, allow_inf_nan=False)
    weight_decay: float = Field(0.0005, ge=0.0, le=0.1, allow_inf_nan=False)
    ema: bool = Field(True, description="Keep and report an exponential moving average of the weights.")
    mosaic: bool = Field(True, description="Mosaic augmentation (four images per sample), as upstream.")
    max_images: int | None = Field(None, ge=1, description="Train on the first N images only (null = all).")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds shuffling and augmentation.")
    dense: bool = Field(
        False, description="Fine-tune the dense baseline too (a control: what training alone does to mAP)."
    )

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, value: str) -> str:
        return _plain_name(value)

    @field_validator("img_size")
    @classmethod
    def _stride_multiple(cls, value: int) -> int:
        if value % 32:
            raise ValueError("must be a multiple of 32 (the detector's largest stride)")
        return value


class CalibrationSettings(BaseModel):
    """The images BatchNorm recalibration re-estimates statistics on (and ``taylor`` takes gradients on)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    dataset: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Catalog dataset (null: the evaluated dataset itself; a train split keeps them apart).",
    )
    images: int = Field(256, ge=1, le=10000, description="The first N images of it by file name.")

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, value: str | None) -> str | None:
        return None if value is None else _plain_name(value)


SearchObjective = Literal["sparsity", "gflops", "params", "size", "latency"]
"""What a target search removes the most of: zero fraction, GFLOPs, non-zero parameters, bytes on disk,
or milliseconds per image (the evaluation's total, or the first measured runtime when `latency` is asked)."""
SEARCH_OBJECTIVES: tuple[str, ...] = get_args(SearchObjective)
TargetMetric = Literal["map", "map50"]
Analysis = Literal["sensitivity"]
ANALYSES: tuple[str, ...] = get_args(Analysis)
DEFAULT_SENSITIVITY_LEVELS = (0.3, 0.5, 0.7, 0.9)


class TargetSpec(BaseModel):
    """An accuracy budget: the most mAP a target job may lose against its own dense baseline.

    Exactly one of ``max_map_drop`` (absolute, in mAP units: 0.01 = one point of mAP@.5:.95) and
    ``max_relative_drop`` (a fraction of the dense mAP: 0.05 = 5 % of it) is given."""

    model_config = ConfigDict(extra="forbid")

    max_map_drop: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    max_relative_drop: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    metric: TargetMetric = Field("map", description="map = mAP@.5:.95, map50 = mAP@.5 (COCOeval).")

    @model_validator(mode="after")
    def _one_budget(self) -> Self:
        if (self.max_map_drop is None) == (self.max_relative_drop is None):
            raise ValueError("give exactly one of 'max_map_drop' or 'max_relative_drop'")
        return self

    def drop(self, dense: float, pruned: float) -> float:
        """The drop the budget is about: absolute (dense - pruned) or relative ((dense - pruned) / dense)."""
        lost = dense - pruned
        if self.max_map_drop is not None:
            return lost
        return lost / dense if dense > 0 else (0.0 if lost <= 0 else math.inf)

    @property
    def budget(self) -> float:
        return self.max_map_drop if self.max_map_drop is not None else float(self.max_relative_drop or 0.0)


class JobRequest(EvalSettings):
    """Body of POST /v1/jobs. Exactly one of `sparsity`, `sparsities` and `target` is given."""

    checkpoint: str = Field(..., min_length=1, max_length=200, description="Checkpoint id (sha256) or name.")
    dataset: str = Field(..., min_length=1, max_length=200, description="Dataset name from GET /v1/datasets.")
    sparsity: Sparsity | None = None
    sparsities: list[Sparsity] | None = Field(None, min_length=1, max_length=MAX_SPARSITIES)
    method: PruneMethod = "l1_unstructured"
    exclude: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Module-name patterns (fnmatch) of Conv2d layers to leave unpruned, e.g. 'model.24.*'.",
    )
    importance: Importance = Field(
        "l1", description="channel: how channels are ranked (l1, l2, bn_scale, lamp, taylor)."
    )
    allocation: Allocation = Field(
        "uniform", description="channel: same ratio in every layer (uniform) or one ranking across layers (global)."
    )
    max_layer_sparsity: float = Field(
        0.9, gt=0.0, lt=1.0, allow_inf_nan=False, description="channel, global: most of one layer's channels removed."
    )
    round_to: int = Field(8, ge=1, le=256, description="channel: kept channel counts are multiples of this.")
    recovery: list[RecoveryStep] = Field(
        default_factory=list,
        max_length=len(RECOVERY_STEPS),
        description="channel: training-free recovery after pruning (bias_compensation, bn_recalibration).",
    )
    calibration: CalibrationSettings = Field(
        default_factory=lambda: CalibrationSettings(),
        description="channel: images for bn_recalibration (unlabelled) and taylor importance (labelled).",
    )
    include_dense: bool = Field(True, description="Evaluate the dense baseline (sparsity 0) once per job.")
    save_models: bool = Field(False, description="Keep each pruned model as a downloadable artifact.")
    use_cache: bool = Field(True, description="Return a stored result for an identical earlier request.")
    callback_url: str | None = Field(None, max_length=2000)
    export: ExportSettings | None = Field(None, description="Export each run's model to ONNX (artifact).")
    latency: LatencySettings | None = Field(None, description="Time each run's model in each runtime.")

    finetune: FinetuneSettings | None = Field(None, description="Fine-tune each pruned model before evaluating it.")

    @field_validator("checkpoint", "dataset")
    @classmethod
    def _plain_names(cls, value: str) -> str:
        return _plain_name(value)

    @field_validator("exclude")
    @classmethod
    def _exclude_patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not EXCLUDE_PATTERN.match(pattern):
                raise ValueError(f"exclude pattern {pattern!r} is not a module-name pattern like 'model.24.*'")
        return patterns

    @model_validator(mode="after")
    def _one_sparsity_form(self) -> Self:
        forms = [self.sparsity is not None, self.sparsities is not None, self.target is not None]
        if sum(forms) != 1:
            raise ValueError("give exactly one of 'sparsity', 'sparsities' or 'target'")
        return self

    @field_validator("recovery")
    @classmethod
    def _recovery_order(cls, steps: list[str]) -> list[str]:
        if len(set(steps)) != len(steps):
            raise ValueError("each recovery step at most once")
        return [step for step in RECOVERY_STEPS if step in steps]  # the order they run in

    @model_validator(mode="after")
    def _channel_options_need_channel(self) -> Self:
        # Clients may always send the defaults; a non-default value with another method is a mistake.
        fields = type(self).model_fields
        given = [
            name
            for name in CHANNEL_FIELDS
            if getattr(self, name) != fields[name].get_default(call_default_factory=True)
        ]
        if self.method != "channel" and given:
            raise ValueError(f"{', '.join(given)} only apply to method 'channel', not {self.method!r}")
        return self

    @model_validator(mode="after")
    def _semi_structured_sparsity(self) -> Self:
        if self.method == "semi_structured_2_4":
            requested = [self.sparsity] if self.sparsity is not None else list(self.sparsities or [])
            odd = [s for s in requested if s not in (0.0, SEMI_STRUCTURED_SPARSITY)]
            if odd:
                raise ValueError(
                    "semi_structured_2_4 zeros exactly 2 of every 4 weights: its sparsity is 0.5 "
                    f"(0 = the dense baseline), got {odd}"
                )
        return self

    def sweep(self) -> list[float]:
        """The sparsity points this job evaluates, in order, dense baseline first when asked.

        A ``target`` job has no fixed sweep (empty list): its search picks the points as it goes."""
        if self.target is not None:
            return []
        if self.layer_sparsities is not None and self.sparsity is not None:
            # One scheduled point (even at sparsity 0: its named layers are pruned), after the dense one.
            return [0.0, self.sparsity] if self.include_dense else [self.sparsity]
        requested = [self.sparsity] if self.sparsity is not None else list(self.sparsities or [])
        points = sorted(set(requested))
        if self.include_dense and 0.0 not in points:
            points.insert(0, 0.0)
        return points

    def dataset_names(self) -> list[str]:
        """Every catalog dataset this job reads: the evaluated one, the training and calibration splits."""
        names = [self.dataset]
        if self.finetune is not None:
            names.append(self.finetune.dataset)
        if self.calibration.dataset is not None:
            names.append(self.calibration.dataset)
        return list(dict.fromkeys(names))

    def eval_settings(self) -> EvalSettings:
        return EvalSettings.model_validate(self.model_dump(include=set(EvalSettings.model_fields)))

    # -- target search, explicit schedules, sensitivity analysis (README "Target search") ---------------
    target: TargetSpec | None = Field(
        None, description="Search the sparsity for the most pruned point within this mAP budget (no sparsities)."
    )
    objective: SearchObjective = Field("sparsity", description="target: what the answer removes the most of.")
    resolution: float = Field(
        0.01, ge=0.001, le=0.25, allow_inf_nan=False, description="target: the sparsity step the search resolves."
    )
    max_search_sparsity: float = Field(
        0.95, gt=0.0, lt=1.0, allow_inf_nan=False, description="target: the highest sparsity the search tries."
    )
    screen_images: int | None = Field(
        None, ge=1, description="target: screen probes on the first N images (the answer is verified on all)."
    )
    analysis: Analysis | None = Field(
        None, description="target: 'sensitivity' also prunes one layer at a time and builds a per-layer schedule."
    )
    sensitivity_levels: list[Sparsity] = Field(
        default_factory=lambda: list(DEFAULT_SENSITIVITY_LEVELS),
        min_length=1,
        max_length=8,
        description="sensitivity: the sparsities each layer is pruned to, alone.",
    )
    sensitivity_unit: Literal["layer", "block"] = Field(
        "layer", description="sensitivity: prune one Conv2d at a time, or one top-level block (model.N) at a time."
    )

    layer_sparsities: dict[str, Sparsity] | None = Field(
        None,
        max_length=512,
        description="With 'sparsity' (the level of layers no pattern names): fnmatch pattern -> that layer's "
        "sparsity; the first matching pattern wins (l1_unstructured, global_magnitude).",
    )

    @field_validator("layer_sparsities")
    @classmethod
    def _schedule_patterns(cls, schedule: dict[str, float] | None) -> dict[str, float] | None:
        for pattern in schedule or {}:
            if not EXCLUDE_PATTERN.match(pattern):
                raise ValueError(f"layer_sparsities pattern {pattern!r} is not a module-name pattern like 'model.24.*'")
        return schedule

    @model_validator(mode="after")
    def _schedule_form(self) -> Self:
        if self.layer_sparsities is None:
            return self
        if not self.layer_sparsities:
            raise ValueError("layer_sparsities needs at least one pattern")
        if self.sparsity is None:
            raise ValueError("layer_sparsities goes with 'sparsity' (the level of the layers no pattern names)")
        if self.method not in ("l1_unstructured", "global_magnitude"):
            raise ValueError(f"layer_sparsities applies to l1_unstructured and global_magnitude, not {self.method!r}")
        return self

    @model_validator(mode="after")
    def _target_options(self) -> Self:
        if self.target is None:
            given = [
                n
                for n in TARGET_FIELDS
                if getattr(self, n) != type(self).model_fields[n].get_default(call_default_factory=True)
            ]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to a 'target' job")
            return self
        if self.method == "semi_structured_2_4":
            raise ValueError("semi_structured_2_4 has one sparsity (0.5): there is nothing to search")
        if self.save_models or self.export is not None:
            raise ValueError("a target job keeps no artifacts: re-submit its answer as a 'sparsity' job to save them")
        if self.analysis == "sensitivity" and self.method == "channel":
            raise ValueError("sensitivity analysis prunes single Conv2d layers: use an unstructured method")
        if self.resolution >= self.max_search_sparsity:
            raise ValueError("resolution must be smaller than max_search_sparsity")
        self.sensitivity_levels = sorted(set(self.sensitivity_levels))
        return self


class Progress(BaseModel):
    stage: Stage = "queued"
    run_index: int = 0
    runs_total: int = 0
    sparsity: float | None = None
    images_done: int = 0
    images_total: int = 0
    percent: float = 0.0
    message: str | None = None
    epoch: int | None = Field(None, description="finetuning: the epoch in progress (1-based).")
    epochs: int | None = None
    iteration: int | None = Field(None, description="finetuning: the batch in progress within the epoch (1-based).")
    iterations: int | None = None
    loss: dict[str, float] | None = Field(None, description="finetuning: this epoch's mean box, obj, cls loss so far.")


class Attempt(BaseModel):
    number: int
    worker: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: AttemptOutcome | None = None
    error: str | None = None


class JobResource(BaseModel):
    id: str
    status: JobStatus
    owner: str | None = None
    request: JobRequest
    progress: Progress = Field(default_factory=Progress)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    worker: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    result_url: str | None = None
    cached: bool = False
    deliveries: list[dict[str, Any]] = Field(default_factory=list)


class CheckpointInfo(BaseModel):
    id: str = Field(..., description="sha256 hex digest of the file's bytes.")
    name: str
    size_bytes: int
    format: CheckpointFormat | None = Field(..., description="Layout of the file; null when it is unusable.")
    num_classes: int
    class_names: list[str]
    source: CheckpointSource = "upload"
    arch: str | None = None
    stride: list[float] | None = None
    created_at: datetime | None = None
    owner: str | None = None
    usable: bool = Field(True, description="False for a mounted file prunebench cannot load (see `problem`).")
    problem: str | None = Field(None, description="Why an unusable mounted file cannot be loaded.")


class DatasetInfo(BaseModel):
    name: str
    images: int
    annotations: int
    categories: list[dict[str, Any]]
    is_coco: bool = Field(False, description="Uses the COCO 80-to-91 category id map.")
    builtin: bool = False
    format: Literal["coco", "yolo"] = Field(
        "coco", description="coco: instances JSON; yolo: a split of a YOLOv5 data.yaml (labels/*.txt)."
    )
    warnings: list[str] = Field(
        default_factory=list, description="What loading normalised (renumbered ids, defaulted fields)."
    )


class Metrics(BaseModel):
    """The 12 pycocotools COCOeval stats plus upstream-style P and R."""

    map: float
    map50: float
    map75: float
    map_small: float
    map_medium: float
    map_large: float
    ar1: float
    ar10: float
    ar100: float
    ar_small: float
    ar_medium: float
    ar_large: float
    precision: float
    recall: float
    upstream_map50: float | None = Field(None, description="mAP@.5 from upstream's own AP code (not pycocotools).")
    upstream_map: float | None = Field(None, description="mAP@.5:.95 from upstream's own AP code.")

    @field_validator("*", mode="before")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("metrics must be finite")
        return value


class SpeedMs(BaseModel):
    """Milliseconds per image, averaged over the evaluated images at the job's batch size."""

    preprocess: float
    inference: float
    nms: float
    total: float


class LayerReport(BaseModel):
    name: str
    shape: list[int]
    params: int
    zeros: int
    sparsity: float
    pruned: bool


class OnnxExport(BaseModel):
    """A run's model as ONNX: images [B,3,H,W] float32 -> output0 [B, N, 5+nc] (dynamic B, H = W = img_size)."""

    artifact: str | None = Field(None, description="Download path of the .onnx file (when export was asked).")
    size_bytes: int
    opset: int
    simplified: bool = Field(..., description="The kept graph is onnxslim's simplification.")
    simplify_note: str | None = Field(None, description="Why simplification was not kept, when it was asked.")
    check_images: int = Field(..., description="Real images the ONNX Runtime vs PyTorch check ran on.")
    max_abs_diff: float = Field(..., description="Largest |onnxruntime - torch| over the checked outputs.")
    max_scaled_diff: float = Field(..., description="Largest |onnxruntime - torch| / max(1, |torch|): the check.")
    tolerance: float = ONNX_TOLERANCE
    seconds: float
    versions: dict[str, str] = Field(default_factory=dict, description="torch, onnx, onnxruntime, onnxslim.")


class LatencyReport(BaseModel):
    """One runtime at one batch size. `status` says whether it was measured; `reason` why not."""

    runtime: Runtime
    status: Literal["measured", "skipped", "failed"]
    reason: str | None = Field(None, description="Why this runtime was skipped or failed on this worker.")
    device: str = Field(..., description="cpu, cuda:N")
    device_name: str | None = None
    threads: int | None = Field(None, description="CPU threads (CPU runtimes only).")
    precision: Literal["fp32", "fp16"]
    versions: dict[str, str] = Field(default_factory=dict)
    batch: int
    img_size: int
    warmup: int
    iterations: int
    median_ms: float | None = Field(None, description="Median wall time of one batch, milliseconds.")
    p90_ms: float | None = Field(None, description="90th percentile (linear interpolation) of the batch times.")
    ms_per_image: float | None = Field(None, description="median_ms / batch.")
    sparse_tactics: bool | None = Field(None, description="TensorRT: built with SPARSE_WEIGHTS (2:4 kernels).")
    note: str | None = Field(None, description="What the figure means for this run, e.g. why 2:4 gains nothing.")


class RunDeltas(BaseModel):
    """This run against the job's dense baseline."""

    map: float
    map50: float
    speed_ratio: float = Field(..., description="dense total ms/image divided by this run's (>1 = faster).")
    size_ratio: float = Field(..., description="this run's size on disk divided by the dense model's.")
    params_ratio: float
    gflops_ratio: float
    latency_speedup: dict[str, float] = Field(
        default_factory=dict,
        description="'runtime@batch' -> dense median / this run's median in the same runtime (>1 = faster).",
    )


class TrainLossPoint(BaseModel):
    """One fine-tuning epoch's mean training loss components (upstream's box_loss, obj_loss, cls_loss)."""

    epoch: int
    box: float
    obj: float
    cls: float
    total: float
    seconds: float | None = Field(None, description="Wall-clock seconds of this epoch.")


class RecoveryReport(BaseModel):
    """What was done to recover accuracy after pruning, and what it bought."""

    applied: list[str] = Field(..., description="Recovery steps in the order applied, e.g. ['finetune'].")
    map_before: float = Field(..., description="mAP@.5:.95 of the pruned model before recovery (the job's COCOeval).")
    map50_before: float
    map_after: float = Field(..., description="mAP@.5:.95 after recovery (= this run's metrics.map).")
    map50_after: float
    epochs: int | None = Field(None, description="Fine-tuning epochs (null when not fine-tuned).")
    train_loss: list[TrainLossPoint] = Field(default_factory=list, description="Fine-tuning loss per epoch.")
    seconds: float = Field(..., description="Wall-clock seconds of the recovery steps (training included).")
    resumed_from_epoch: int | None = Field(
        None, description="Epochs an earlier attempt had finished when this one resumed fine-tuning from them."
    )
    calibration_dataset: str | None = Field(None, description="bn_recalibration: the dataset calibrated on.")
    calibration_images: int | None = Field(None, description="bn_recalibration: how many of its images.")


class RunResult(BaseModel):
    sparsity_target: float
    sparsity: float = Field(..., description="Achieved fraction of zeros in the prunable Conv2d weights.")
    global_sparsity: float = Field(..., description="Zeros over all parameters, as upstream prints it.")
    params: int
    nonzero_params: int
    gflops: float = Field(..., description="GFLOPs of one 640x640 image (upstream's convention), any img_size.")
    size_bytes: int | None = Field(None, description="Size on disk of the saved (pruned) model.")
    metrics: Metrics
    speed_ms_per_image: SpeedMs
    images_per_second: float
    images: int
    instances: int
    seconds: float
    batch_size_used: int | None = Field(None, description="Smaller than requested after an OOM back-off.")
    oom_backoffs: int = 0
    layers: list[LayerReport] = Field(default_factory=list)
    deltas: RunDeltas | None = None
    model_artifact: str | None = Field(None, description="Download path of the pruned model, if saved.")
    onnx: OnnxExport | None = Field(None, description="The exported, checked ONNX model (export or latency asked).")
    latency: list[LatencyReport] = Field(default_factory=list, description="One entry per runtime and batch size.")

    recovery: RecoveryReport | None = Field(None, description="Recovery applied to this point (none: null).")
    warnings: list[str] = Field(
        default_factory=list, description="What this point's evaluation noticed (skipped images, size mismatches)."
    )


class Environment(BaseModel):
    device: str
    device_name: str
    torch: str
    cuda: str | None
    worker: str
    prunebench: str


class SearchProbe(BaseModel):
    """One point a target search evaluated: on the screening subset or on the whole split."""

    sparsity: float = Field(..., description="The sparsity asked for (a multiple of the resolution).")
    achieved_sparsity: float
    split: Literal["subset", "full"] = Field(..., description="subset: the first screen_images images.")
    images: int
    map: float
    map50: float
    drop: float = Field(..., description="The budget's drop against the dense model on the same images.")
    passed: bool = Field(..., description="drop <= the budget.")
    objective: float = Field(..., description="The objective's value at this point (see SearchReport.objective).")
    objective_ratio: float = Field(..., description="objective / the dense model's (sparsity: 1 - sparsity).")
    run_index: int | None = Field(None, description="full probes: the index of this point in `runs`.")


class SearchReport(BaseModel):
    """How a target job's search went: every probe (the curve), the verified answer and its boundary."""

    metric: TargetMetric
    budget_kind: Literal["absolute", "relative"]
    budget: float
    objective: SearchObjective
    objective_unit: str = Field(..., description="fraction, GFLOPs, parameters, bytes or ms/image.")
    resolution: float
    max_search_sparsity: float
    screen_images: int | None = Field(None, description="Images the screening probes ran on (null: no screening).")
    dense_map: float = Field(..., description="The dense model's metric on the whole split.")
    probes: list[SearchProbe] = Field(default_factory=list, description="In the order they were evaluated.")
    answer: float = Field(..., description="The most pruned sparsity found whose verified drop is within budget.")
    answer_drop: float
    answer_objective: float
    answer_run: int = Field(..., description="Index of the answer in `runs`.")
    met_budget: bool = Field(..., description="False: no pruned point meets the budget; the answer is the dense model.")
    boundary: float | None = Field(None, description="answer + resolution, verified to exceed the budget.")
    boundary_drop: float | None = None
    boundary_run: int | None = None
    full_evaluations: int = Field(..., description="Distinct points evaluated on the whole split (dense included).")
    note: str = Field(..., description="The answer in words.")


class LayerSensitivity(BaseModel):
    """One Conv2d pruned alone (every other layer dense) at each level, on the screening images."""

    name: str
    params: int = Field(..., description="Weights in this layer.")
    levels: list[float]
    drops: list[float] = Field(..., description="The budget's drop at each level, same order as levels.")


class ScheduleProbe(BaseModel):
    """One prefix of the greedy moves evaluated on the whole split while searching the schedule."""

    moves: int = Field(..., description="How many greedy moves the schedule takes.")
    sparsity: float = Field(..., description="Its zero fraction over the prunable weights.")
    drop: float
    passed: bool


class SensitivityReport(BaseModel):
    """Per-layer sensitivity and the non-uniform schedule built from it (greedy over the curves)."""

    images: int = Field(..., description="Images each single-layer probe was scored on.")
    levels: list[float]
    layers: list[LayerSensitivity]
    schedule: dict[str, float] = Field(
        default_factory=dict, description="layer -> sparsity of the greedy schedule (re-submit as layer_sparsities)."
    )
    schedule_sparsity: float | None = Field(None, description="Zero fraction of the schedule over prunable weights.")
    schedule_drop: float | None = Field(None, description="Its drop on the whole split.")
    schedule_objective: float | None = None
    schedule_run: int | None = Field(None, description="Index of the schedule's point in `runs`.")
    uniform_objective: float = Field(..., description="The objective at the search's uniform answer.")
    beats_uniform: bool
    note: str
    schedule_probes: list[ScheduleProbe] = Field(
        default_factory=list, description="Every schedule evaluated on the whole split, in order (the chosen included)."
    )


class JobResult(BaseModel):
    job_id: str
    checkpoint: CheckpointInfo
    dataset: DatasetInfo
    settings: dict[str, Any]
    environment: Environment
    runs: list[RunResult]
    cached: bool = False
    cache_key: str | None = None
    created_at: datetime | None = None
    warnings: list[str] = Field(
        default_factory=list,
        description="Why the numbers may not be what was expected: data normalised or skipped, settings "
        "adjusted (img_size rounded to the stride) or not comparable (conf_thres > 0.001).",
    )
    search: SearchReport | None = Field(None, description="target jobs: the search's probes, answer and boundary.")
    sensitivity: SensitivityReport | None = Field(None, description="analysis 'sensitivity': curves and schedule.")


# -- lists and names over HTTP ------------------------------------------------------------------------

Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    """One page of a list route (GET /v1/jobs, /v1/checkpoints, /v1/datasets), newest or catalog order."""

    items: list[Item]
    total: int = Field(..., ge=0, description="How many items match in all (for paging with limit/offset).")
    limit: int = Field(..., ge=1, description="The most items one page holds, as asked.")
    offset: int = Field(..., ge=0, description="How many matching items precede this page.")


class Meta(BaseModel):
    """GET /v1/meta: the names the API speaks, so clients need not copy them."""

    version: str
    methods: list[PruneMethod]
    statuses: list[JobStatusName]
    terminal_statuses: list[JobStatusName]
    stages: list[Stage]
    attempt_outcomes: list[AttemptOutcome]
    runtimes: list[Runtime] = Field(default_factory=list, description="Where latency can be measured.")
    max_sparsities: int = Field(..., description="Most sparsity points one job may ask for.")
    importances: list[Importance] = Field(default_factory=list, description="Channel importance criteria.")
    allocations: list[Allocation] = Field(default_factory=list, description="Channel allocation rules.")
    recovery_steps: list[RecoveryStep] = Field(default_factory=list, description="Training-free recovery steps.")
    objectives: list[SearchObjective] = Field(default_factory=list, description="What a target search may optimise.")
    analyses: list[Analysis] = Field(default_factory=list, description="Analyses a target job may add.")
