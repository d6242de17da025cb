"""Deployment figures through the service: a 2:4 job exports a checked ONNX artifact and a latency block.

Real redis-server, API and worker processes; 64 px, 4 images, 1-2 timed iterations keep it quick.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.support.paths import SMALL_JOB
from tests.support.stack import Service

pytestmark = pytest.mark.slow

LATENCY = {"runtimes": ["torch", "onnxruntime_cpu", "tensorrt"], "batch_sizes": [1, 2], "warmup": 0, "iterations": 2}


def test_a_2_4_run_exports_onnx_with_the_pattern_and_reports_latency(service: Service) -> None:
    body = {
        **SMALL_JOB,
        "img_size": 64,
        "max_images": 4,
        "sparsity": 0.5,
        "method": "semi_structured_2_4",
        "include_dense": False,
        "export": {"check_images": 2},
        "latency": LATENCY,
    }
    job = service.submit(**body)
    done = service.wait(job["id"])
    assert done["status"] == "succeeded", done
    (run,) = service.http.get(f"/v1/jobs/{job['id']}/result").json()["runs"]
    assert 0.49 < run["sparsity"] < 0.5 and run["metrics"]["map"] >= 0.0  # evaluated: accuracy is reported

    onnx_block = run["onnx"]
    assert onnx_block["max_scaled_diff"] <= 1e-4 and onnx_block["check_images"] == 2
    download = service.http.get(onnx_block["artifact"])
    assert download.status_code == 200 and len(download.content) == onnx_block["size_bytes"]
    model = onnx.load_from_string(download.content)
    convs = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    weights = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name in convs]
    patterned = [w for w in weights if w.shape[1] % 4 == 0]
    assert len(patterned) == len(weights) - 1, "every conv but the 3-channel stem carries 2:4"
    for w in patterned:
        groups = np.transpose(w, (0, 2, 3, 1)).reshape(-1, 4)
        assert ((groups == 0).sum(axis=1) >= 2).all(), "the deployed weights keep the 2:4 pattern"
    session = ort.InferenceSession(download.content, providers=["CPUExecutionProvider"])
    out = session.run(["output0"], {"images": np.zeros((2, 3, 64, 64), np.float32)})[0]
    assert out.shape[0] == 2 and out.shape[2] == 5 + 80  # [B, N, 5 + nc] (80 classes), dynamic batch

    rows = {(r["runtime"], r["batch"]): r for r in run["latency"]}
    assert set(rows) == {(rt, b) for rt in LATENCY["runtimes"] for b in (1, 2)}
    for (runtime, _), r in rows.items():
        if runtime in ("torch", "onnxruntime_cpu"):
            assert r["status"] == "measured" and r["median_ms"] > 0 and "dense kernels" in r["note"]
    if not torch.cuda.is_available():
        assert all(rows[("tensorrt", b)]["status"] == "skipped" for b in (1, 2))
        assert "no CUDA device" in rows[("tensorrt", 1)]["reason"]
    assert service.http.get(f"/v1/jobs/{job['id']}/runs/7/onnx").status_code == 404
