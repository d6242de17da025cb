"""Target jobs through the service: search with a budget, per-layer schedules, validation, cancel mid-search.

Real redis-server, API and worker processes; 256 px, 16 images (screening on 8).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.paths import SMALL_JOB
from tests.support.stack import Service

pytestmark = pytest.mark.slow

TARGET = {**SMALL_JOB, "method": "global_magnitude", "target": {"max_map_drop": 0.02}, "resolution": 0.05}


def run(service: Service, **fields: Any) -> dict[str, Any]:
    job = service.submit(**fields)
    done = service.wait(job["id"])
    assert done["status"] == "succeeded", done
    response = service.http.get(f"/v1/jobs/{job['id']}/result")
    assert response.status_code == 200, response.text
    return response.json()


def test_target_job_answers_the_most_pruned_point_verified_within_budget(service: Service) -> None:
    result = run(service, **TARGET, screen_images=8)
    assert not result["cached"]
    search, runs = result["search"], result["runs"]
    answer, boundary = runs[search["answer_run"]], runs[search["boundary_run"]]
    assert runs[0]["sparsity_target"] == 0.0 and all(run["images"] == 16 for run in runs), "runs = full split"
    assert answer["sparsity_target"] == search["answer"] and boundary["sparsity_target"] == search["boundary"]
    assert search["boundary"] == pytest.approx(search["answer"] + 0.05)
    assert -answer["deltas"]["map"] == pytest.approx(search["answer_drop"]) and search["answer_drop"] <= 0.02
    assert -boundary["deltas"]["map"] == pytest.approx(search["boundary_drop"]) and search["boundary_drop"] > 0.02
    splits = {probe["split"] for probe in search["probes"]}
    assert splits == {"subset", "full"} and search["screen_images"] == 8
    assert all(p["images"] == (8 if p["split"] == "subset" else 16) for p in search["probes"])
    assert all(p["passed"] == (p["drop"] <= 0.02) for p in search["probes"])
    sparsities = [(p["sparsity"], p["split"]) for p in search["probes"]]
    assert len(sparsities) == len(set(sparsities)), "each (sparsity, split) evaluated once"
    assert result["settings"]["target"]["max_map_drop"] == 0.02 and result["settings"]["resolution"] == 0.05
    again = run(service, **TARGET, screen_images=8)
    assert again["cached"] and again["search"] == search
    other = run(service, **{**TARGET, "target": {"max_map_drop": 0.03}}, screen_images=8)
    assert not other["cached"], "another budget is another question"


def test_a_budget_no_pruned_point_meets_answers_the_dense_model(service: Service) -> None:
    search = run(service, **{**TARGET, "target": {"max_map_drop": 0.0}, "resolution": 0.2}, use_cache=False)["search"]
    assert search["answer"] == 0.0 and not search["met_budget"] and search["answer_run"] == 0
    assert search["boundary"] == 0.2 and search["boundary_drop"] > 0.0
    assert "no pruned point meets the budget" in search["note"]


def test_invalid_target_and_schedule_requests_are_rejected(service: Service) -> None:
    bad: list[dict[str, Any]] = [
        {**TARGET, "sparsity": 0.2},
        {**TARGET, "target": {}},
        {**TARGET, "target": {"max_map_drop": 0.01, "max_relative_drop": 0.1}},
        {**TARGET, "target": {"max_map_drop": -0.01}},
        {**TARGET, "target": {"max_map_drop": 0.01, "metric": "map75"}},
        {**TARGET, "objective": "happiness"},
        {**TARGET, "resolution": 0.0},
        {**TARGET, "method": "semi_structured_2_4"},
        {**TARGET, "save_models": True},
        {**TARGET, "analysis": "sensitivity", "method": "channel"},
        {**SMALL_JOB, "sparsity": 0.2, "resolution": 0.02},
        {**SMALL_JOB, "sparsity": 0.2, "layer_sparsities": {"model.0; rm": 0.5}},
        {**SMALL_JOB, "sparsity": 0.2, "layer_sparsities": {"model.0.*": 1.5}},
        {**SMALL_JOB, "sparsity": 0.2, "layer_sparsities": {}},
        {**SMALL_JOB, "sparsities": [0.2], "layer_sparsities": {"model.0.*": 0.5}},
        {**SMALL_JOB, "sparsity": 0.2, "method": "channel", "layer_sparsities": {"model.0.*": 0.5}},
    ]
    for body in bad:
        response = service.http.post("/v1/jobs", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


def test_an_explicit_schedule_prunes_each_named_layer_and_reproduces(service: Service) -> None:
    schedule = {"model.24.*": 0.9, "model.2*": 0.5, "model.2.*": 0.1}  # first match wins: model.2 gets 0.5
    body = {**SMALL_JOB, "sparsity": 0.2, "layer_sparsities": schedule, "use_cache": False}
    first = run(service, **body)
    dense, point = first["runs"]
    assert dense["sparsity_target"] == 0.0 and dense["nonzero_params"] > point["nonzero_params"]
    by_name = {layer["name"]: layer["sparsity"] for layer in point["layers"]}
    assert by_name["model.24.m.0"] == pytest.approx(0.9, abs=1e-3)
    assert by_name["model.2.cv1.conv"] == pytest.approx(0.5, abs=1e-3)
    assert by_name["model.1.conv"] == pytest.approx(0.2, abs=1e-3), "unnamed layers take 'sparsity'"
    assert first["settings"]["layer_sparsities"] == schedule
    again = run(service, **body)
    assert again["runs"][1]["metrics"] == point["metrics"], "re-submitting the schedule reproduces the point"
    job = service.submit(**{**body, "layer_sparsities": {"model.99.*": 0.5}})
    done = service.wait(job["id"])
    assert done["status"] == "failed" and "model.99.*" in done["error"]


def test_cancel_mid_search_stops_the_job_and_frees_the_worker(service: Service) -> None:
    # Resolution 0.001 and a sensitivity pass keep it busy far longer than the test waits.
    long = {**TARGET, "resolution": 0.001, "analysis": "sensitivity", "use_cache": False}
    job = service.submit(**long)
    deadline = time.monotonic() + 120
    seen: set[str] = set()
    while time.monotonic() < deadline:
        progress = service.job(job["id"])["progress"]
        if progress.get("message"):
            seen.add(progress["message"].split(":")[0])
        if "probe 3" in seen or any(m.startswith("probe 4") for m in seen):
            break
        time.sleep(0.1)
    assert any(m.startswith("probe ") for m in seen), seen
    response = service.http.delete(f"/v1/jobs/{job['id']}")
    assert response.status_code == 202 and response.json()["status"] == "canceled"
    after = run(service, **{**SMALL_JOB, "max_images": 8, "sparsity": 0.2, "include_dense": False, "use_cache": False})
    assert after["runs"][0]["images"] == 8
    final = service.job(job["id"])
    assert final["status"] == "canceled" and final["attempts"][-1]["outcome"] == "canceled"
    assert service.http.get(f"/v1/jobs/{job['id']}/result").status_code == 410
