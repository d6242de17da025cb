"""Torch-free checkpoint inspection: the demo checkpoint, other layouts, and hostile or broken files."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from prunebench.checkpoints.architectures import official_config
from prunebench.checkpoints.inspect import CheckpointError, class_names, inspect_checkpoint
from tests.support.hostile import ExecPayload, SystemPayload, write_torch_zip
from tests.support.paths import DEMO_CHECKPOINT


def test_demo_checkpoint_meta() -> None:
    meta = inspect_checkpoint(DEMO_CHECKPOINT)
    assert meta.format == "yolov5"
    assert meta.num_classes == 80
    assert meta.class_names[:5] == ["person", "bicycle", "car", "motorcycle", "airplane"]
    assert len(meta.class_names) == 80
    assert meta.arch == "yolov5n"
    assert meta.stride == [8.0, 16.0, 32.0]
    assert meta.yaml is not None and meta.yaml["width_multiple"] == 0.25
    assert "HalfStorage" in meta.storage_types


def test_module_is_torch_free() -> None:
    code = (
        "import sys, pathlib; from prunebench.checkpoints.inspect import inspect_checkpoint; "
        f"inspect_checkpoint(pathlib.Path({str(DEMO_CHECKPOINT)!r})); "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=DEMO_CHECKPOINT.parents[3])


@pytest.mark.parametrize(("payload", "refused"), [(SystemPayload, "posix.system"), (ExecPayload, "builtins.exec")])
def test_malicious_pickle_refused(tmp_path: Path, payload: type, refused: str) -> None:
    marker = tmp_path / "marker"
    data = pickle.dumps({"epoch": -1, "model": payload(marker)}, protocol=2)
    path = write_torch_zip(tmp_path / "evil.pt", data)
    with pytest.raises(CheckpointError, match=f"refused global '{refused}'"):
        inspect_checkpoint(path)
    assert not marker.exists()


def test_foreign_model_named(tmp_path: Path) -> None:
    data = b"\x80\x02}q\x00X\x05\x00\x00\x00modelq\x01cultralytics.nn.tasks\nDetectionModel\nq\x02)\x81q\x03s."
    path = write_torch_zip(tmp_path / "v8.pt", data)
    with pytest.raises(CheckpointError, match="Ultralytics"):
        inspect_checkpoint(path)


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "truncated.pt"
    path.write_bytes(DEMO_CHECKPOINT.read_bytes()[: DEMO_CHECKPOINT.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        inspect_checkpoint(path)


def test_corrupted_pickle_crc(tmp_path: Path) -> None:
    raw = bytearray(DEMO_CHECKPOINT.read_bytes())
    with zipfile.ZipFile(DEMO_CHECKPOINT) as zf:
        info = zf.getinfo("best/data.pkl")
    # Local header is 30 bytes + name + extra; flip a byte in the middle of the stored pickle.
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + 1000] ^= 0xFF
    path = tmp_path / "crc.pt"
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        inspect_checkpoint(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (os.urandom(4096), "not a torch checkpoint"),
        (json.dumps({"model": "yolov5s"}).encode(), "JSON"),
        (b"", "empty"),
        (pickle.dumps({"model": 1}, protocol=2), "legacy"),
    ],
)
def test_not_a_checkpoint(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "file.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        inspect_checkpoint(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read"):
        inspect_checkpoint(tmp_path / "nope.pt")


def test_zip_without_data_pkl(tmp_path: Path) -> None:
    path = tmp_path / "plain.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match=r"data\.pkl"):
        inspect_checkpoint(path)


def test_zip_bomb_refused(tmp_path: Path) -> None:
    path = write_torch_zip(tmp_path / "bomb.pt", b"\x00" * (4 * 1024 * 1024), compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="compression ratio"):
        inspect_checkpoint(path)


def test_oversized_pickle_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("prunebench.checkpoints.inspect.MAX_PICKLE_BYTES", 1024)
    with pytest.raises(CheckpointError, match="too large"):
        inspect_checkpoint(DEMO_CHECKPOINT)


def test_garbage_pickle(tmp_path: Path) -> None:
    path = write_torch_zip(tmp_path / "garbage.pt", b"\x80\x02}q\x00(X\x03")
    with pytest.raises(CheckpointError, match="corrupt checkpoint pickle"):
        inspect_checkpoint(path)


def test_state_dict_and_prunebench_layouts(tmp_path: Path) -> None:
    plain = pickle.dumps({"state_dict": {}, "yaml": "yolov5s", "names": {0: "cat", 1: "dog"}}, protocol=2)
    meta = inspect_checkpoint(write_torch_zip(tmp_path / "sd.pt", plain))
    assert (meta.format, meta.arch, meta.num_classes, meta.class_names) == ("state_dict", "yolov5s", 2, ["cat", "dog"])
    assert meta.stride == [8.0, 16.0, 32.0]

    yaml_cfg = official_config("yolov5x", nc=3)
    artifact = pickle.dumps(
        {"format": "prunebench", "yaml": yaml_cfg, "names": ["a", "b"], "stride": [8.0, 16.0, 32.0]},
        protocol=2,
    )
    meta = inspect_checkpoint(write_torch_zip(tmp_path / "pb.pt", artifact))
    assert (meta.format, meta.arch, meta.num_classes) == ("prunebench", "yolov5x", 3)
    assert meta.class_names == ["a", "b", "2"]

    # Protocol 2 spells bytes as _codecs.encode(...): allowed, but only in its harmless latin-1 form.
    blob = pickle.dumps({"state_dict": {}, "yaml": "yolov5n", "packed": b"\x00\xffzz"}, protocol=2)
    assert b"_codecs" in blob
    assert inspect_checkpoint(write_torch_zip(tmp_path / "bytes.pt", blob)).arch == "yolov5n"
    sneaky = blob.replace(b"latin1", b"base64")
    with pytest.raises(CheckpointError, match=r"_codecs\.encode"):
        inspect_checkpoint(write_torch_zip(tmp_path / "sneaky.pt", sneaky))

    unknown = pickle.dumps({"weights": 1}, protocol=2)
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout"):
        inspect_checkpoint(write_torch_zip(tmp_path / "unknown.pt", unknown))
    no_yaml = pickle.dumps({"state_dict": {}}, protocol=2)
    with pytest.raises(CheckpointError, match="yaml"):
        inspect_checkpoint(write_torch_zip(tmp_path / "noyaml.pt", no_yaml))


def test_class_names_forms() -> None:
    assert class_names(["a", "b"], 3) == ["a", "b", "2"]
    assert class_names({1: "b", 0: "a"}, None) == ["a", "b"]
    assert class_names({"0": "a", "2": "c"}, None) == ["a", "1", "c"]
    assert class_names(None, 2) == ["0", "1"]
    with pytest.raises(CheckpointError):
        class_names(["a", "b", "c"], 2)
    with pytest.raises(CheckpointError):
        class_names("abc", 3)
