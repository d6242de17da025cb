"""Pruning through the service: methods, sweeps with deltas, the result cache and model artifacts.

Real redis-server, API and worker processes; small settings (256 px, 16 images) keep it quick.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.paths import SMALL_JOB
from tests.support.stack import Service

pytestmark = pytest.mark.slow

SMALL = SMALL_JOB


def run(service: Service, **fields: Any) -> dict[str, Any]:
    job = service.submit(**{**SMALL, **fields})
    done = service.wait(job["id"])
    assert done["status"] == "succeeded", done
    response = service.http.get(f"/v1/jobs/{job['id']}/result")
    assert response.status_code == 200, response.text
    return {"job": done, "result": response.json()}


def test_sweep_reports_deltas_against_the_dense_baseline(service: Service) -> None:
    runs = run(service, sparsities=[0.4, 0.2], use_cache=False)["result"]["runs"]
    assert [r["sparsity_target"] for r in runs] == [0.0, 0.2, 0.4]
    dense = runs[0]
    assert dense["deltas"]["map"] == 0.0 and dense["deltas"]["speed_ratio"] == 1.0
    for point in runs[1:]:
        deltas = point["deltas"]
        assert deltas["map"] == pytest.approx(point["metrics"]["map"] - dense["metrics"]["map"])
        assert deltas["map50"] == pytest.approx(point["metrics"]["map50"] - dense["metrics"]["map50"])
        assert deltas["speed_ratio"] == pytest.approx(
            dense["speed_ms_per_image"]["total"] / point["speed_ms_per_image"]["total"]
        )
        assert deltas["size_ratio"] < 1.0, "sparse weights are packed, so the file shrinks"
        assert point["params"] == dense["params"] and point["nonzero_params"] < dense["nonzero_params"]
        assert point["sparsity"] == pytest.approx(point["sparsity_target"], abs=1e-3)


def test_global_magnitude_hits_its_sparsity_with_uneven_layers(service: Service) -> None:
    point = run(service, sparsity=0.3, method="global_magnitude", include_dense=False)["result"]["runs"][0]
    assert point["sparsity"] == pytest.approx(0.3, abs=0.005)
    layer_sparsities = {round(layer["sparsity"], 2) for layer in point["layers"] if layer["pruned"]}
    assert len(layer_sparsities) > 3, "one global threshold prunes layers to different fractions"


def test_channel_pruning_makes_a_smaller_dense_model(service: Service) -> None:
    runs = run(service, sparsity=0.3, method="channel")["result"]["runs"]
    dense, point = runs
    assert point["sparsity"] == pytest.approx(0.3, abs=0.02)
    assert point["params"] < 0.8 * dense["params"]
    assert point["deltas"]["params_ratio"] < 0.8 and point["deltas"]["gflops_ratio"] < 0.8
    assert point["nonzero_params"] == pytest.approx(point["params"], rel=0.01), "no zeros: channels are gone"
    assert point["metrics"]["map"] >= 0.0  # evaluated end to end: Detect outputs kept their shape


def test_channel_options_reach_the_pruner_and_the_result(service: Service) -> None:
    options = {"importance": "bn_scale", "allocation": "global", "max_layer_sparsity": 0.8, "round_to": 16}
    result = run(service, sparsity=0.4, method="channel", include_dense=False, **options)["result"]
    assert {k: result["settings"][k] for k in options} == options
    widths = [layer["shape"][0] for layer in result["runs"][0]["layers"] if layer["pruned"]]
    assert widths and all(w % 16 == 0 for w in widths)
    assert result["runs"][0]["sparsity"] == pytest.approx(0.4, abs=0.1)
    response = service.http.post("/v1/jobs", json={**SMALL, "sparsity": 0.2, "importance": "bn_scale"})
    assert response.status_code == 422 and "only apply to method 'channel'" in response.text


def test_recovered_channel_points_carry_a_recovery_block(service: Service) -> None:
    fields = {"recovery": ["bn_recalibration", "bias_compensation"], "calibration": {"images": 8}}
    dense, point = run(service, sparsity=0.3, method="channel", **fields)["result"]["runs"]
    assert dense["recovery"] is None
    report = point["recovery"]
    assert report["applied"] == ["bias_compensation", "bn_recalibration"]
    assert report["map_after"] == point["metrics"]["map"] and 0.0 <= report["map_before"] <= 1.0
    assert report["calibration_dataset"] == SMALL["dataset"] and report["calibration_images"] == 8
    for change in ({"method": "l1_unstructured"}, {"recovery": ["retrain"]}):
        response = service.http.post(
            "/v1/jobs", json={**SMALL, "sparsity": 0.3, "method": "channel", **fields, **change}
        )
        assert response.status_code == 422, (change, response.text)
    unknown = {**SMALL, "sparsity": 0.3, "method": "channel", "calibration": {"dataset": "no-such-split"}}
    assert service.http.post("/v1/jobs", json=unknown).status_code == 404


def test_identical_request_is_served_from_the_cache(service: Service) -> None:
    fields = {"sparsity": 0.25, "max_images": 12}
    first = run(service, **fields)
    again = run(service, **fields)
    assert not first["result"]["cached"] and again["result"]["cached"]
    assert again["job"]["cached"] and again["job"]["attempts"][-1]["outcome"] == "cached"
    assert again["result"]["job_id"] == again["job"]["id"] != first["job"]["id"]
    assert again["result"]["runs"] == first["result"]["runs"]
    fresh = run(service, **fields, use_cache=False)
    assert not fresh["result"]["cached"]
    other = run(service, **{**fields, "iou_thres": 0.5})
    assert not other["result"]["cached"], "different settings are a different request"


@pytest.mark.parametrize("method", ["l1_unstructured", "channel"])
def test_pruned_model_artifact_round_trips_through_upload(service: Service, method: str) -> None:
    pruned = run(service, sparsity=0.3, method=method, include_dense=False, save_models=True)["result"]["runs"][0]
    model = service.http.get(pruned["model_artifact"])
    assert model.status_code == 200 and len(model.content) == pruned["size_bytes"]

    upload = service.http.post("/v1/checkpoints", files={"file": (f"pruned-{method}.pt", model.content)})
    assert upload.status_code == 201, upload.text
    assert upload.json()["format"] == "prunebench"
    again = run(service, checkpoint=upload.json()["id"], sparsity=0.0, use_cache=False)["result"]["runs"][0]
    assert again["metrics"] == pruned["metrics"], "the saved model is the pruned model, exactly"
    assert again["params"] == pruned["params"] and again["nonzero_params"] == pruned["nonzero_params"]


def test_invalid_method_and_exclude_are_rejected(service: Service) -> None:
    for change in ({"method": "magic"}, {"exclude": ["model.0; rm -rf /"]}, {"exclude": "model.0"}):
        response = service.http.post("/v1/jobs", json={**SMALL, "sparsity": 0.2, **change})
        assert response.status_code == 422, (change, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


def test_exclude_matching_no_layer_fails_the_job_with_the_reason(service: Service) -> None:
    job = service.submit(**{**SMALL, "sparsity": 0.2, "exclude": ["model.99.*"]})
    done = service.wait(job["id"])
    assert done["status"] == "failed" and "model.99.*" in done["error"]


def test_excluded_layers_stay_dense(service: Service) -> None:
    point = run(service, sparsity=0.3, exclude=["model.24.*", "model.0.*"], include_dense=False)["result"]["runs"][0]
    by_name = {layer["name"]: layer for layer in point["layers"]}
    assert by_name["model.0.conv"]["zeros"] == 0 and not by_name["model.0.conv"]["pruned"]
    assert all(not layer["pruned"] for name, layer in by_name.items() if name.startswith("model.24."))
    assert by_name["model.1.conv"]["pruned"]
