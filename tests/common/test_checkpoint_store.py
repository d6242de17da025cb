"""Checkpoint lookup: builtin, mounted (models_dir) and uploaded files; refusal of paths and escapes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from prunebench.checkpoints.store import (
    BUILTIN_CHECKPOINT,
    CheckpointError,
    CheckpointStore,
    UnknownCheckpoint,
)
from prunebench.config import Settings
from prunebench.infra.files import sha256_file


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(BUILTIN_CHECKPOINT, root / "yolov5n-copy.pt")
    (root / "notes.txt").write_text("not a checkpoint")
    (root / "broken.pt").write_bytes(b"garbage")
    return root


@pytest.fixture
def store(tmp_path: Path, models_dir: Path) -> CheckpointStore:
    return CheckpointStore(Settings(store_dir=tmp_path / "store", models_dir=models_dir))


def test_builtin_and_mounted_checkpoints_are_listed(store: CheckpointStore) -> None:
    infos = {i.name: i for i in store.list()}
    assert set(infos) == {"yolov5n-copy.pt", "yolov5n_shapes.pt", "broken.pt"}  # notes.txt is no checkpoint
    assert not infos["broken.pt"].usable and "not a torch checkpoint" in (infos["broken.pt"].problem or "")
    assert infos["yolov5n-copy.pt"].usable and infos["yolov5n-copy.pt"].problem is None
    assert infos["yolov5n-copy.pt"].source == "models_dir" and infos["yolov5n_shapes.pt"].source == "builtin"
    assert infos["yolov5n-copy.pt"].id == infos["yolov5n_shapes.pt"].id == sha256_file(BUILTIN_CHECKPOINT)


def test_resolve_by_name_and_id(store: CheckpointStore, models_dir: Path) -> None:
    info, path = store.resolve("yolov5n-copy.pt")
    assert path == (models_dir / "yolov5n-copy.pt").resolve()
    by_id, _ = store.resolve(info.id)
    assert by_id.id == info.id
    with pytest.raises(UnknownCheckpoint):
        store.resolve("missing.pt")
    with pytest.raises(UnknownCheckpoint, match="broken"):
        store.resolve("broken.pt")


@pytest.mark.parametrize("ref", ["../models/yolov5n-copy.pt", "/etc/passwd", "a\\b.pt", ".hidden.pt", "", "x\x00.pt"])
def test_path_like_references_are_refused(store: CheckpointStore, ref: str) -> None:
    with pytest.raises(UnknownCheckpoint):
        store.resolve(ref)


def test_symlinks_escaping_models_dir_are_ignored(store: CheckpointStore, models_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.pt"
    shutil.copy(BUILTIN_CHECKPOINT, outside)
    (models_dir / "escape.pt").symlink_to(outside)
    (models_dir / "inside.pt").symlink_to(models_dir / "yolov5n-copy.pt")
    with pytest.raises(UnknownCheckpoint):
        store.resolve("escape.pt")
    assert "escape.pt" not in {i.name for i in store.list()}


def test_upload_commit_and_refusal(store: CheckpointStore) -> None:
    tmp = store.incoming_dir() / "upload.part"
    shutil.copy(BUILTIN_CHECKPOINT, tmp)
    sha = sha256_file(tmp)
    info, created = store.add_upload(tmp, sha, "mine.pt", "local")
    assert created and info.source == "upload" and info.owner == "local" and not tmp.exists()
    assert store.resolve(sha)[1] == store.upload_path(sha)
    assert store.resolve("mine.pt")[0].id == sha

    shutil.copy(BUILTIN_CHECKPOINT, tmp)
    again, created = store.add_upload(tmp, sha, "other.pt", "local")
    # The same bytes again under another name: one stored checkpoint that both names find.
    assert not created and again.id == sha and again.name == "other.pt" and not tmp.exists()
    assert store.resolve("other.pt")[0].id == sha and store.resolve("mine.pt")[0].id == sha
    assert [info.id for info in store.list() if info.source == "upload"] == [sha]

    tmp.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError):
        store.add_upload(tmp, "0" * 64, "bad.pt", "local")
    assert not tmp.exists() and not store.upload_path("0" * 64).exists()
    assert sorted(p.name for p in store.uploads_dir.iterdir()) == sorted(
        [".incoming", f"{sha}.pt", f"{sha}.json", f"{sha}.owners"]
    )


def test_each_owner_sees_only_its_own_view_of_shared_bytes(store: CheckpointStore) -> None:
    tmp = store.incoming_dir() / "upload.part"
    shutil.copy(BUILTIN_CHECKPOINT, tmp)
    sha = sha256_file(tmp)
    alice, created = store.add_upload(tmp, sha, "secret-project.pt", "alice")
    assert created and alice.owner == "alice"
    shutil.copy(BUILTIN_CHECKPOINT, tmp)
    bob, created = store.add_upload(tmp, sha, "bobs.pt", "bob")
    # New to bob: created, his name, his time, himself; nothing of alice's.
    assert created and (bob.name, bob.owner) == ("bobs.pt", "bob") and bob.created_at != alice.created_at
    blob = store.resolve(sha)[0]
    bobs_view = store.owner_view(blob, "bob")
    assert bobs_view is not None and (bobs_view.name, bobs_view.owner) == ("bobs.pt", "bob")
    assert bobs_view.created_at == bob.created_at
    assert store.owner_view(blob, "carol") is None
    with pytest.raises(UnknownCheckpoint):
        store.resolve("secret-project.pt", principal="bob")
    assert store.resolve("bobs.pt", principal="bob")[0].name == "bobs.pt"
    alices_view = store.owner_view(blob, "alice")
    assert alices_view is not None and (alices_view.name, alices_view.created_at) == (
        "secret-project.pt",
        alice.created_at,
    )
    assert [i.id for i in store.list("carol") if i.source == "upload"] == []
    # A repeat by bob is no longer new, and keeps his first time.
    shutil.copy(BUILTIN_CHECKPOINT, tmp)
    again, created = store.add_upload(tmp, sha, "bobs-v2.pt", "bob")
    assert not created and again.created_at == bob.created_at
    assert store.resolve("bobs-v2.pt", principal="bob")[0].id == sha
