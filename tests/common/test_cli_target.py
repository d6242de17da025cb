"""CLI: target-search options become JobRequest fields; a result's search block is rendered."""

from __future__ import annotations

import argparse

import pytest

from prunebench.cli.arguments import add_target_options, target_fields
from prunebench.cli.render import format_result_table, sparsities_text
from prunebench.contract import JobRequest


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_target_options(parser)
    return parser.parse_args(list(argv))


def test_a_budget_and_search_options_make_a_valid_target_request() -> None:
    fields = target_fields(parse("--max-map-drop", "0.01", "--objective", "size", "--screen-images", "32"))
    assert fields == {"target": {"max_map_drop": 0.01}, "objective": "size", "screen_images": 32}
    request = JobRequest(checkpoint="c.pt", dataset="d", **fields)
    assert request.sweep() == [] and request.target is not None and request.target.budget == 0.01
    assert target_fields(parse()) == {}
    sensitivity = target_fields(parse("--max-relative-drop", "0.05", "--sensitivity", "--target-metric", "map50"))
    assert sensitivity == {"target": {"max_relative_drop": 0.05, "metric": "map50"}, "analysis": "sensitivity"}


def test_search_options_without_a_budget_are_an_error() -> None:
    with pytest.raises(ValueError, match="--max-map-drop"):
        target_fields(parse("--resolution", "0.02"))


def test_the_result_table_shows_probes_answer_and_boundary() -> None:
    probe = {"split": "full", "images": 16, "map": 0.3, "passed": True, "objective": 0.1}
    search = {
        "budget_kind": "absolute",
        "metric": "map",
        "budget": 0.02,
        "answer": 0.1,
        "boundary": 0.15,
        "note": "sparsity 0.1 drops 0.0190",
        "probes": [
            {**probe, "sparsity": 0.1, "drop": 0.019},
            {**probe, "sparsity": 0.15, "drop": 0.03, "passed": False},
        ],
    }
    text = format_result_table({"runs": [], "search": search})
    assert "target search (absolute map drop <= 0.02)" in text and "0.1 answer" in text and "0.15 boundary" in text
    assert "sparsity 0.1 drops 0.0190" in text
    assert sparsities_text({"target": {"max_map_drop": 0.02}}) == "target map-0.02"
