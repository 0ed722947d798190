from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from warmstart.cache.manifest import Manifest
from warmstart.cache.store import SnapshotStore
from warmstart.core.spec import AppSpec
from warmstart.errors import CacheError, ManifestError


def manifest(app: str = "a", created: str = "2026-01-01T00:00:00") -> Manifest:
    return Manifest(app=app, tag=secrets.token_hex(4), key="k" * 64, created_at=created, warmstart_version="0",
                    engine={"name": "podman"}, image={"ref": "i", "id": "x"}, spec={})


def test_publish_is_atomic_private_and_hashed(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "c").open()
    with store.staging("a") as stage:
        (stage / "checkpoint.tar").write_bytes(b"data")
        assert store.snapshots_of("a") == []  # staged is not visible
        snap = store.publish(stage, manifest())
    assert store.latest("a") == snap
    entry = snap.manifest.files["checkpoint.tar"]
    assert entry["size"] == 4 and entry["sha256"].startswith("3a6eb079")
    assert stat.S_IMODE(snap.path.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in snap.path.iterdir())
    assert list(store.staging_root.iterdir()) == []


def test_failed_staging_leaves_nothing(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "c").open()
    with pytest.raises(RuntimeError), store.staging("a") as stage:
        (stage / "checkpoint.tar").write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(store.staging_root.iterdir()) == [] and store.snapshots_of("a") == []


def test_staging_of_a_dead_process_is_swept_on_open(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "c").open()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (store.staging_root / f"a-{dead}-abcd").mkdir()
    (store.staging_root / f"a-{os.getpid()}-live").mkdir()
    store.open()
    assert [p.name for p in store.staging_root.iterdir()] == [f"a-{os.getpid()}-live"]


def test_latest_is_newest_and_bad_manifests_are_skipped(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "c").open()
    for created in ["2026-01-01T00:00:00", "2026-03-01T00:00:00", "2026-02-01T00:00:00"]:
        with store.staging("a") as stage:
            (stage / "checkpoint.tar").write_bytes(b"data")
            store.publish(stage, manifest(created=created))
    broken = store.snapshots / "a" / "zzz"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    assert store.latest("a").manifest.created_at == "2026-03-01T00:00:00"
    assert len(store.snapshots_of("a")) == 3


def test_newer_manifest_version_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    raw = json.loads(manifest().to_json())
    path.write_text(json.dumps({**raw, "schema_version": 99}))
    with pytest.raises(ManifestError, match="schema_version 99, newer than this warmstart reads"):
        Manifest.load(path)
    path.write_text("[]")
    with pytest.raises(ManifestError, match="not a JSON object"):
        Manifest.load(path)


def test_cache_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(CacheError, match="is not a directory"):
        SnapshotStore(f).open()


def test_app_records_round_trip_privately(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "c").open()
    spec = AppSpec(name="a", image="i", env={"SECRET": "v"})
    store.save_app(spec)
    assert store.load_app("a") == spec and store.load_app("b") is None
    assert stat.S_IMODE((store.apps / "a.json").stat().st_mode) == 0o600
