"""Rules that real services needed (issue: a zoo of services nobody here wrote): publicly known keys are reported,
not refused; the restore policy judges by medians of like-for-like trials with a noise floor; the manifest
records what the snapshot's process tree holds."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from warmstart.cache.manifest import Manifest
from warmstart.core import host
from warmstart.errors import ManifestError, SecretLeakError
from warmstart.restore import policy
from warmstart.restore.policy import Health
from warmstart.security import secretenv


def _pem(body: bytes) -> bytes:
    text = base64.b64encode(body)
    lines = b"\n".join(text[i:i + 64] for i in range(0, len(text), 64))
    return b"-----BEGIN PRIVATE KEY-----\n" + lines + b"\n-----END PRIVATE KEY-----\n"


def test_a_publicly_known_key_is_reported_by_name_and_a_private_one_beside_it_still_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    public, private = _pem(os.urandom(600)), _pem(os.urandom(600))
    digest = hashlib.sha256(re.sub(rb"\s", b"", public.split(b"\n", 1)[1].split(b"-----END")[0])).hexdigest()
    monkeypatch.setitem(secretenv.PUBLIC_KEYS, digest, "the test suite's public key")
    (tmp_path / "pages-1.img").write_bytes(b"\0" * 100 + public + b"\0" * 50)
    found = secretenv.scan(tmp_path, {})
    assert [(f.what, f.public) for f in found] == [("a PEM private key", "the test suite's public key")]
    secretenv.raise_if_found(found, app="svc")  # a public key alone: nothing to refuse

    (tmp_path / "pages-1.img").write_bytes(public + b"\0" * 10 + private)
    found = secretenv.scan(tmp_path, {})
    assert [f.public for f in found] == ["the test suite's public key", ""]
    assert found[1].offset == len(public) + 10
    with pytest.raises(SecretLeakError):
        secretenv.raise_if_found(found, app="svc")


GO_TESTCERT = [Path(p) / "src/net/http/internal/testcert/testcert.go" for p in ("/usr/local/go", "/usr/lib/go")]


def test_the_listed_go_test_key_is_the_one_in_gos_source() -> None:
    source = next((p for p in GO_TESTCERT if p.is_file()), None)
    if source is None:
        pytest.skip("no Go source tree here")
    text = source.read_text()
    match = re.search(r"LocalhostKey = \[\]byte\(testingKey\(`(-----BEGIN RSA TESTING KEY-----.*?-----END RSA "
                      r"TESTING KEY-----)", text, re.S)
    assert match, "testcert.go changed shape"
    body = re.sub(r"\s", "", match.group(1).split("\n", 1)[1].split("-----END")[0])
    assert hashlib.sha256(body.encode()).hexdigest() in secretenv.PUBLIC_KEYS


def test_trial_timings_are_numbers_the_manifest_accepts_with_medians_and_spread() -> None:
    timings = policy.trial_timings([1.0, 3.0, 2.0], [0.2, 0.1, 0.9])
    assert timings == {"cold_trials": 3, "cold_ready_seconds": 2.0, "cold_fastest_seconds": 1.0,
                       "cold_slowest_seconds": 3.0, "restored_trials": 3, "restored_ready_seconds": 0.2,
                       "restored_fastest_seconds": 0.1, "restored_slowest_seconds": 0.9}
    assert policy.trial_timings([], []) == {"cold_trials": 0, "restored_trials": 0}


def test_the_policy_judges_medians_and_ignores_differences_below_the_noise_floor() -> None:
    fresh = Health()
    # One slow restore among three does not decide: the median does.
    slow_once = policy.trial_timings([0.20, 0.21, 0.19], [0.12, 0.60, 0.11])
    assert policy.skip_reason("a:1", slow_once, fresh, always_restore=False) == ""
    # A restore that loses by more than the noise floor is skipped, and the reason says on what evidence.
    loses = policy.trial_timings([0.20, 0.20, 0.20], [0.27, 0.26, 0.28])
    reason = policy.skip_reason("a:1", loses, fresh, always_restore=False)
    assert "does not beat a cold start here" in reason and "median of 3 trials each way" in reason
    # Both at 0.00 s (an engine that starts nothing): within the noise floor, not judged.
    zero = policy.trial_timings([0.0], [0.0])
    assert policy.skip_reason("a:1", zero, fresh, always_restore=False) == ""


def _manifest(**extra: object) -> dict[str, object]:
    return {"schema_version": 1, "app": "svc", "tag": "t1", "key": "k", "created_at": "2026-12-03T10:00:00+00:00",
            "warmstart_version": "0", "engine": {"mode": "sandbox"}, "image": {}, "spec": {},
            "files": {"sandbox.json": {"size": 1, "sha256": "0" * 64}, "images/x.img": {"size": 1, "sha256": "0" * 64}},
            **extra}


def test_the_manifest_records_what_the_tree_holds_and_validates_it() -> None:
    m = Manifest.from_raw(_manifest(holds={"processes": 2, "file_locks": 1}), source="t")
    assert m.holds == {"processes": 2, "file_locks": 1}
    assert json.loads(m.to_json())["holds"] == {"processes": 2, "file_locks": 1}
    for bad in ({"processes": -1}, {"processes": True}, {"secrets": 1}, {"processes": "2"}, []):
        with pytest.raises(ManifestError, match="holds"):
            Manifest.from_raw(_manifest(holds=bad), source="t")


def test_a_criu_without_the_rlimits_shim_is_found_out(tmp_path: Path) -> None:
    prefix = tmp_path / "criu"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "lib").mkdir()
    criu = prefix / "bin" / "criu"
    criu.write_bytes(b"\x7fELF...libc.so.6\x00")
    assert not host.criu_has_rlimits_shim(str(criu))
    criu.write_bytes(b"\x7fELF...libc.so.6\x00" + host.RLIMITS_SHIM.encode() + b"\x00")
    assert not host.criu_has_rlimits_shim(str(criu))  # named, but not in the prefix: the loader would fail
    (prefix / "lib" / host.RLIMITS_SHIM).write_bytes(b"")
    link = tmp_path / "criu-on-path"
    link.symlink_to(criu)
    assert host.criu_has_rlimits_shim(str(link))  # the PATH entry is a link into the prefix
    assert not host.criu_has_rlimits_shim(str(tmp_path / "missing"))
