"""The job request contract: what POST /v1/jobs accepts and how a sweep is formed."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from prunebench.contract import MAX_SPARSITIES, JobRequest, JobStatus

BASE = {"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val"}


def request(**fields: object) -> JobRequest:
    return JobRequest.model_validate({**BASE, **fields})


def test_defaults_are_upstream_val_defaults() -> None:
    job = request(sparsity=0.3)
    assert (job.img_size, job.batch_size, job.conf_thres, job.iou_thres, job.max_det) == (640, 32, 0.001, 0.6, 300)
    assert job.method == "l1_unstructured"
    assert job.half is True and job.device == "auto" and job.max_images is None


def test_single_sparsity_runs_dense_baseline_first() -> None:
    assert request(sparsity=0.3).sweep() == [0.0, 0.3]


def test_opting_out_of_the_dense_baseline() -> None:
    assert request(sparsity=0.3, include_dense=False).sweep() == [0.3]


def test_sweep_is_sorted_and_deduplicated() -> None:
    assert request(sparsities=[0.5, 0.0, 0.3, 0.5]).sweep() == [0.0, 0.3, 0.5]


@pytest.mark.parametrize(
    "fields",
    [
        {"sparsity": -0.1},
        {"sparsity": 1.0},
        {"sparsity": 1.5},
        {"sparsity": math.nan},
        {"sparsity": math.inf},
        {"sparsity": "a lot"},
        {"sparsities": []},
        {"sparsities": [0.1, -0.2]},
        {"sparsities": [0.1] * (MAX_SPARSITIES + 1)},
        {"sparsity": 0.1, "sparsities": [0.2]},
        {},
        {"sparsity": 0.1, "method": "random"},
        {"sparsity": 0.1, "colour": "blue"},
        {"sparsity": 0.1, "img_size": 0},
        {"sparsity": 0.1, "device": "tpu"},
        {"sparsity": 0.1, "exclude": [""]},
        {"sparsity": 0.1, "exclude": ["model.0 ; rm -rf /"]},
        {"sparsity": 0.1, "exclude": ["x" * 201]},
        {"sparsity": 0.1, "exclude": "model.0"},
        {"sparsity": 0.1, "method": "channel", "importance": "random"},
        {"sparsity": 0.1, "method": "channel", "allocation": "local"},
        {"sparsity": 0.1, "method": "channel", "max_layer_sparsity": 1.0},
        {"sparsity": 0.1, "method": "channel", "max_layer_sparsity": 0.0},
        {"sparsity": 0.1, "method": "channel", "round_to": 0},
        {"sparsity": 0.1, "method": "l1_unstructured", "importance": "bn_scale"},
        {"sparsity": 0.1, "method": "global_magnitude", "round_to": 16},
        {"sparsity": 0.1, "method": "channel", "recovery": ["magic"]},
        {"sparsity": 0.1, "method": "channel", "recovery": ["bn_recalibration", "bn_recalibration"]},
        {"sparsity": 0.1, "method": "channel", "recovery": "bn_recalibration"},
        {"sparsity": 0.1, "method": "channel", "calibration": {"dataset": "../train"}},
        {"sparsity": 0.1, "method": "channel", "calibration": {"images": 0}},
        {"sparsity": 0.1, "method": "channel", "calibration": {"colour": "blue"}},
        {"sparsity": 0.1, "method": "l1_unstructured", "recovery": ["bn_recalibration"]},
        {"sparsity": 0.1, "method": "l1_unstructured", "calibration": {"images": 32}},
    ],
)
def test_invalid_requests_are_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        request(**fields)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "a/b.pt", "..", "x\\y", "nul\x00"])
def test_names_never_carry_paths(name: str) -> None:
    with pytest.raises(ValidationError):
        JobRequest.model_validate({"checkpoint": name, "dataset": "shapes-val", "sparsity": 0.1})
    with pytest.raises(ValidationError):
        JobRequest.model_validate({"checkpoint": "a.pt", "dataset": name, "sparsity": 0.1})


@given(st.lists(st.floats(min_value=0.0, max_value=0.999, allow_nan=False), min_size=1, max_size=MAX_SPARSITIES))
def test_any_valid_sweep_is_sorted_unique_and_starts_dense(points: list[float]) -> None:
    sweep = request(sparsities=points).sweep()
    assert sweep == sorted(set(sweep))
    assert sweep[0] == 0.0
    assert set(points) <= set(sweep)


def test_exclude_takes_module_name_patterns() -> None:
    assert request(sparsity=0.1, exclude=["model.24.*", "model.0", "model.[12].cv?"]).exclude[0] == "model.24.*"


def test_eval_settings_carry_only_evaluation_fields() -> None:
    settings = request(sparsity=0.2, img_size=320, batch_size=8).eval_settings()
    assert settings.img_size == 320 and settings.batch_size == 8
    assert "sparsity" not in settings.model_dump()


def test_channel_options_default_to_l1_uniform_round_to_8() -> None:
    job = request(sparsity=0.3, method="channel")
    assert (job.importance, job.allocation, job.max_layer_sparsity, job.round_to) == ("l1", "uniform", 0.9, 8)


def test_recovery_steps_run_in_one_order_and_calibration_defaults_to_the_evaluated_dataset() -> None:
    job = request(sparsity=0.3, method="channel", recovery=["bn_recalibration", "bias_compensation"])
    assert job.recovery == ["bias_compensation", "bn_recalibration"]
    assert job.calibration.dataset is None and job.calibration.images == 256
    assert job.dataset_names() == ["shapes-val"]
    elsewhere = request(sparsity=0.3, method="channel", calibration={"dataset": "shapes-train"})
    assert elsewhere.dataset_names() == ["shapes-val", "shapes-train"]


def test_channel_defaults_may_be_sent_with_any_method() -> None:
    # Clients (CLI, dashboard) send the whole form; only a non-default channel option is a mistake.
    job = request(sparsity=0.3, method="l1_unstructured", importance="l1", allocation="uniform", round_to=8)
    assert job.method == "l1_unstructured"


def test_terminal_statuses() -> None:
    assert {s for s in JobStatus if s.is_terminal} == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}
