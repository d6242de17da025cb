"""End-to-end parity with upstream YOLOv5 val.py on the bundled demo (CPU, float32).

The reference numbers in tests/fixtures/reference/metrics.json were written by upstream itself at
--img 320 --batch 32 --conf-thres 0.001 --iou-thres 0.6, dense and after its per-layer L1 pruning of the
fused model at 0.2 and 0.3. One local job (the product path: load, fuse, decode once, prune, evaluate,
score) covers all three points.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunebench.contract import JobRequest, JobResult, RunResult
from prunebench.datasets.catalog import BUILTIN_ROOT, builtin_datasets
from prunebench.worker.engine.pipeline import run_local
from tests.support.records import match_rows

REFERENCE = json.loads((Path(__file__).parents[1] / "fixtures" / "reference" / "metrics.json").read_text())
CHECKPOINT = BUILTIN_ROOT / "yolov5n_shapes.pt"
TOLERANCE = 0.002  # pycocotools mAP / mAP50; in practice the match is exact on x86 CPUs
OTHER_STATS_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def result() -> JobResult:
    request = JobRequest(
        checkpoint=CHECKPOINT.name,
        dataset="shapes-val",
        sparsities=[0.2, 0.3],
        method="l1_unstructured",
        include_dense=True,
        img_size=320,
        batch_size=32,
        conf_thres=0.001,
        iou_thres=0.6,
        max_det=300,
        device="cpu",
        half=False,
    )
    return run_local(request, CHECKPOINT, builtin_datasets()["shapes-val"])


def _run(result: JobResult, sparsity: float) -> RunResult:
    return next(r for r in result.runs if r.sparsity_target == sparsity)


def test_sweep_shape(result: JobResult) -> None:
    assert [r.sparsity_target for r in result.runs] == [0.0, 0.2, 0.3]
    assert result.settings["half"] is False and result.settings["device"] == "cpu"
    for run in result.runs:
        assert run.images == 120 and run.instances == 550
        assert run.batch_size_used == 32 and run.oom_backoffs == 0


def test_model_summary_matches_upstream(result: JobResult) -> None:
    """Upstream prints the fused model's params and its GFLOPs at 640 px, whatever --img was."""
    summary = REFERENCE["runs"]["0.0"]["summary"]
    for run in result.runs:
        assert run.params == summary["params"]
        assert round(run.gflops, 1) == summary["gflops"]


@pytest.mark.parametrize("sparsity", [0.0, 0.2, 0.3])
def test_pycocotools_metrics_match_upstream(result: JobResult, sparsity: float) -> None:
    expected = REFERENCE["runs"][str(sparsity)]["metrics"]
    got = _run(result, sparsity).metrics.model_dump()
    assert got["map"] == pytest.approx(expected["map"], abs=TOLERANCE)
    assert got["map50"] == pytest.approx(expected["map50"], abs=TOLERANCE)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=OTHER_STATS_TOLERANCE), name


@pytest.mark.parametrize("sparsity", [0.0, 0.2, 0.3])
def test_upstream_table_matches(result: JobResult, sparsity: float) -> None:
    table = REFERENCE["runs"][str(sparsity)]["upstream_internal"]
    metrics = _run(result, sparsity).metrics
    # val.py prints three decimals: allow its rounding plus the same slack as the headline numbers.
    slack = 0.0005 + TOLERANCE
    assert metrics.precision == pytest.approx(table["precision"], abs=slack)
    assert metrics.recall == pytest.approx(table["recall"], abs=slack)
    assert metrics.upstream_map50 == pytest.approx(table["map50"], abs=slack)
    assert metrics.upstream_map == pytest.approx(table["map"], abs=slack)


@pytest.mark.parametrize("sparsity", [0.2, 0.3])
def test_pruning_reaches_upstream_sparsity(result: JobResult, sparsity: float) -> None:
    run = _run(result, sparsity)
    assert run.global_sparsity == pytest.approx(REFERENCE["runs"][str(sparsity)]["global_sparsity"], abs=0.0015)
    assert run.deltas is not None and run.deltas.map < 0


# ---------------------------------------------------------------------------------------------------------
# Pipeline plumbing on a small slice of the demo (fast): artifacts, progress stages, cancellation, errors.


class _Recorder:
    def __init__(self, stop_at_stage: str | None = None) -> None:
        self.stages: list[str] = []
        self.percents: list[float] = []
        self.stop_at_stage = stop_at_stage

    def progress(self, progress) -> None:
        self.stages.append(progress.stage)
        self.percents.append(progress.percent)

    def should_stop(self) -> bool:
        return self.stop_at_stage is not None and self.stop_at_stage in self.stages


def _small_request(**overrides) -> JobRequest:
    fields = dict(
        checkpoint=CHECKPOINT.name, dataset="shapes-val", sparsity=0.5, img_size=128, batch_size=4, max_images=6
    )
    fields.update(overrides)
    return JobRequest(device="cpu", **fields)


def test_pipeline_saves_artifacts_and_reports_stages(tmp_path: Path) -> None:
    from prunebench.worker.engine.checkpoints import load_model

    reporter = _Recorder()
    request = _small_request(save_models=True)
    result = run_local(request, CHECKPOINT, builtin_datasets()["shapes-val"], reporter, tmp_path)
    assert [r.sparsity_target for r in result.runs] == [0.0, 0.5]
    assert [r.model_artifact for r in result.runs] == ["runs/0/model", "runs/1/model"]
    for k, run in enumerate(result.runs):
        assert (tmp_path / f"run-{k}.pt").stat().st_size == run.size_bytes
        assert run.images == 6
    assert load_model(tmp_path / "run-1.pt").model.is_fused
    assert result.runs[1].sparsity == pytest.approx(0.5, abs=0.01)
    assert result.runs[0].deltas is not None and result.runs[0].deltas.speed_ratio == 1.0
    assert result.runs[1].deltas is not None and result.runs[1].deltas.params_ratio < 0.6
    for stage in ("loading", "decoding", "pruning", "saving", "evaluating", "scoring", "done"):
        assert stage in reporter.stages
    assert reporter.stages[-1] == "done"
    assert reporter.percents == sorted(reporter.percents), "progress must never move backwards"
    assert reporter.percents[-1] == 100.0


def test_pipeline_cancels_between_stages() -> None:
    from prunebench.worker.engine.reporting import JobCanceled

    with pytest.raises(JobCanceled):
        run_local(_small_request(), CHECKPOINT, builtin_datasets()["shapes-val"], _Recorder(stop_at_stage="pruning"))


def test_pipeline_rejects_class_mismatch(tmp_path: Path) -> None:
    from prunebench.datasets.catalog import DatasetSpec
    from prunebench.worker.engine.pipeline import PipelineError

    spec = builtin_datasets()["shapes-val"]
    instances = dict(spec.instances)
    instances["categories"] = [{"id": i, "name": str(i)} for i in range(1, 100)]  # 99 categories > 80 classes
    # ... all of them annotated (unused categories, e.g. a Roboflow root, do not block evaluation).
    instances["annotations"] = [{**a, "category_id": k % 99 + 1} for k, a in enumerate(instances["annotations"])]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(instances))
    wide = DatasetSpec(name="wide", images_dir=spec.images_dir, annotations=path, category_map="ordered")
    with pytest.raises(PipelineError, match="80 classes"):
        run_local(_small_request(), CHECKPOINT, wide)


# ---------------------------------------------------------------------------------------------------------
# Detection-level parity: the COCO results JSON itself, not only the metrics computed from it.


@pytest.mark.parametrize("sparsity", [0.0, 0.3])
def test_detections_equal_upstream_predictions(sparsity: float) -> None:
    import gzip

    import torch

    from prunebench.worker.engine import pruning
    from prunebench.worker.engine.checkpoints import load_model
    from prunebench.worker.engine.data import decode_dataset, grid_stride
    from prunebench.worker.engine.evaluate import EvalConfig, evaluate
    from prunebench.worker.engine.scoring import coco_results, native_detections

    dataset = builtin_datasets()["shapes-val"]
    loaded = load_model(CHECKPOINT)
    model = loaded.model.fuse()
    if sparsity:
        pruning.apply_pruning(model, "l1_unstructured", sparsity, [])
    decoded = decode_dataset(dataset, 320)
    config = EvalConfig(batch_size=32, stride=grid_stride(max(loaded.stride)))
    out = evaluate(model, decoded, config, torch.device("cpu"))
    ours = coco_results(
        native_detections(out.detections, decoded.images), decoded.image_ids, dataset.class_to_category(loaded.nc)
    )
    fixture = Path(__file__).parents[1] / "fixtures" / "reference" / f"upstream_predictions_s{sparsity}.json.gz"
    upstream = json.loads(gzip.decompress(fixture.read_bytes()))

    # Row for row, up to one unit of the last written digit: upstream wrote these on another CPU, whose
    # float32 kernels round a few values the other way (see tests/support/records.py).
    assert len(ours) == len(upstream)
    exact, unmatched = match_rows(ours, upstream)
    assert unmatched == []
    assert exact >= 0.9 * len(upstream)  # observed: 100% on AVX2 (the reference's), 96.6% on AVX-512
