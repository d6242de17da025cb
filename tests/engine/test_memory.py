"""A job that would not fit the worker's memory fails before loading, saying what does not fit."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from prunebench.checkpoints.architectures import official_config
from prunebench.checkpoints.inspect import inspect_checkpoint
from prunebench.checkpoints.limits import estimate_architecture
from prunebench.config import get_settings
from prunebench.contract import FinetuneSettings, JobRequest
from prunebench.datasets.catalog import builtin_datasets
from prunebench.worker.engine.memory import JobTooLarge, check_job_fits, footprint
from prunebench.worker.engine.pipeline import run_local
from prunebench.worker.engine.yolo.model import DetectionModel
from tests.support.hostile import write_archive
from tests.support.paths import DEMO_CHECKPOINT

GIB = 1024**3
CPU = torch.device("cpu")


def _request(**fields: object) -> JobRequest:
    return JobRequest.model_validate(
        {"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": 0.2, **fields}
    )


@pytest.mark.parametrize("arch", ["yolov5n", "yolov5s"])
def test_parameter_estimate_matches_the_built_model(arch: str) -> None:
    cfg = official_config(arch, nc=3)
    built = sum(t.numel() for t in DetectionModel(cfg).state_dict().values())
    estimate = estimate_architecture(cfg).parameters
    assert abs(estimate - built) / built < 0.001, (estimate, built)


def test_default_jobs_fit_and_4096_by_32_does_not() -> None:
    meta = inspect_checkpoint(DEMO_CHECKPOINT)
    fits = check_job_fits(_request(img_size=640, batch_size=32), meta, CPU, host_bytes=8 * GIB)
    assert fits.activations < 4 * GIB
    with pytest.raises(JobTooLarge, match=r"inference at img_size 4096 x batch 32: .* this worker has 8\.0 GiB"):
        check_job_fits(_request(img_size=4096, batch_size=32), meta, CPU, host_bytes=8 * GIB)
    # Memory grows with the image area and the batch.
    small = footprint(_request(img_size=640, batch_size=1), meta).activations
    assert footprint(_request(img_size=1280, batch_size=2), meta).activations == pytest.approx(8 * small, rel=0.01)


def test_fine_tuning_is_sized_by_its_own_batch() -> None:
    meta = inspect_checkpoint(DEMO_CHECKPOINT)
    request = _request(
        img_size=320, batch_size=1, finetune=FinetuneSettings(dataset="shapes-val", img_size=2048, batch_size=64)
    )
    with pytest.raises(JobTooLarge, match="fine-tuning at img_size 2048 x batch 64"):
        check_job_fits(request, meta, CPU, host_bytes=8 * GIB)


def test_a_wide_config_fails_before_any_module_is_built(tmp_path: Path) -> None:
    # width_multiple 2 (inside the limits): about 4x the parameters of yolov5l, 186 M.
    cfg = official_config("yolov5l", nc=80) | {"width_multiple": 2.0}
    path = write_archive(tmp_path / "wide.pt", pickle.dumps({"state_dict": {}, "yaml": cfg}, protocol=2))
    meta = inspect_checkpoint(path)
    assert meta.parameters > 150_000_000
    with pytest.raises(JobTooLarge, match="weights"):
        check_job_fits(_request(img_size=320, batch_size=1), meta, CPU, host_bytes=2 * GIB)


def test_the_pipeline_refuses_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEBENCH_WORKER_MEMORY_BYTES", str(2 * GIB))
    get_settings.cache_clear()
    try:
        with pytest.raises(JobTooLarge, match="img_size 4096"):
            run_local(
                _request(img_size=4096, batch_size=32, device="cpu"), DEMO_CHECKPOINT, builtin_datasets()["shapes-val"]
            )
    finally:
        get_settings.cache_clear()
