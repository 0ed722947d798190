"""The secret scan's literal finder (warmstart/security/finder.py): warmstart-init's one-pass `find` and Python's
search give the same hits, the scan's findings do not depend on which ran, and a helper that fails or is left
early is replaced or ended."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

from warmstart.core import sandbox
from warmstart.security import finder, secretenv

NEEDLES = [b"AKIA", b"ASIA", b"-----BEGIN ", b"s3cr3t-value", "s3cr3t-value".encode("utf-16-le"), b"abab", b"ab"]


def _planted(path: Path, size: int, seed: int) -> Path:
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(size))
    for needle in NEEDLES * 3:
        at = rng.randrange(0, size - len(needle))
        data[at:at + len(needle)] = needle
    data[8 << 20:(8 << 20) + 6] = b"ababab"  # across the helper's first chunk boundary
    data[-4:] = b"AKIA"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("seed", [1, 2])
def test_the_init_and_python_find_the_same(tmp_path: Path, seed: int) -> None:
    assert os.access(sandbox.INIT, os.X_OK), f"{sandbox.INIT} is missing: ./scripts/setup-host builds it"
    path = _planted(tmp_path / "pages-1.img", (9 << 20) + 4097, seed)
    ours = list(finder._with_init(path, NEEDLES))
    python = list(finder._with_python(path, NEEDLES))
    assert ours == python
    assert len(ours) >= 3 * len(NEEDLES) and ours == sorted(ours)
    assert ((9 << 20) + 4097 - 4, 0) in ours


def test_findings_do_not_depend_on_the_finder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = b"ghp_" + b"A1b2C3d4" * 4 + b"E5f6"
    heap = bytearray(random.Random(3).randbytes(1 << 20))
    for at, piece in ((99, b"." + b"AKIA" + b"Q" * 16 + b"."), (4999, b" " + token + b" "), (9000, b"AKIAlowercase"),
                      (20000, "s3cr3t-value".encode("utf-16-le"))):
        heap[at:at + len(piece)] = piece
    (tmp_path / "heap").write_bytes(bytes(heap))
    with_init = secretenv.scan(tmp_path, {"DB": "s3cr3t-value"})
    monkeypatch.setattr(sandbox, "INIT", tmp_path / "absent")
    with_python = secretenv.scan(tmp_path, {"DB": "s3cr3t-value"})
    assert with_init == with_python
    assert [(f.what, f.offset) for f in with_init] == [
        ("the value of secret DB (UTF-16)", 20000), ("a AWS access key id", 100), ("a GitHub token", 5000)]


def _fake_init(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-init"
    script.write_text(f"#!/bin/sh\ncat >/dev/null\n{body}\n")
    script.chmod(0o700)
    return script


def test_a_failing_helper_is_replaced_without_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"xxAKIAyyAKIAzzASIA")
    monkeypatch.setattr(sandbox, "INIT", _fake_init(tmp_path, 'echo "2 0"; exit 3'))  # one hit, then a failure
    assert list(finder.occurrences(path, [b"AKIA", b"ASIA"])) == [(2, 0), (8, 0), (14, 1)]
    monkeypatch.setattr(sandbox, "INIT", _fake_init(tmp_path, "exit 120"))  # an init without the verb
    assert list(finder.occurrences(path, [b"AKIA", b"ASIA"])) == [(2, 0), (8, 0), (14, 1)]


def test_a_helper_left_early_is_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"AKIA")
    marker = f"warmstart-finder-test-{os.getpid()}"
    script = tmp_path / marker  # in the helper's command line
    script.write_text(f"#!{sys.executable}\nimport sys, time\n"
                      "sys.stdin.read()\nprint('0 0', flush=True)\ntime.sleep(30)\n")
    script.chmod(0o700)
    monkeypatch.setattr(sandbox, "INIT", script)
    hits = finder.occurrences(path, [b"AKIA"])
    assert next(hits) == (0, 0)
    assert [p for p in Path("/proc").glob("[0-9]*/cmdline") if marker.encode() in _read(p)]
    hits.close()
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if marker.encode() in _read(p)]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # ended meanwhile
        return b""
