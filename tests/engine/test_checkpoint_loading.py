"""Torch-side loading: the upstream demo checkpoint, prunebench's own layouts, and refusals."""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch

from prunebench.checkpoints.inspect import CheckpointError
from prunebench.worker.engine.checkpoints import LoadedModel, _torch_load, load_model
from prunebench.worker.engine.yolo.configs import get_config
from prunebench.worker.engine.yolo.model import DetectionModel
from tests.support.hostile import ExecPayload, SystemPayload, write_torch_zip
from tests.support.paths import DEMO_CHECKPOINT


@pytest.fixture(scope="module")
def demo() -> LoadedModel:
    return load_model(DEMO_CHECKPOINT)


def test_demo_checkpoint_loads_strictly(demo: LoadedModel) -> None:
    model = demo.model
    assert isinstance(model, DetectionModel)
    assert demo.format == "yolov5" and demo.arch == "yolov5n"
    assert demo.nc == 80 and len(demo.names) == 80 and demo.names[0] == "person"
    assert demo.stride == [8.0, 16.0, 32.0]
    assert not model.training and not model.is_fused
    assert all(p.dtype == torch.float32 for p in model.state_dict().values() if p.is_floating_point())
    assert demo.yaml["nc"] == 80 and demo.yaml["depth_multiple"] == 0.33
    # Anchors come from the checkpoint, in grid units.
    torch.testing.assert_close(model.model[-1].anchors[0, 0], torch.tensor([10 / 8, 13 / 8]))


def test_demo_weights_equal_upstream_tensors(demo: LoadedModel) -> None:
    # Compare against the fp16 tensors as pickled, read through the same safe path.
    raw = _torch_load(DEMO_CHECKPOINT)["model"]
    conv0 = raw.__dict__["_modules"]["model"].__dict__["_modules"]["0"].__dict__["_modules"]["conv"]
    weight = conv0.__dict__["_parameters"]["weight"]
    assert weight.dtype == torch.float16
    torch.testing.assert_close(demo.model.model[0].conv.weight, weight.float(), atol=0, rtol=0)


def test_demo_fused_param_count_and_outputs() -> None:
    loaded = load_model(DEMO_CHECKPOINT)
    model = loaded.model
    x = torch.rand(1, 3, 320, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(x)[0]
        model.fuse()
        after = model(x)[0]
    assert sum(p.numel() for p in model.parameters()) == 1_867_405
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    # A trained shapes model should be confident somewhere on a real-ish input, never on NaNs.
    assert torch.isfinite(after).all()


@pytest.mark.parametrize(("payload", "refused"), [(SystemPayload, "posix.system"), (ExecPayload, "builtins.exec")])
def test_malicious_checkpoint_refused(tmp_path: Path, payload: type, refused: str) -> None:
    marker = tmp_path / "marker"
    path = write_torch_zip(tmp_path / "evil.pt", pickle.dumps({"model": payload(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match=f"refused global '{refused}'"):
        load_model(path)
    # The torch path on its own (weights_only + stand-ins) refuses it too, naming the global.
    with pytest.raises(CheckpointError, match=f"refused global '{refused}'"):
        _torch_load(path)
    assert not marker.exists()


def test_broken_files_refused(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(DEMO_CHECKPOINT.read_bytes()[:100_000])
    noise = tmp_path / "noise.pt"
    noise.write_bytes(os.urandom(2048))
    text = tmp_path / "model.json"
    text.write_text('{"weights": [1, 2, 3]}')
    legacy = tmp_path / "legacy.pt"
    torch.save({"state_dict": {}}, legacy, _use_new_zipfile_serialization=False)
    for path in (truncated, noise, text, legacy):
        with pytest.raises(CheckpointError):
            load_model(path)


def test_state_dict_format_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = DetectionModel(get_config("yolov5n", nc=3)).eval()
    x = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        expected = source(x)[0]

    by_name = tmp_path / "by_name.pt"
    torch.save({"state_dict": source.state_dict(), "yaml": "yolov5n", "names": ["a", "b", "c"]}, by_name)
    loaded = load_model(by_name)
    assert (loaded.format, loaded.arch, loaded.nc, loaded.names) == ("state_dict", "yolov5n", 3, ["a", "b", "c"])

    by_dict = tmp_path / "by_dict.pt"
    half = {k: v.half() if v.is_floating_point() else v for k, v in source.state_dict().items()}
    torch.save({"state_dict": half, "yaml": source.yaml, "names": {0: "a", 1: "b", 2: "c"}}, by_dict)
    loaded_half = load_model(by_dict)

    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x)[0], expected)
        torch.testing.assert_close(loaded_half.model(x)[0], expected, atol=0.05, rtol=0.01)
    assert loaded_half.names == ["a", "b", "c"]

    nameless = tmp_path / "nameless.pt"
    torch.save({"state_dict": source.state_dict(), "yaml": "yolov5n"}, nameless)
    assert load_model(nameless).nc == 3  # inferred from the detection convs

    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": source.state_dict(), "yaml": "yolov5m", "names": ["a", "b", "c"]}, wrong)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(wrong)


def test_prunebench_artifact_uses_unpack_state_dict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = DetectionModel(get_config("yolov5n", nc=2)).eval()
    fake = types.ModuleType("prunebench.worker.engine.artifacts")
    calls: list[dict[str, object]] = []

    def unpack_state_dict(obj: dict[str, object]) -> dict[str, torch.Tensor]:
        calls.append(obj)
        return obj["tensors"]  # type: ignore[return-value]

    fake.unpack_state_dict = unpack_state_dict  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prunebench.worker.engine.artifacts", fake)
    path = tmp_path / "artifact.pt"
    torch.save(
        {
            "format": "prunebench",
            "yaml": source.yaml,
            "names": ["x", "y"],
            "stride": [8.0, 16.0, 32.0],
            "tensors": source.state_dict(),
        },
        path,
    )
    loaded = load_model(path)
    assert calls and loaded.format == "prunebench" and loaded.names == ["x", "y"]
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)


def test_top_detection_matches_upstream(demo: LoadedModel) -> None:
    """One image through upstream val.py's preprocessing; its best detection must match upstream's."""
    cv2 = pytest.importorskip("cv2")
    image = cv2.imread(str(DEMO_CHECKPOINT.parent / "shapes-val" / "images" / "000000000032.jpg"))
    h0, w0 = image.shape[:2]
    r = 320 / max(h0, w0)  # load_image: longest side to --img, INTER_AREA when shrinking
    im = cv2.resize(image, (math.ceil(w0 * r), math.ceil(h0 * r)), interpolation=cv2.INTER_AREA)
    h, w = im.shape[:2]
    batch_h, batch_w = 256, 352  # val.py's rectangular shape for this image's batch (pad 0.5, stride 32)
    dw, dh = (batch_w - w) / 2, (batch_h - h) / 2
    im = cv2.copyMakeBorder(
        im,
        round(dh - 0.1),
        round(dh + 0.1),
        round(dw - 0.1),
        round(dw + 0.1),
        cv2.BORDER_CONSTANT,
        value=(114, 114, 114),
    )
    x = torch.from_numpy(im[:, :, ::-1].transpose(2, 0, 1).copy()).float()[None] / 255
    model = load_model(DEMO_CHECKPOINT).model.fuse()
    with torch.no_grad():
        pred = model(x)[0][0]
    scores = pred[:, 5:] * pred[:, 4:5]
    best = int(scores.max(1).values.argmax())
    score, cls = scores[best].max(0)
    cx, cy, bw, bh = pred[best, :4].tolist()
    ours = [(cx - bw / 2 - dw) / (h / h0), (cy - bh / 2 - dh) / (h / h0), bw / (h / h0), bh / (h / h0)]

    with gzip.open(Path(__file__).resolve().parents[1] / "fixtures/reference/upstream_predictions_s0.0.json.gz") as fh:
        upstream = max((d for d in json.load(fh) if d["image_id"] == 32), key=lambda d: d["score"])
    assert int(cls) + 1 == upstream["category_id"]  # demo category ids are class index + 1
    assert float(score) == pytest.approx(upstream["score"], abs=1e-4)
    assert ours == pytest.approx(upstream["bbox"], abs=2e-3)  # upstream rounds to 3 decimals


def _yolov3_tiny(nc: int) -> dict[str, object]:
    """yolov3-tiny's layer graph (upstream's yolov3-tiny.yaml, v9.6): plain convs, max-pooling, a ZeroPad2d."""
    pools = [[-1, 1, "nn.MaxPool2d", [2, 2, 0]]]
    backbone: list[list[object]] = []
    for width in (16, 32, 64, 128, 256):
        backbone += [[-1, 1, "Conv", [width, 3, 1]], *pools]
    backbone += [
        [-1, 1, "Conv", [512, 3, 1]],
        [-1, 1, "nn.ZeroPad2d", [[0, 1, 0, 1]]],
        [-1, 1, "nn.MaxPool2d", [2, 1, 0]],
    ]
    head = [
        [-1, 1, "Conv", [1024, 3, 1]],
        [-1, 1, "Conv", [256, 1, 1]],
        [-1, 1, "Conv", [512, 3, 1]],  # 15: P5/32
        [-2, 1, "Conv", [128, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 8], 1, "Concat", [1]],
        [-1, 1, "Conv", [256, 3, 1]],  # 19: P4/16
        [[19, 15], 1, "Detect", ["nc", "anchors"]],
    ]
    anchors = [[10, 14, 23, 27, 37, 58], [81, 82, 135, 169, 344, 319]]
    return {
        "nc": nc,
        "depth_multiple": 1.0,
        "width_multiple": 0.25,
        "anchors": anchors,
        "backbone": backbone,
        "head": head,
    }


def test_yolov3_tiny_layout_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = DetectionModel(_yolov3_tiny(nc=2)).eval()
    assert source.stride.tolist() == [16.0, 32.0]
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": source.state_dict(), "yaml": source.yaml, "names": ["a", "b"]}, path)
    loaded = load_model(path)
    x = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x)[0], source(x)[0])
    assert loaded.stride == [16.0, 32.0]


def test_models_without_three_input_channels_are_refused_at_load(tmp_path: Path) -> None:
    # A 1-channel model (grayscale): refused before any batch, whatever its yaml claims.
    gray = DetectionModel(get_config("yolov5n", nc=3), ch=1).eval()
    path = tmp_path / "gray.pt"
    torch.save({"state_dict": gray.state_dict(), "yaml": "yolov5n", "names": ["a", "b", "c"]}, path)
    with pytest.raises(CheckpointError, match="takes 1 input channels, not 3"):
        load_model(path)
    declared = tmp_path / "declared.pt"
    torch.save({"state_dict": gray.state_dict(), "yaml": gray.yaml, "names": ["a", "b", "c"]}, declared)
    with pytest.raises(CheckpointError, match="1 input channel"):
        load_model(declared)


def test_each_load_gets_its_own_stand_in_classes() -> None:
    # Whatever one file's pickle does to the classes it is loaded into stays with that load.
    first, second = _torch_load(DEMO_CHECKPOINT)["model"], _torch_load(DEMO_CHECKPOINT)["model"]
    assert type(first).__name__ == type(second).__name__ == "DetectionModel"
    assert type(first) is not type(second)
    type(first).qualname = "tampered"
    assert load_model(DEMO_CHECKPOINT).format == "yolov5"
