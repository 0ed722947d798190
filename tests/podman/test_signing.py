"""Signed snapshots against real podman/CRIU and a real registry: a snapshot signed at build restores under
--require-signed; one whose files were changed and manifest re-sealed (what an attacker with write access to a
cache or registry would do), one unsigned and one signed by an unknown key are refused, by `run` (which then starts
cold, saying why, or fails with --no-fallback) and by `pull` (which stores nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Cli, containers_of
from tests.helpers import RegistryServer, build, corrupt_image, login, reseal

pytestmark = pytest.mark.podman


def _keypair(cli: Cli, path: Path) -> tuple[Path, Path]:
    res = cli("key", "generate", str(path), "--json")
    assert res.returncode == 0, res.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    return path, Path(res.json["public_key"])


def test_signed_snapshot_restores_and_tampered_unsigned_or_untrusted_ones_are_refused(
    tmp_path: Path, cli: Cli, owned_app: str
) -> None:
    key, pub = _keypair(cli, tmp_path / "signing.key")
    _, other_pub = _keypair(cli, tmp_path / "other.key")
    built = build(cli, owned_app, "--sign-key", str(key))
    assert (Path(built["snapshot_path"]) / "manifest.sig").is_file()

    trusted = ["--require-signed", "--trust-key", str(pub)]
    ok = cli("run", owned_app, "--json", *trusted)
    assert ok.returncode == 0, ok.stderr
    assert ok.json["mode"] == "restored"
    assert cli("stop", ok.json["name"]).returncode == 0

    # Signed, but by a key this host does not trust.
    untrusted = cli("run", owned_app, "--json", "--require-signed", "--trust-key", str(other_pub))
    assert untrusted.json["mode"] == "cold"
    assert "which is not trusted here" in untrusted.json["reason"]
    assert cli("stop", untrusted.json["name"]).returncode == 0

    # Memory pages changed and the manifest re-sealed to match: the digests agree, the signature does not.
    corrupt_image(Path(built["snapshot_path"]), "pages-1.img")
    reseal(Path(built["snapshot_path"]))
    tampered = cli("run", owned_app, "--json", *trusted)
    assert tampered.returncode == 0, tampered.stderr
    assert tampered.json["mode"] == "cold"
    assert "signature refused" in tampered.json["reason"] and "does not match its manifest" in tampered.json["reason"]
    assert cli("stop", tampered.json["name"]).returncode == 0
    refused = cli("run", owned_app, "--no-fallback", *trusted)
    assert refused.returncode == 1 and "does not match its manifest" in refused.stderr

    # Unsigned: fine without the policy, refused with it.
    unsigned = build(cli, owned_app, "--force")
    assert not (Path(unsigned["snapshot_path"]) / "manifest.sig").exists()
    res = cli("run", owned_app, "--json", *trusted)
    assert res.json["mode"] == "cold" and "is not signed, and signatures are required" in res.json["reason"]
    assert cli("stop", res.json["name"]).returncode == 0
    # The policy can come from the environment, as a fleet would set it.
    env = {"WARMSTART_REQUIRE_SIGNED": "1", "WARMSTART_TRUSTED_KEYS": str(pub)}
    res = cli("run", owned_app, "--json", env=env)
    assert res.json["mode"] == "cold" and "is not signed" in res.json["reason"]
    assert cli("stop", res.json["name"]).returncode == 0

    bad = cli("run", owned_app, "--require-signed")
    assert bad.returncode == 2 and "--require-signed needs at least one trusted public key" in bad.stderr
    assert containers_of(owned_app) == []


def test_pull_verifies_signatures_before_anything_is_stored(
    tmp_path: Path, cli: Cli, owned_app: str, registry: RegistryServer
) -> None:
    key, pub = _keypair(cli, tmp_path / "signing.key")
    authfile = tmp_path / "auth.json"
    login(registry, authfile)
    env = {"REGISTRY_AUTH_FILE": str(authfile)}
    built = build(cli, owned_app)
    ref = f"{registry.address}/warmstart/{owned_app}"

    pushed = cli("push", built["snapshot"], f"{ref}:unsigned", "--json", env=env)
    assert pushed.returncode == 0, pushed.stderr
    other = Cli(tmp_path / "other-cache")
    res = other("pull", f"{ref}:unsigned", "--require-signed", "--trust-key", str(pub), env=env)
    assert res.returncode == 1 and "is not signed, and signatures are required" in res.stderr
    assert other("cache", "ls", "--json").json["snapshots"] == []

    signed = cli("push", built["snapshot"], f"{ref}:signed", "--sign-key", str(key), "--json", env=env)
    assert signed.returncode == 0, signed.stderr
    res = other("pull", f"{ref}:signed", "--require-signed", "--trust-key", str(pub), "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert (Path(res.json["path"]) / "manifest.sig").is_file()
    run = other("run", owned_app, "--json", "--require-signed", "--trust-key", str(pub), env=env)
    assert run.returncode == 0, run.stderr
    assert run.json["mode"] == "restored"
    assert other("stop", run.json["name"]).returncode == 0


def test_pages_altered_with_a_rewritten_stamp_do_not_restore_under_a_trust_policy(
    tmp_path: Path, cli: Cli, owned_app: str
) -> None:
    """The cache's stamp (inode, size, mtime, ctime per file) lets an unsigned launch skip re-hashing; an attacker
    who rewrites a page image can rewrite the stamp to match. With a trust policy nothing restores whose bytes
    were not hashed against the signed manifest in this launch."""
    import json

    from warmstart.cache.store import VERIFIED_STAMP, _stat_key

    key, pub = _keypair(cli, tmp_path / "signing.key")
    built = build(cli, owned_app, "--sign-key", str(key))
    snap = Path(built["snapshot_path"])
    trusted = ["--require-signed", "--trust-key", str(pub)]
    first = cli("run", owned_app, "--json", *trusted)
    assert first.json["mode"] == "restored", first.stderr
    assert cli("stop", first.json["name"]).returncode == 0

    changed = corrupt_image(snap, "pages-1.img")
    stamp = json.loads((snap / VERIFIED_STAMP).read_text())
    stamp[changed] = _stat_key(snap / changed)  # the stamp now vouches for the altered bytes
    (snap / VERIFIED_STAMP).write_text(json.dumps(stamp))

    res = cli("run", owned_app, "--json", *trusted)
    assert res.returncode == 0, res.stderr
    assert res.json["mode"] == "cold"
    assert f"{changed} does not match its sha256 in the manifest" in res.json["reason"]
    assert "\n" not in res.json["reason"]
    assert cli("stop", res.json["name"]).returncode == 0
    assert containers_of(owned_app) == []
