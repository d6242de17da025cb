"""The prunebench artifact format: exact round trips, sparse packing, loading through load_model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from prunebench.worker.engine import artifacts
from prunebench.worker.engine.checkpoints import LoadedModel, load_model
from prunebench.worker.engine.pruning import apply_pruning
from tests.support.paths import DEMO_CHECKPOINT


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    loaded = load_model(DEMO_CHECKPOINT)
    loaded.model.fuse()
    return loaded


def _save(model: torch.nn.Module, loaded: LoadedModel, path: Path, **kw: object) -> int:
    return artifacts.save_model(model, loaded, path, meta={"method": "test"}, **kw)


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k].to(a[k].dtype)), k


def test_round_trip_is_exact(loaded: LoadedModel, tmp_path: Path) -> None:
    model = apply_pruning(copy.deepcopy(loaded.model), "l1_unstructured", 0.5).model
    size = _save(model, loaded, tmp_path / "m.pt")
    assert size == (tmp_path / "m.pt").stat().st_size
    obj = torch.load(tmp_path / "m.pt", weights_only=True)
    assert obj["format"] == "prunebench" and obj["version"] == 1
    assert obj["names"] == loaded.names and obj["stride"] == loaded.stride
    assert obj["meta"]["fused"] is True and obj["meta"]["method"] == "test" and obj["meta"]["packed_tensors"] > 0
    state = artifacts.unpack_state_dict(obj)
    assert all(t.dtype == torch.float32 for t in state.values() if t.is_floating_point())
    _assert_same_state(model.state_dict(), state)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # the temp file was renamed, not left over


def test_sparse_and_channel_pruned_artifacts_are_smaller(loaded: LoadedModel, tmp_path: Path) -> None:
    dense = _save(loaded.model, loaded, tmp_path / "dense.pt")
    sparse = _save(apply_pruning(copy.deepcopy(loaded.model), "global_magnitude", 0.5).model, loaded, tmp_path / "s.pt")
    channel = _save(apply_pruning(copy.deepcopy(loaded.model), "channel", 0.5).model, loaded, tmp_path / "c.pt")
    assert sparse < 0.6 * dense  # 1/32 mask + 1/2 values per packed weight
    assert channel < 0.5 * dense
    assert torch.load(tmp_path / "dense.pt", weights_only=True)["meta"]["packed_tensors"] == 0


@pytest.mark.parametrize("method", ["l1_unstructured", "channel"])
def test_load_model_reproduces_pruned_model(loaded: LoadedModel, tmp_path: Path, method: str) -> None:
    model = apply_pruning(copy.deepcopy(loaded.model), method, 0.5).model.eval()
    _save(model, loaded, tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    assert again.format == "prunebench" and again.model.is_fused and again.names == loaded.names
    _assert_same_state(model.state_dict(), again.model.state_dict())
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(again.model(x)[0], model(x)[0])


def test_half_values_round_within_fp16(loaded: LoadedModel, tmp_path: Path) -> None:
    model = apply_pruning(copy.deepcopy(loaded.model), "l1_unstructured", 0.3).model
    full = _save(model, loaded, tmp_path / "f.pt")
    half = _save(model, loaded, tmp_path / "h.pt", half=True)
    assert half < 0.6 * full
    state = artifacts.unpack_state_dict(torch.load(tmp_path / "h.pt", weights_only=True))
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            assert torch.equal(state[name], tensor.half().float()), name


def test_keyword_form_uses_model_attributes(loaded: LoadedModel, tmp_path: Path) -> None:
    size = artifacts.save_model(loaded.model, path=tmp_path / "k.pt", meta={"sparsity": 0.0})
    obj = torch.load(tmp_path / "k.pt", weights_only=True)
    assert size > 0 and obj["yaml"] == loaded.model.yaml and obj["stride"] == loaded.stride
    with pytest.raises(TypeError):
        artifacts.save_model(loaded.model, path=tmp_path / "bad.pt", meta={"x": object()})
    assert not (tmp_path / "bad.pt").exists()


def test_corrupt_artifacts_are_refused(loaded: LoadedModel) -> None:
    obj = artifacts.build_artifact(
        apply_pruning(copy.deepcopy(loaded.model), "l1_unstructured", 0.5).model,
        yaml=loaded.yaml,
        names=loaded.names,
        stride=loaded.stride,
    )
    name = next(k for k, v in obj["state"].items() if isinstance(v, dict))
    broken = copy.deepcopy(obj)
    broken["state"][name]["values"] = broken["state"][name]["values"][:-1]
    with pytest.raises(ValueError, match="values"):
        artifacts.unpack_state_dict(broken)
    broken = copy.deepcopy(obj)
    broken["state"][name]["encoding"] = "zstd"
    with pytest.raises(ValueError, match="encoding"):
        artifacts.unpack_state_dict(broken)
    with pytest.raises(ValueError, match="version"):
        artifacts.unpack_state_dict({**obj, "version": 2})
    with pytest.raises(ValueError):
        artifacts.unpack_state_dict({"format": "other"})
