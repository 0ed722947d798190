"""Fast tests (no engine) of the rules behind secrets, signatures and the restore policy. The same behaviours are
proven end to end against real podman/CRIU in tests/podman/test_secrets.py, test_signing.py and
test_restore_policy.py."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path

import pytest

from warmstart.cache.manifest import Manifest
from warmstart.cache.store import SnapshotStore
from warmstart.core.spec import AppSpec
from warmstart.errors import SecretLeakError, SignatureError, UsageError
from warmstart.restore import policy
from warmstart.restore.policy import Health, skip_reason
from warmstart.security import secretenv, signing

SPEC = AppSpec(name="shop", image="img", env={"MODE": "fast", "API_KEY": "from-spec-file"}, secret_env=("API_KEY",))


# -- secrets ----------------------------------------------------------------------------------------------------------

def test_secret_values_come_from_the_environment_first_and_are_never_in_build_env_or_stored_spec() -> None:
    assert secretenv.secret_values(SPEC, {"API_KEY": "from-environment"}) == {"API_KEY": "from-environment"}
    assert secretenv.secret_values(SPEC, {}) == {"API_KEY": "from-spec-file"}
    assert secretenv.build_env(SPEC, {"API_KEY": "x" * 10}) == {"MODE": "fast", "WARMSTART_SECRET_NAMES": "API_KEY"}
    assert secretenv.run_env(SPEC, {"API_KEY": "x" * 10}) == {
        "MODE": "fast", "API_KEY": "x" * 10, "WARMSTART_SECRET_NAMES": "API_KEY"}
    stored = secretenv.stored_spec(SPEC)
    assert stored.env == {"MODE": "fast"} and stored.secret_env == ("API_KEY",)
    opted_in = dataclasses.replace(SPEC, secrets_during_warmup=True)
    assert secretenv.build_env(opted_in, {"API_KEY": "y" * 10})["API_KEY"] == "y" * 10


def test_a_missing_or_short_secret_is_a_usage_error_naming_it() -> None:
    spec = dataclasses.replace(SPEC, env={"MODE": "fast"})
    with pytest.raises(UsageError, match="secret API_KEY of app 'shop' has no value") as err:
        secretenv.run_env(spec, {})
    assert "export API_KEY" in err.value.hint
    with pytest.raises(UsageError, match="shorter than 6 characters"):
        secretenv.secret_values(spec, {"API_KEY": "abc"})
    assert secretenv.secret_values(spec, {"API_KEY": "abc"}, required=False) == {}


def test_the_app_record_never_holds_a_secret_value(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "cache").open()
    store.save_app(SPEC)
    text = (store.apps / "shop.json").read_text()
    assert "from-spec-file" not in text
    assert store.load_app("shop") == secretenv.stored_spec(SPEC)


def _image(magic: int, *messages: bytes) -> bytes:
    out = struct.pack("<II", 0x54564319, magic)
    for m in messages:
        out += struct.pack("<I", len(m)) + m
    return out


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def test_scan_finds_a_secret_and_a_token_shape_and_locates_them_in_the_process(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    # Process 300 has two dumped runs: 1 page at 0x1000 and 2 pages at 0x7f0000 (pages flagged PE_PRESENT).
    pagemap = _image(0x56084025, _field(1, 1),
                     _field(1, 0x1000) + _field(2, 0) + _field(4, 4) + _field(5, 1),
                     _field(1, 0x7F0000) + _field(2, 0) + _field(4, 6) + _field(5, 2))
    (images / "pagemap-300.img").write_bytes(pagemap)
    pages = bytearray(3 * 4096)
    secret = b"sk-test-0123456789abcdef"
    pages[4096 + 100:4096 + 100 + len(secret)] = secret  # second run, first page
    token = b"ghp_" + b"A1b2C3d4" * 4 + b"E5f6"
    pages[8192 + 7:8192 + 7 + len(token)] = token
    (images / "pages-1.img").write_bytes(bytes(pages))
    (tmp_path / "rootfs.tar").write_bytes(b"nothing to see")

    found = secretenv.scan(tmp_path, {"API_KEY": secret.decode()})
    assert [f.what for f in found] == ["the value of secret API_KEY", "a GitHub token"]
    assert found[0].file == "images/pages-1.img" and found[0].offset == 4096 + 100
    assert found[0].where == "process 300, address 0x7f0064, in the dumped range 0x7f0000-0x7f2000"
    assert found[1].where.startswith("process 300, address 0x7f1007")
    with pytest.raises(SecretLeakError, match="holds a secret in clear: the value of secret API_KEY") as err:
        secretenv.raise_if_found(found, app="shop")
    assert "a GitHub token" in err.value.details


def test_scan_finds_utf16_copies_and_ignores_shape_lookalikes(tmp_path: Path) -> None:
    (tmp_path / "heap").write_bytes(b"\0" * 10 + "s3cr3t-value".encode("utf-16-le") + b"AKIA" + b"lowercase" * 3)
    found = secretenv.scan(tmp_path, {"DB": "s3cr3t-value"})
    assert [f.what for f in found] == ["the value of secret DB (UTF-16)"]  # "AKIA" without 16 [A-Z0-9] is no key


# -- signatures -------------------------------------------------------------------------------------------------------

def _manifest() -> Manifest:
    return Manifest(app="shop", tag="v1", key="k" * 64, created_at="2026-11-26T00:00:00.000+00:00",
                    warmstart_version="0.1.0", engine={"name": "podman"}, image={"ref": "img", "id": "sha256:a"},
                    spec={}, files={"images/pages-1.img": {"size": 1, "sha256": "0" * 64}})


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    pub, _ = signing.generate(tmp_path / "k")
    other_pub, _ = signing.generate(tmp_path / "other")
    return tmp_path / "k", pub, other_pub


def test_a_signature_verifies_and_any_change_to_the_manifest_breaks_it(keys: tuple[Path, Path, Path]) -> None:
    key, pub, other_pub = keys
    assert (key.stat().st_mode & 0o777) == 0o600
    text = signing.sign(_manifest(), key)
    policy = signing.TrustPolicy(keys=(pub,), require=True)
    assert signing.check(_manifest(), text, policy, ref="shop:v1") == json.loads(text)["key_id"]
    tampered = dataclasses.replace(_manifest(), files={"images/pages-1.img": {"size": 1, "sha256": "1" * 64}})
    with pytest.raises(SignatureError, match="does not match its manifest"):
        signing.check(tampered, text, policy, ref="shop:v1")
    with pytest.raises(SignatureError, match="which is not trusted here"):
        signing.check(_manifest(), text, signing.TrustPolicy(keys=(other_pub,)), ref="shop:v1")
    with pytest.raises(SignatureError, match="is not signed, and signatures are required"):
        signing.check(_manifest(), None, policy, ref="shop:v1")
    with pytest.raises(SignatureError, match="unreadable signature file"):
        signing.check(_manifest(), "{not json", policy, ref="shop:v1")
    # Without a policy nothing is checked; with keys but not required, unsigned passes and a bad one does not.
    assert signing.check(tampered, text, signing.NO_POLICY, ref="shop:v1") == ""
    assert signing.check(_manifest(), None, signing.TrustPolicy(keys=(pub,)), ref="shop:v1") == ""


def test_key_files_are_validated_with_clear_errors(tmp_path: Path, keys: tuple[Path, Path, Path]) -> None:
    key, pub, _ = keys
    with pytest.raises(UsageError, match="File exists"):
        signing.generate(key)
    with pytest.raises(UsageError, match="not an unencrypted PEM private key"):
        signing.sign(_manifest(), pub)
    (tmp_path / "junk").write_text("junk")
    with pytest.raises(UsageError, match="is not a PEM public key"):
        signing.check(_manifest(), signing.sign(_manifest(), key), signing.TrustPolicy(keys=(tmp_path / "junk",)),
                      ref="x")
    with pytest.raises(UsageError, match="needs at least one trusted public key"):
        signing.TrustPolicy.from_sources(require=True)


def test_policy_from_the_environment(monkeypatch: pytest.MonkeyPatch, keys: tuple[Path, Path, Path]) -> None:
    _, pub, other = keys
    monkeypatch.setenv(signing.TRUSTED_KEYS_ENV, f"{pub}:{other}")
    monkeypatch.setenv(signing.REQUIRE_ENV, "1")
    assert signing.TrustPolicy.from_sources() == signing.TrustPolicy(keys=(pub, other), require=True)
    assert signing.TrustPolicy.from_sources(keys=[pub]).keys == (pub,)  # flags win


# -- restore policy ---------------------------------------------------------------------------------------------------

def test_a_snapshot_is_restored_only_where_it_beat_cold() -> None:
    fast = {"ready_seconds": 2.0, "restored_ready_seconds": 0.3}
    slow = {"ready_seconds": 0.5, "restored_ready_seconds": 0.48}
    assert skip_reason("a:1", fast, Health(), always_restore=False) == ""
    reason = skip_reason("a:1", slow, Health(), always_restore=False)
    assert "does not beat a cold start here: its trial restore was ready in 0.48s against 0.50s cold" in reason
    assert skip_reason("a:1", slow, Health(), always_restore=True) == ""
    assert skip_reason("a:1", {}, Health(), always_restore=False) == ""  # older snapshots: no numbers, no judgement


def test_the_circuit_opens_after_repeated_failures_and_half_opens_after_the_cool_down() -> None:
    h = Health()
    for i in range(policy.FAILURES_TO_OPEN - 1):
        h = h.after_failure(f"boom {i}", now=1000.0)
        assert h.circuit(now=1000.0) == "closed"
    h = h.after_failure("boom last", now=1000.0)
    assert h.circuit(now=1000.0) == "open" and h.open_until == 1000.0 + policy.COOLDOWN_SECONDS
    reason = skip_reason("a:1", {}, h, always_restore=True, now=1001.0)
    assert "circuit open after 3 failed restores in a row (last: boom last)" in reason
    later = 1000.0 + policy.COOLDOWN_SECONDS + 1
    assert h.circuit(now=later) == "half-open" and skip_reason("a:1", {}, h, always_restore=True, now=later) == ""
    assert h.after_failure("again", now=later).circuit(now=later) == "open"  # the half-open try failed
    assert Health.from_raw({"consecutive_failures": "x", "open_until": True}) == Health()  # advice, never a crash


def test_the_store_records_failures_and_clears_them_on_success(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "cache").open()
    with store.staging("shop") as stage:
        (stage / "checkpoint.tar").write_bytes(b"x")
        snap = store.publish(stage, dataclasses.replace(_manifest(), files={}))
    for _ in range(3):
        store.record_restore(snap, "criu failed")
    assert store.health(snap).circuit() == "open"
    assert (snap.path / ".health").stat().st_mode & 0o777 == 0o600
    store.record_restore(snap, None)
    assert store.health(snap) == Health() and not (snap.path / ".health").exists()


# -- encryption at rest -----------------------------------------------------------------------------------------------

def test_encrypted_files_round_trip_and_refuse_tampering(tmp_path: Path) -> None:
    from warmstart.errors import CacheError
    from warmstart.security import crypt

    key_path = tmp_path / "k"
    crypt.generate(key_path)
    key = crypt.load_key(key_path)
    data = os.urandom(crypt.CHUNK * 2 + 123)  # three chunks, the last short
    (tmp_path / "plain").write_bytes(data)
    crypt.encrypt_file(tmp_path / "plain", tmp_path / "enc", name="images/pages-1.img", key=key)
    blob = (tmp_path / "enc").read_bytes()
    assert data[:64] not in blob and (tmp_path / "enc").stat().st_mode & 0o777 == 0o600
    crypt.decrypt_file(tmp_path / "enc", tmp_path / "back", name="images/pages-1.img", key=key)
    assert (tmp_path / "back").read_bytes() == data

    def refused(variant: bytes, name: str = "images/pages-1.img", k: bytes = key) -> None:
        (tmp_path / "bad").write_bytes(variant)
        (tmp_path / "out").unlink(missing_ok=True)
        with pytest.raises(CacheError, match="does not decrypt"):
            crypt.decrypt_file(tmp_path / "bad", tmp_path / "out", name=name, key=k)

    block = crypt.CHUNK + crypt.TAG
    refused(blob[:16 + block])  # truncated to its first chunk: that chunk is not marked final
    refused(blob[:16] + blob[16 + block:16 + 2 * block] + blob[16:16 + block] + blob[16 + 2 * block:])  # reordered
    refused(blob, name="images/pages-2.img")  # moved to another file
    refused(blob, k=os.urandom(32))  # another key
    flipped = bytearray(blob)
    flipped[100] ^= 1
    refused(bytes(flipped))


def test_empty_files_and_key_file_rules(tmp_path: Path) -> None:
    from warmstart.security import crypt

    key = os.urandom(32)
    (tmp_path / "empty").write_bytes(b"")
    crypt.encrypt_file(tmp_path / "empty", tmp_path / "enc", name="rootfs.tar", key=key)
    crypt.decrypt_file(tmp_path / "enc", tmp_path / "back", name="rootfs.tar", key=key)
    assert (tmp_path / "back").read_bytes() == b""
    loose = tmp_path / "loose.key"
    loose.write_text(key.hex())
    loose.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others"):
        crypt.load_key(loose)
    loose.chmod(0o600)
    assert crypt.load_key(loose) == key
    loose.write_text("short")
    with pytest.raises(UsageError, match="is not 32 bytes"):
        crypt.load_key(loose)
