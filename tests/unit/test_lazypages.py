"""When a launch asks the init for a lazy restore (warmstart.restore.lazypages): the app allows it, the snapshot's
memory is big enough to pay, and this host's CRIU can; each refusal says why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from warmstart.restore import lazypages

FILES = {"images/pages-1.img": {"size": 200 << 20, "sha256": "x"}, "images/core-1.img": {"size": 10, "sha256": "y"},
         "rootfs.tar": {"size": 1 << 30, "sha256": "z"}}


def test_only_page_files_count_as_memory() -> None:
    assert lazypages.memory_bytes(FILES) == 200 << 20


def test_each_reason_for_an_eager_restore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = lazypages.memory_bytes(FILES)
    assert "lazy_pages = false" in lazypages.why_not(allowed=False, memory=big, memo_dir=None)
    assert "below 64 MiB" in lazypages.why_not(allowed=True, memory=10 << 20, memo_dir=None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no criu at all
    assert "cannot restore lazily" in lazypages.why_not(allowed=True, memory=big, memo_dir=tmp_path)
    assert lazypages.restore_env(allowed=True, memory=big, memo_dir=tmp_path) == {}


def test_lazy_where_criu_can(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    criu = tmp_path / "criu"
    criu.write_text('#!/bin/sh\n[ "$1 $3" = "check uffd-noncoop" ] && exit 0\nexit 1\n')
    criu.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    env = lazypages.restore_env(allowed=True, memory=100 << 20, memo_dir=tmp_path)
    assert env == {lazypages.LAZY_VAR: "1"} and (tmp_path / ".criu-uffd").read_text().endswith("\nyes\n")
    assert lazypages.record_env() == {lazypages.LAZY_VAR: "record"}
