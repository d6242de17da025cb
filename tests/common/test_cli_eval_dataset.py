"""`prunebench eval` validates the instances file before any inference and takes upstream's NMS options."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from prunebench.cli.evaluate import EXIT_USAGE, _request, add_eval_command, cmd_eval
from prunebench.datasets.catalog import DatasetSpec
from tests.support.paths import DEMO_CHECKPOINT, DEMO_DIR, ROOT

CASES = ROOT / "tests" / "fixtures" / "cases" / "datasets"
IMAGES = DEMO_DIR / "shapes-val" / "images"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_eval_command(parser.add_subparsers())
    return parser.parse_args(["eval", "--checkpoint", str(DEMO_CHECKPOINT), *argv])


def test_duplicate_image_ids_are_refused_before_inference(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--images", str(IMAGES), "--annotations", str(CASES / "a_duplicate_image_ids.json"))
    assert cmd_eval(args) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "duplicate image ids 1, 2, 3, 4, 5 and 5 more" in err
    assert "running" not in err  # no progress line: nothing was decoded or inferred


def test_nms_options_reach_the_job() -> None:
    args = parse("--conf-thres", "0.25", "--iou-thres", "0.45", "--max-det", "100", "--category-map", "names")
    spec = DatasetSpec(name="d", images_dir=IMAGES, annotations=Path("x.json"), category_map=args.category_map)
    request = _request(args, DEMO_CHECKPOINT, spec)
    assert (request.conf_thres, request.iou_thres, request.max_det) == (0.25, 0.45, 100)


def test_nms_defaults_are_upstream_val_py_s() -> None:
    request = _request(parse(), DEMO_CHECKPOINT, DatasetSpec(name="d", images_dir=IMAGES, annotations=Path("x")))
    assert (request.conf_thres, request.iou_thres, request.max_det) == (0.001, 0.6, 300)
