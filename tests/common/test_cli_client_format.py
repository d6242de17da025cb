"""format_result_table and the client commands' argument handling (no server needed)."""

from __future__ import annotations

import argparse

import pytest

from prunebench.cli.arguments import channel_fields, parse_sparsities, runtime_fields
from prunebench.cli.client_commands import add_client_commands
from prunebench.cli.evaluate import add_eval_command
from prunebench.cli.render import format_jobs_table, format_result_table
from prunebench.client.http import ClientError
from prunebench.contract import JobResult


def _run(target: float, map_: float, map50: float, total_ms: float, size: int, dense_map: float = 0.5) -> dict:
    return {
        "sparsity_target": target,
        "sparsity": target * 0.98,
        "global_sparsity": target * 0.9,
        "params": 1_872_157,
        "nonzero_params": round(1_872_157 * (1 - target)),
        "gflops": 4.5,
        "size_bytes": size,
        "metrics": {
            **dict.fromkeys(
                ("map75", "map_small", "map_medium", "map_large", "ar1", "ar10", "ar100", "ar_small", "ar_medium"),
                0.1,
            ),
            "ar_large": 0.1,
            "precision": 0.8,
            "recall": 0.7,
            "map": map_,
            "map50": map50,
        },
        "speed_ms_per_image": {"preprocess": 0.2, "inference": total_ms - 0.5, "nms": 0.3, "total": total_ms},
        "images_per_second": 1000 / total_ms,
        "images": 64,
        "instances": 150,
        "seconds": 2.0,
        "deltas": None
        if target == 0
        else {
            "map": map_ - dense_map,
            "map50": map50 - 0.8,
            "speed_ratio": 1.0,
            "size_ratio": 0.9,
            "params_ratio": 1.0,
            "gflops_ratio": 1.0,
        },
    }


RESULT = JobResult.model_validate(
    {
        "job_id": "job123",
        "checkpoint": {
            "id": "a" * 64,
            "name": "yolov5n_shapes.pt",
            "size_bytes": 3_900_000,
            "format": "prunebench",
            "num_classes": 3,
            "class_names": ["circle", "square", "triangle"],
            "source": "builtin",
        },
        "dataset": {"name": "shapes-val", "images": 64, "annotations": 150, "categories": []},
        "settings": {"method": "l1_unstructured"},
        "environment": {
            "device": "cuda:0",
            "device_name": "NVIDIA H100",
            "torch": "2.14.1",
            "cuda": "12.8",
            "worker": "w1",
            "prunebench": "0.1.0",
        },
        "runs": [
            _run(0.0, 0.5, 0.8, 2.5, 3_900_000),
            _run(0.3, 0.4812, 0.79, 2.4, 3_600_000),
            _run(0.5, 0.3001, 0.6, 2.4, 3_400_000),
        ],
    }
).model_dump(mode="json")


def test_table_has_one_row_per_run_with_deltas() -> None:
    text = format_result_table(RESULT)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("sparsity"))
    assert lines[header].split() == [
        "sparsity",
        "achieved",
        "mAP",
        "mAP50",
        "Δ",
        "mAP",
        "ms/img",
        "img/s",
        "params",
        "size",
    ]
    rows = [line.split() for line in lines[header + 2 :]]
    assert [r[0] for r in rows] == ["0.00", "0.30", "0.50"]
    assert rows[1][2] == "0.4812" and rows[1][4] == "-0.0188"
    assert rows[2][4] == "-0.1999"
    assert rows[0][4] == "+0.0000"  # dense against itself
    assert rows[0][5] == "2.50"
    assert "MB" in lines[header + 2]
    assert "job job123" in text and "NVIDIA H100" in text and "CUDA 12.8" in text


def test_columns_are_aligned() -> None:
    lines = format_result_table(RESULT).splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("sparsity"))
    table = lines[header:]
    rule = table[1]
    assert set(rule) <= {"-", " "}
    assert all(len(line) <= len(rule) for line in table)


def test_missing_fields_render_as_dashes() -> None:
    text = format_result_table({"runs": [{"sparsity_target": 0.2, "metrics": {"map": 0.1}}]})
    row = text.splitlines()[-1].split()
    assert row[0] == "0.20" and row[2] == "0.1000" and "-" in row


def test_jobs_table_lists_sparsities() -> None:
    jobs = [
        {
            "id": "abc",
            "status": "running",
            "progress": {"percent": 42.4},
            "request": {"checkpoint": "c.pt", "dataset": "d", "method": "channel", "sparsities": [0.0, 0.25]},
            "created_at": "2026-01-01T10:00:00Z",
        }
    ]
    text = format_jobs_table(jobs)
    assert "0,0.25" in text and "42%" in text and "running" in text


@pytest.mark.parametrize(
    ("text", "values"), [("0,0.3,0.5", [0.0, 0.3, 0.5]), ("0.2", [0.2]), (" 0.1, 0.2 ", [0.1, 0.2])]
)
def test_parse_sparsities(text: str, values: list[float]) -> None:
    assert parse_sparsities(text) == values


@pytest.mark.parametrize("text", ["", "1", "1.5", "-0.1", "a,b", "nan"])
def test_parse_sparsities_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_sparsities(text)


def test_commands_register_with_json_flags() -> None:
    parser = argparse.ArgumentParser(prog="prunebench")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["submit", "--checkpoint", "c", "--dataset", "d", "--sparsities", "0,0.5", "--wait", "--json"]
    )
    assert args.sparsities == [0.0, 0.5] and args.wait and args.json and callable(args.func)
    for command in (
        ["status", "x"],
        ["result", "x"],
        ["cancel", "x"],
        ["upload", "f.pt"],
        ["jobs", "--status", "failed"],
    ):
        assert parser.parse_args([*command, "--json"]).json


def test_client_error_message_uses_problem_detail() -> None:
    error = ClientError(404, "Not Found", "no job 'x'", {"type": "about:blank"})
    assert str(error) == "404 Not Found: no job 'x'"
    assert ClientError(0, "cannot reach the prunebench API", "http://h: refused").message.startswith("cannot reach")


CHANNEL_FLAGS = ["--importance", "bn_scale", "--allocation", "global", "--max-layer-sparsity", "0.8"]
CHANNEL_FLAGS += ["--round-to", "16", "--recovery", "bn_recalibration,bias_compensation"]
CHANNEL_FLAGS += ["--calibration-dataset", "shapes-train", "--calibration-images", "64"]
CHANNEL_VALUES = {"importance": "bn_scale", "allocation": "global", "max_layer_sparsity": 0.8, "round_to": 16}
CHANNEL_VALUES |= {"recovery": ["bn_recalibration", "bias_compensation"]}
CHANNEL_VALUES |= {"calibration": {"dataset": "shapes-train", "images": 64}}


def test_submit_and_eval_take_the_same_channel_options() -> None:
    parser = argparse.ArgumentParser(prog="prunebench")
    sub = parser.add_subparsers(dest="command", required=True)
    add_client_commands(sub)
    add_eval_command(sub)
    submit = parser.parse_args(["submit", "--checkpoint", "c", "--dataset", "d", "--sparsities", "0.3", *CHANNEL_FLAGS])
    evaluate = parser.parse_args(["eval", "--checkpoint", "c.pt", "--method", "channel", *CHANNEL_FLAGS])
    assert channel_fields(submit) == channel_fields(evaluate) == CHANNEL_VALUES
    plain = parser.parse_args(["submit", "--checkpoint", "c", "--dataset", "d", "--sparsities", "0.3"])
    assert channel_fields(plain) == {}  # unset options are left to the API's defaults


def test_submit_and_eval_take_the_same_runtime_options() -> None:
    parser = argparse.ArgumentParser(prog="prunebench")
    sub = parser.add_subparsers(dest="command", required=True)
    add_client_commands(sub)
    add_eval_command(sub)
    flags = ["--export", "--runtimes", "torch,onnxruntime_cpu", "--latency-batches", "1,8", "--latency-iters", "3"]
    submit = parser.parse_args(["submit", "--checkpoint", "c", "--dataset", "d", "--sparsities", "0.5", *flags])
    evaluate = parser.parse_args(["eval", "--checkpoint", "c.pt", *flags])
    expected = {
        "export": {},
        "latency": {"runtimes": ["torch", "onnxruntime_cpu"], "batch_sizes": [1, 8], "iterations": 3},
    }
    assert runtime_fields(submit) == runtime_fields(evaluate) == expected
    plain = parser.parse_args(["submit", "--checkpoint", "c", "--dataset", "d", "--sparsities", "0.3", "--latency"])
    assert runtime_fields(plain) == {"latency": {}}, "--latency alone: the API's defaults"
    with pytest.raises(SystemExit):
        parser.parse_args(["submit", "--checkpoint", "c", "--dataset", "d", "--sparsities", "0.3", "--runtimes", "tvm"])


def test_latency_block_lists_measured_rows_and_says_why_others_are_missing() -> None:
    dense = _run(0.0, 0.5, 0.7, 10.0, 1000)
    row = {"runtime": "onnxruntime_cpu", "status": "measured", "batch": 1, "median_ms": 8.0, "p90_ms": 9.0}
    skipped = {"runtime": "tensorrt", "status": "skipped", "batch": 1, "reason": "no CUDA device on this worker"}
    dense["latency"] = [{**row, "ms_per_image": 8.0}, skipped]
    dense["deltas"] = {"latency_speedup": {"onnxruntime_cpu@1": 1.0}}
    text = format_result_table({"runs": [dense]})
    assert "latency (network forward only)" in text and "onnxruntime_cpu" in text and "1.00x" in text
    assert "tensorrt: skipped: no CUDA device on this worker" in text
    assert "latency" not in format_result_table({"runs": [_run(0.0, 0.5, 0.7, 10.0, 1000)]})


FINETUNE_FLAGS = ["--finetune", "shapes-train-mini", "--epochs", "3", "--train-img-size", "320", "--cos-lr"]
FINETUNE_FLAGS += ["--no-mosaic", "--finetune-dense", "--lr0", "0.005"]


def test_submit_and_eval_take_the_same_finetune_options() -> None:
    from prunebench.cli.arguments import finetune_fields
    from prunebench.contract import JobRequest

    parser = argparse.ArgumentParser(prog="prunebench")
    sub = parser.add_subparsers(dest="command", required=True)
    add_client_commands(sub)
    add_eval_command(sub)
    submit = parser.parse_args(
        ["submit", "--checkpoint", "c", "--dataset", "d", "--sparsities", "0.3", *FINETUNE_FLAGS]
    )
    evaluate = parser.parse_args(["eval", "--checkpoint", "c.pt", *FINETUNE_FLAGS])
    expected = {
        "finetune": {
            "dataset": "shapes-train-mini",
            "epochs": 3,
            "img_size": 320,
            "cos_lr": True,
            "mosaic": False,
            "dense": True,
            "lr0": 0.005,
        }
    }
    assert finetune_fields(submit) == finetune_fields(evaluate) == expected
    request = JobRequest(checkpoint="c", dataset="d", sparsity=0.3, **expected)
    assert request.finetune is not None and request.finetune.ema and request.finetune.batch_size == 16
    plain = parser.parse_args(["submit", "--checkpoint", "c", "--dataset", "d", "--sparsities", "0.3"])
    assert finetune_fields(plain) == {}
    orphan = parser.parse_args(["eval", "--checkpoint", "c.pt", "--epochs", "3"])
    with pytest.raises(ValueError, match="--finetune"):
        finetune_fields(orphan)


def test_progress_text_shows_finetuning_epochs_and_losses() -> None:
    from prunebench.cli.render import progress_text

    line = progress_text(
        {"percent": 40, "stage": "finetuning", "runs_total": 2, "run_index": 1, "epoch": 2, "epochs": 5,
         "iteration": 7, "iterations": 15, "loss": {"box": 0.05, "obj": 0.02, "cls": 0.01}}
    )  # fmt: skip
    assert "finetuning run 2/2" in line and "epoch 2/5 batch 7/15 box 0.0500 obj 0.0200 cls 0.0100" in line


def test_recovered_points_get_a_before_and_after_table() -> None:
    recovered = _run(0.3, 0.25, 0.45, 9.0, 3_000_000)
    recovered["recovery"] = {
        "applied": ["bn_recalibration", "finetune"],
        "map_before": 0.0123,
        "map50_before": 0.03,
        "map_after": 0.25,
        "map50_after": 0.45,
        "epochs": 10,
        "seconds": 512.3,
    }
    text = format_result_table({**RESULT, "runs": [*RESULT["runs"], recovered]})
    row = text.splitlines()[-1].split()
    assert row == ["0.30", "bn_recalibration", "+", "finetune", "0.0123", "0.2500", "0.0300", "0.4500", "10", "512.3"]
    assert "recovery" not in format_result_table(RESULT)


def test_result_warnings_follow_the_table() -> None:
    text = format_result_table({"runs": [], "warnings": ["annotation ids repeat: renumbered 1..74 in file order"]})
    assert text.splitlines()[-1] == "warning: annotation ids repeat: renumbered 1..74 in file order"
