"""`run`'s early engine query (warmstart.engines.early): started before the launch's imports, taken by the engine, never
started where it could be wrong, and reaped when nobody takes it. A fake `podman` on PATH records its calls."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from warmstart.cache.store import SnapshotStore
from warmstart.core.spec import AppSpec
from warmstart.engines import early
from warmstart.engines.podman import PodmanEngine

FAKE_PODMAN = """#!/bin/sh
echo "$*" >> "{log}"
case "$1 $2" in "image inspect") echo sha256:cafe; exit 0;; esac
exit 125
"""


@pytest.fixture
def fake_podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir, log = tmp_path / "bin", tmp_path / "calls.log"
    bindir.mkdir()
    (bindir / "podman").write_text(FAKE_PODMAN.format(log=log))
    (bindir / "podman").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.delenv("WARMSTART_ENGINE", raising=False)
    return log


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    store = SnapshotStore(tmp_path / "cache").open()
    store.save_app(AppSpec(name="app", image="localhost/app:1", ports=(8080,)))
    return store


def test_the_query_is_started_early_and_taken_by_the_engine(fake_podman: Path, store: SnapshotStore) -> None:
    early.prefetch_for_run("app:v1", cache_dir=store.root, engine=None, spec_file=None)
    assert ("podman", "localhost/app:1") in early._started
    assert PodmanEngine().image_id(image="localhost/app:1") == "sha256:cafe"
    assert fake_podman.read_text().splitlines() == ["image inspect --format {{.Id}} localhost/app:1"]  # asked once
    assert not early._started


def test_nothing_is_started_where_the_answer_could_be_wrong(fake_podman: Path, store: SnapshotStore,
                                                             tmp_path: Path) -> None:
    early.prefetch_for_run("app", cache_dir=store.root, engine="docker", spec_file=None)  # another engine
    early.prefetch_for_run("app", cache_dir=store.root, engine=None, spec_file=tmp_path / "w.toml")  # its own image
    early.prefetch_for_run("other", cache_dir=store.root, engine=None, spec_file=None)  # no record
    early.prefetch_for_run("../app", cache_dir=store.root, engine=None, spec_file=None)  # not a name
    os.chmod(store.apps, 0o777)  # a record others could have written
    early.prefetch_for_run("app", cache_dir=store.root, engine=None, spec_file=None)
    os.chmod(store.apps, 0o700)
    assert not early._started and not fake_podman.exists()


def test_an_answer_nobody_takes_is_reaped(fake_podman: Path, store: SnapshotStore) -> None:
    early.prefetch_for_run("app", cache_dir=store.root, engine="podman", spec_file=None)
    proc = early._started["podman", "localhost/app:1"]
    early._reap()
    assert proc.returncode is not None and not early._started


def test_run_asks_the_engine_before_importing_the_launch(fake_podman: Path, store: SnapshotStore) -> None:
    """The first podman call happens while warmstart.restore.launch is still unimported: the query overlaps the imports
    (the fake podman cannot see our modules, so the order is shown by when each side happened)."""
    code = ("import sys, time; from warmstart.engines import early;"
            f"early.prefetch_for_run('app', cache_dir=__import__('pathlib').Path({str(store.root)!r}), engine=None,"
            " spec_file=None);"
            "print('warmstart.restore.launch' in sys.modules, len(early._started))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "1"]


def test_the_restore_path_imports_only_what_comes_before_its_first_engine_call() -> None:
    """Pins #11's import diet: these modules are needed only after a snapshot is chosen (or never on `run`)."""
    code = ("import sys; import warmstart.cli.plain, warmstart.restore.launch, warmstart.engines.podman,"
            " warmstart.engines.early;"
            "late = ['warmstart.runtime.containers', 'warmstart.runtime.hooks', 'warmstart.runtime.probes',"
            " 'warmstart.security.secretenv', 'warmstart.security.signing', 'warmstart.engines.docker', 'tarfile',"
            " 'hashlib',"
            " 'platform', 'tempfile', 'typer', 'rich'];"
            "print(','.join(m for m in late if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
