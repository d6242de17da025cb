"""Hostile uploads: a few hundred bytes must never make the inspector allocate much, crash or leak state.

Each kind of attack is a refusal (CheckpointError, a 422 at the API) with a bounded peak allocation,
measured with tracemalloc (it sees the C unpickler's memo table and every Python object).
"""

from __future__ import annotations

import contextlib
import pickle
import random
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from prunebench.checkpoints.architectures import official_config
from prunebench.checkpoints.inspect import CheckpointError, inspect_checkpoint
from prunebench.checkpoints.limits import MAX_NUM_CLASSES
from tests.support import hostile
from tests.support.hostile import write_archive

HUGE = 300_000_000
"""What each payload asks for: 300 M (bytes, memo slots, names, stride elements)."""
PEAK_LIMIT = 8 * 1024 * 1024
"""Most the inspector may allocate for any of these few-hundred-byte files."""


def _inspect_peak(path: Path) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    try:
        inspect_checkpoint(path)
        error: BaseException | None = None
    except Exception as exc:  # the test asserts on the type
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


AMPLIFIERS = {
    "bytearray(N)": hostile.bytearray_of_size(HUGE),
    "memo index N/16": hostile.memo_index(HUGE // 16),
    "memo index 2**32-1": hostile.memo_index(2**32 - 1),
    "names {N/100: x}": hostile.names_dict_index(HUGE // 100),
    "yaml nc N/100": hostile.names_padded_to(HUGE // 100),
    "stride of N/100 elements, step 0": hostile.stride_tensor(HUGE // 100, step=0),
    "stride of N/100 elements, step 1": hostile.stride_tensor(HUGE // 100, step=1),
    "10**9 shared references": hostile.shared_reference_fanout(levels=9, fanout=10),
}


@pytest.mark.parametrize("label", list(AMPLIFIERS))
def test_tiny_files_asking_for_huge_allocations_are_refused_cheaply(tmp_path: Path, label: str) -> None:
    data = AMPLIFIERS[label]
    assert len(data) < 1000
    path = write_archive(tmp_path / "p.pt", data, {"0": b"\x00\x00\x80\x3f"})
    error, peak = _inspect_peak(path)
    assert isinstance(error, CheckpointError), error
    assert peak < PEAK_LIMIT, f"{label}: peak {peak} bytes"


@pytest.mark.parametrize(
    ("yaml", "match"),
    [
        ({"nc": 200_000}, "number of classes"),
        ({"nc": 0}, "number of classes"),
        ({"width_multiple": 40.0}, "width_multiple"),
        ({"depth_multiple": 1e9}, "depth_multiple"),
        ({"ch": 1}, "input channel"),
    ],
)
def test_absurd_configs_are_refused(tmp_path: Path, yaml: dict[str, float], match: str) -> None:
    cfg = official_config("yolov5n", nc=3) | yaml
    blob = pickle.dumps({"state_dict": {}, "yaml": cfg}, protocol=2)
    with pytest.raises(CheckpointError, match=match):
        inspect_checkpoint(write_archive(tmp_path / "cfg.pt", blob))


def test_widths_repeats_and_unknown_blocks_are_refused(tmp_path: Path) -> None:
    wide = official_config("yolov5n", nc=3)
    wide["backbone"][0][3][0] = 100_000
    deep = official_config("yolov5n", nc=3)
    deep["backbone"][2][1] = 10_000
    ghost = official_config("yolov5n", nc=3)
    ghost["backbone"][1][2] = "GhostConv"
    for cfg, match in ((wide, "channels"), (deep, "repeats"), (ghost, "unsupported block 'GhostConv'")):
        blob = pickle.dumps({"state_dict": {}, "yaml": cfg}, protocol=2)
        with pytest.raises(CheckpointError, match=match):
            inspect_checkpoint(write_archive(tmp_path / "cfg.pt", blob))


def test_names_beyond_the_class_limit_are_refused(tmp_path: Path) -> None:
    blob = pickle.dumps({"state_dict": {}, "yaml": "yolov5n", "names": ["x"] * (MAX_NUM_CLASSES + 1)}, protocol=2)
    with pytest.raises(CheckpointError, match=f"from 1 to {MAX_NUM_CLASSES}"):
        inspect_checkpoint(write_archive(tmp_path / "names.pt", blob))


@pytest.mark.parametrize("stride", [[0.0, 16.0, 32.0], [8.0] * 9, [1e12, 16.0, 32.0]])
def test_absurd_strides_are_refused(tmp_path: Path, stride: list[float]) -> None:
    blob = pickle.dumps({"state_dict": {}, "yaml": "yolov5n", "stride": stride}, protocol=2)
    with pytest.raises(CheckpointError, match="stride"):
        inspect_checkpoint(write_archive(tmp_path / "stride.pt", blob))


@pytest.mark.parametrize(
    "data",
    [
        hostile.deep_list(100_000),
        hostile.deep_via_memo(20_000),
        hostile.modules_not_a_dict(),
        b"\x80\x02]" + b"(" * 50_000 + b"t" * 50_000 + b".",
    ],
    ids=["deep list", "deep via memo", "_modules a list", "deep tuples"],
)
def test_malformed_graphs_are_checkpoint_errors_not_crashes(tmp_path: Path, data: bytes) -> None:
    error, _ = _inspect_peak(write_archive(tmp_path / "bad.pt", data))
    assert isinstance(error, CheckpointError), repr(error)


def _float_tensor(numel: int = 1, size: int | None = None, step: int = 1) -> bytes:
    """Opcodes of a float32 tensor in storage "0" of `numel` elements (torch's protocol-2 spelling).

    The tensor is a 1-D view of `size` elements (default `numel`) `step` elements apart.
    """
    return (
        hostile.op_global("torch._utils", "_rebuild_tensor_v2")
        + b"(("
        + hostile.op_str("storage")
        + hostile.op_global("torch", "FloatStorage")
        + hostile.op_str("0")
        + hostile.op_str("cpu")
        + hostile.op_int(numel)
        + b"tQ"
        + hostile.op_int(0)
        + b"("
        + hostile.op_int(numel if size is None else size)
        + b"t("
        + hostile.op_int(step)
        + b"t\x89"
        + hostile.op_global("collections", "OrderedDict")
        + b")RtR"
    )


def _state_dict_pickle(numel: int = 1, tensor: bytes | None = None) -> bytes:
    """``{"state_dict": {"w": <tensor, default a float tensor of numel>}, "yaml": "yolov5n"}``."""
    sd = b"}(" + hostile.op_str("w") + (tensor or _float_tensor(numel)) + b"u"
    return hostile.checkpoint_dict(yaml=hostile.op_str("yolov5n")).replace(
        hostile.op_str("state_dict") + b"}", hostile.op_str("state_dict") + sd, 1
    )


def _float_storage_checkpoint(tmp_path: Path) -> Path:
    return write_archive(tmp_path / "float.pt", _state_dict_pickle(), {"0": b"\x00\x00\x80\x3f"})


def test_nothing_one_file_does_to_the_allow_list_reaches_the_next(tmp_path: Path) -> None:
    honest = _float_storage_checkpoint(tmp_path)
    assert inspect_checkpoint(honest).storage_types == ["FloatStorage"]
    for attack in (hostile.retyped_storage_class("HalfStorage"), hostile.retyped_stand_in_class()):
        with contextlib.suppress(CheckpointError):  # refused or accepted, the next file must read as before
            inspect_checkpoint(write_archive(tmp_path / "attack.pt", attack))
        assert inspect_checkpoint(honest).storage_types == ["FloatStorage"]


def test_declared_storage_sizes_must_match_the_archive(tmp_path: Path) -> None:
    blob = _state_dict_pickle()
    # One declared float, but its entry inflates to 16 MiB (about 40:1 compressed): refused before torch.load
    # would inflate it.
    sparse = bytearray(16 * 1024 * 1024)
    sparse[::64] = random.Random(0).randbytes(len(sparse) // 64)
    bomb = write_archive(tmp_path / "bomb.pt", blob, {"0": bytes(sparse)}, compress=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < len(sparse) // 20
    with pytest.raises(CheckpointError, match="holds 16777216 bytes but its storage declares 4"):
        inspect_checkpoint(bomb)
    with pytest.raises(CheckpointError, match="lacks tensor data"):
        inspect_checkpoint(write_archive(tmp_path / "missing.pt", blob))


def test_tensor_bytes_beyond_what_the_config_needs_are_refused(tmp_path: Path) -> None:
    # 64 MiB of tensors for a yolov5n (1.9 M parameters): an honest file holds at most 16 bytes per
    # parameter (+16 MiB), so torch.load would inflate more than any such model needs.
    numel = 2**24
    path = tmp_path / "big.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _state_dict_pickle(numel))
        with zf.open("archive/data/0", "w") as fh:
            chunk = bytes(16 * 1024 * 1024)
            for _ in range(numel * 4 // len(chunk)):
                fh.write(chunk)
    error, peak = _inspect_peak(path)
    assert isinstance(error, CheckpointError) and "more than a 1,88" in str(error), error
    assert peak < PEAK_LIMIT


def test_bare_state_dict_refusal_says_how_to_fix_the_file(tmp_path: Path) -> None:
    bare = b"\x80\x02}(" + hostile.op_str("model.0.conv.weight") + _float_tensor() + b"u."
    path = write_archive(tmp_path / "bare.pt", bare, {"0": b"\x00\x00\x80\x3f"})
    with pytest.raises(CheckpointError, match=r"bare state dict .*torch\.save\(\{'state_dict'"):
        inspect_checkpoint(path)


@pytest.mark.parametrize("block", ["GhostConv", "C3Ghost", "C3TR"])
def test_hub_variant_blocks_are_named_in_the_refusal(tmp_path: Path, block: str) -> None:
    # An upstream pickle of yolov5s-ghost / yolov5s-transformer names these classes.
    blob = hostile.checkpoint_dict(hostile.op_str("m") + hostile.op_global("models.common", block) + b")\x81")
    with pytest.raises(CheckpointError, match=f"the {block} block .* is not supported"):
        inspect_checkpoint(write_archive(tmp_path / "hub.pt", blob))


@pytest.mark.parametrize(("size", "step"), [(1_000_000_000, 0), (2, 1), (1, 5)], ids=["expanded", "longer", "offset"])
def test_tensor_views_beyond_their_storage_are_refused(tmp_path: Path, size: int, step: int) -> None:
    # torch.load would rebuild a billion-element stride-0 view of one float; .float() would then take 4 GB.
    blob = _state_dict_pickle(tensor=_float_tensor(1, size=size, step=step))
    if size == 1:  # a one-element view 5 elements in: offset past the storage
        blob = blob.replace(hostile.op_int(0) + b"(" + hostile.op_int(1), hostile.op_int(5) + b"(" + hostile.op_int(1))
    with pytest.raises(CheckpointError, match="beyond or larger than their storage"):
        inspect_checkpoint(write_archive(tmp_path / "view.pt", blob, {"0": b"\x00\x00\x80\x3f"}))
