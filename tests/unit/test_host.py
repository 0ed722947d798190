"""The CRIU version is asked once per binary: the memo in the cache root is keyed by the binary's identity."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from warmstart.core.host import criu_version

FAKE_CRIU = '#!/bin/sh\necho x >> "{log}"\necho "Version: {version}"\n'


def test_the_criu_version_is_remembered_until_the_binary_changes(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    bindir, log, memo = tmp_path / "bin", tmp_path / "calls", tmp_path / "memo"
    bindir.mkdir()
    criu = bindir / "criu"
    criu.write_text(FAKE_CRIU.format(log=log, version="4.2.1"))
    criu.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    assert criu_version(memo) == "4.2.1" and criu_version(memo) == "4.2.1"
    assert log.read_text().count("x") == 1 and memo.stat().st_mode & 0o777 == 0o600
    criu.unlink()  # an upgrade: a new file
    criu.write_text(FAKE_CRIU.format(log=log, version="4.3"))
    criu.chmod(0o755)
    assert criu_version(memo) == "4.3" and log.read_text().count("x") == 2
    memo.write_text("garbage")  # a damaged memo is asked past, then rewritten
    assert criu_version(memo) == "4.3" and memo.read_text().endswith("\n4.3\n")
