"""Export a run's model to ONNX and prove the export right: ONNX Runtime must reproduce PyTorch.

The exported graph is what a deployment runs, and what the evaluation uses:

* input ``images``: float32 ``[B, 3, H, W]``, RGB in [0, 1], letterboxed, with ``H = W = img_size``;
* output ``output0``: float32 ``[B, N, 5 + nc]``, the decoded predictions before NMS (pixel ``xywh``,
  objectness, class probabilities), exactly the tensor ``evaluate`` feeds to NMS;
* ``B`` is dynamic (a named dimension ``batch``); opset 18 by default (17 or newer).

Export uses PyTorch's ``torch.export``-based exporter (``torch.onnx.export(dynamo=True)``, the default
since PyTorch 2.9; the TorchScript exporter is deprecated). Optionally the graph is simplified with
onnxslim; the simplified graph replaces the exported one only when it passes the same check.

**The check.** Both graphs run on the same real images (from the job's dataset, letterboxed to
``img_size``); every output value must satisfy ``|ort - torch| <= tol * max(1, |torch|)`` with
``tol = 1e-4`` in float32. The bound is absolute for probabilities (in [0, 1]) and relative for pixel
coordinates (up to about 4 x img_size), because float32 itself resolves a 640-pixel coordinate only to
6e-5: an absolute 1e-4 there would demand agreement to one or two ulps, which reordered convolution sums
never give. Measured on the demo model at 640: max |diff| 1.2e-4 px, max scaled diff 1.9e-6.
A failed check raises ``ExportError`` naming the largest difference: image, prediction, column, values.
"""

from __future__ import annotations

import contextlib
import copy
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from prunebench.contract import ONNX_TOLERANCE, OnnxExport
from prunebench.worker.engine.data import DecodedDataset, letterbox, to_chw_rgb

if TYPE_CHECKING:  # onnx and onnxruntime load on first use: a job without export or latency never pays ~1 s
    import onnxruntime as ort

INPUT_NAME = "images"
OUTPUT_NAME = "output0"
DEFAULT_OPSET = 18
MAX_BATCH = 4096  # upper bound of the dynamic batch dimension the exporter is told about
_EXAMPLE_BATCH = 2  # torch.export specialises a dimension traced at size 1; trace at 2 to keep it dynamic


class ExportError(ValueError):
    """The model could not be exported, or the export does not reproduce PyTorch; the message says how."""


class Predictions(nn.Module):
    """``images [B,3,H,W] float32 -> [B, N, 5+nc] float32``: a detector's inference output, as exported.

    With ``half``, the model runs in float16 inside the graph (weights stored as float16) while the
    graph's input and output stay float32: the strongly typed fp16 graph TensorRT 11 builds from.
    """

    def __init__(self, model: nn.Module, half: bool = False) -> None:
        super().__init__()
        self.model = model
        self.fp16 = half

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.half() if self.fp16 else images
        pred: torch.Tensor = self.model(x)[0]  # eval-mode detectors return (pred, feature maps)
        return pred.float() if self.fp16 else pred


@dataclass
class Exported:
    path: Path
    opset: int
    precision: str  # fp32 | fp16
    seconds: float


@dataclass
class Check:
    images: int
    max_abs_diff: float
    max_scaled_diff: float


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime as ort
    import onnxslim

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "onnxslim": onnxslim.__version__,
    }


def check_images(decoded: DecodedDataset, count: int, img_size: int) -> torch.Tensor:
    """The first ``count`` images of the dataset (evaluation order), letterboxed to a square ``img_size``
    input as the network takes it: float32 ``[count, 3, img_size, img_size]``, RGB in [0, 1]."""
    chosen = decoded.images[: max(1, count)]
    if not chosen:
        raise ExportError("no images to check the export on")
    arrays = [to_chw_rgb(letterbox(im.pixels, (img_size, img_size)).pixels) for im in chosen]
    return torch.from_numpy(np.stack(arrays)).float() / 255.0


def export_onnx(
    model: nn.Module, path: Path, img_size: int, *, opset: int = DEFAULT_OPSET, half: bool = False
) -> Exported:
    """Write ``model`` (a detector; not modified) to ``path`` as one self-contained ONNX file."""
    import onnx

    started = time.perf_counter()
    net = copy.deepcopy(model).cpu().float().eval()
    if half:
        net = net.half()
    wrapper = Predictions(net, half=half).eval()
    channels = _input_channels(net)
    example = torch.rand(_EXAMPLE_BATCH, channels, img_size, img_size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = io.StringIO()
    try:
        # The exporter narrates each step on stdout; keep the worker's log to what matters.
        with contextlib.redirect_stdout(log), torch.no_grad():
            torch.onnx.export(
                wrapper,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=True,
                external_data=False,
                dynamic_shapes={"images": {0: batch}},
                verbose=False,
            )
        onnx.checker.check_model(str(path))
    except Exception as exc:  # the exporter raises many types; the job needs one readable reason
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    return Exported(path=path, opset=opset, precision="fp16" if half else "fp32", seconds=time.perf_counter() - started)


def _input_channels(model: nn.Module) -> int:
    cfg = getattr(model, "yaml", None)
    return int(cfg.get("ch", 3)) if isinstance(cfg, dict) else 3


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else ""


def cpu_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with all graph optimisations, sequential execution."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: constant-folding notices are not news
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare(path: Path, model: nn.Module, images: torch.Tensor, tolerance: float = ONNX_TOLERANCE) -> Check:
    """Run ``images`` through PyTorch (float32, CPU) and ONNX Runtime (CPU); ExportError past ``tolerance``."""
    net = Predictions(copy.deepcopy(model).cpu().float().eval())
    with torch.no_grad():
        expected = net(images).numpy()
    got = cpu_session(path).run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
    if got.shape != expected.shape:
        raise ExportError(f"ONNX output shape {list(got.shape)} differs from PyTorch's {list(expected.shape)}")
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    scaled = diff / np.maximum(1.0, np.abs(expected.astype(np.float64)))
    if not np.isfinite(got).all():
        raise ExportError("ONNX Runtime's output has NaN or inf values where PyTorch's has none")
    worst = np.unravel_index(int(scaled.argmax()), scaled.shape)
    check = Check(images=int(images.shape[0]), max_abs_diff=float(diff.max()), max_scaled_diff=float(scaled.max()))
    if check.max_scaled_diff > tolerance:
        raise ExportError(
            f"ONNX Runtime differs from PyTorch by {check.max_scaled_diff:.3g} (|diff| / max(1, |torch|); "
            f"tolerance {tolerance:g}) at image {worst[0]}, prediction {worst[1]}, column {_column(int(worst[2]))}: "
            f"torch {expected[worst]:.6g}, onnxruntime {got[worst]:.6g}"
        )
    return check


def _column(index: int) -> str:
    names = ("x", "y", "w", "h", "objectness")
    return names[index] if index < len(names) else f"class {index - len(names)}"


def simplify(source: Path, target: Path) -> Path:
    """onnxslim's simplification of ``source`` written to ``target`` (constant folding, dead nodes, fusions)."""
    import onnx
    import onnxslim

    slimmed = onnxslim.slim(onnx.load(str(source)))
    onnx.save(slimmed, str(target))
    onnx.checker.check_model(str(target))
    return target


def export_checked(
    model: nn.Module,
    path: Path,
    images: torch.Tensor,
    *,
    opset: int = DEFAULT_OPSET,
    simplify_graph: bool = True,
    tolerance: float = ONNX_TOLERANCE,
) -> OnnxExport:
    """Export ``model`` to ``path`` (float32), check it on ``images``, optionally keep onnxslim's graph.

    Raises ExportError when the export fails or its output differs from PyTorch's beyond ``tolerance``.
    A simplification that fails or changes the output is not kept; ``simplify_note`` says why.
    """
    started = time.perf_counter()
    img_size = int(images.shape[-1])
    exported = export_onnx(model, path, img_size, opset=opset)
    check = compare(path, model, images, tolerance)
    simplified, note = False, None
    if simplify_graph:
        candidate = path.with_name(path.stem + ".slim.onnx")
        try:
            simplify(path, candidate)
            check = compare(candidate, model, images, tolerance)
            candidate.replace(path)
            simplified = True
        except Exception as exc:  # onnxslim is an optimisation: any failure keeps the checked export
            note = f"onnxslim result not kept: {type(exc).__name__}: {_first_line(exc)}"
        finally:
            candidate.unlink(missing_ok=True)
    return OnnxExport(
        size_bytes=path.stat().st_size,
        opset=exported.opset,
        simplified=simplified,
        simplify_note=note,
        check_images=check.images,
        max_abs_diff=check.max_abs_diff,
        max_scaled_diff=check.max_scaled_diff,
        tolerance=tolerance,
        seconds=time.perf_counter() - started,
        versions=versions(),
    )
