"""The versioned cache against real podman + CRIU, and sharing through a real registry on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import COUNTER_IMAGE, Cli, containers_of
from tests.helpers import RegistryServer, build, http_json, login

pytestmark = pytest.mark.podman


def test_key_changes_with_what_changes_the_snapshot_and_reuse_otherwise(cli: Cli, owned_app: str) -> None:
    first = build(cli, owned_app)
    again = build(cli, owned_app)
    assert again["reused"] and again["snapshot"] == first["snapshot"] and again["key"] == first["key"]
    changed_env = build(cli, owned_app, "-e", "EXTRA=1")
    changed_cmd = cli("build", "--name", owned_app, "--image", COUNTER_IMAGE, "-p", "8080", "--ready-tcp", "8080",
                      "--json", "--", "python3", "-u", "/app/app.py")
    assert changed_cmd.returncode == 0, changed_cmd.stderr
    keys = {first["key"], changed_env["key"], changed_cmd.json["key"]}
    assert len(keys) == 3 and not changed_env["reused"]
    forced = build(cli, owned_app, "--force")
    assert not forced["reused"] and forced["snapshot"] == first["snapshot"]
    ls = cli("cache", "ls", owned_app, "--json").json["snapshots"]
    assert len(ls) == 3 and ls[0]["snapshot"] == forced["snapshot"]  # newest first
    inspect = cli("cache", "inspect", first["snapshot"], "--json").json
    assert inspect["key"] == first["key"] and inspect["host"]["criu_version"]
    assert inspect["key_inputs"]["env"]["STARTUP_DELAY"].startswith("sha256:")


def test_manifest_claiming_a_cpu_flag_this_host_lacks_is_refused(cli: Cli, owned_app: str) -> None:
    built = build(cli, owned_app)
    manifest_path = Path(built["snapshot_path"]) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["host"]["cpu_flags"].append("avx9000_imaginary")
    manifest_path.write_text(json.dumps(manifest))
    res = cli("run", owned_app, "--json")
    assert res.returncode == 0 and res.json["mode"] == "cold"
    assert "this host's CPU lacks flags the snapshot was made with: avx9000_imaginary" in res.json["reason"]
    refused = cli("run", owned_app, "--no-fallback")
    assert refused.returncode == 1 and "avx9000_imaginary" in refused.stderr


def _build_proc(cli: Cli, app: str, delay: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli.argv("build", "--name", app, "--image", COUNTER_IMAGE, "-p", "8080", "--ready-http", "/healthz",
                 "-e", f"STARTUP_DELAY={delay}", "--json"),
        env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_two_concurrent_builds_of_one_key_make_one_snapshot(cli: Cli, owned_app: str) -> None:
    procs = [_build_proc(cli, owned_app, "1.5") for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(o) for o, _ in outs]
    assert sorted(r["reused"] for r in results) == [False, True]
    assert results[0]["snapshot"] == results[1]["snapshot"]
    assert len(list((cli.cache / "snapshots" / owned_app).iterdir())) == 1
    assert containers_of(owned_app) == []


@pytest.mark.parametrize("stage", ["starting", "checkpointing"])
def test_sigkill_during_build_leaves_no_entry_and_the_next_build_succeeds(
    cli: Cli, owned_app: str, stage: str
) -> None:
    proc = _build_proc(cli, owned_app, "60" if stage == "starting" else "0")
    deadline = time.monotonic() + 60
    staging = cli.cache / ".staging"
    while time.monotonic() < deadline:
        if stage == "starting" and containers_of(owned_app):
            break
        if stage == "checkpointing" and staging.exists() and any(staging.iterdir()):
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"never reached {stage}")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    app_dir = cli.cache / "snapshots" / owned_app
    assert not app_dir.exists() or not any(app_dir.iterdir())
    assert cli("cache", "ls", owned_app, "--json").json["snapshots"] == []
    # The next build sweeps the orphaned build container and the dead staging dir, then succeeds. A boot of a second
    # makes the restore win its trials clearly (an instant boot can lose them under load, and `run` then starts cold).
    res = cli("build", "--name", owned_app, "--image", COUNTER_IMAGE, "-p", "8080", "--ready-http", "/healthz",
              "-e", "STARTUP_DELAY=1", "--json")
    assert res.returncode == 0, res.stderr
    assert containers_of(owned_app) == []
    assert list(staging.iterdir()) == []
    assert cli("run", owned_app, "--json").json["mode"] == "restored"


def test_prune_by_count_size_and_age(cli: Cli, owned_app: str) -> None:
    snaps = [build(cli, owned_app, "-e", f"V={i}")["snapshot"] for i in range(3)]  # oldest first
    size = cli("cache", "ls", owned_app, "--json").json["snapshots"][0]["size_bytes"]
    dry = cli("cache", "prune", "--keep", "1", "--dry-run", "--json").json
    assert set(dry["removed"]) >= set(snaps[:2]) and dry["dry_run"]
    assert len(cli("cache", "ls", owned_app, "--json").json["snapshots"]) == 3
    by_size = cli("cache", "prune", "--app", owned_app, "--max-size", f"{int(size * 2.5)}B", "--json").json
    assert by_size["removed"] == [snaps[0]] and by_size["kept"] == [snaps[2], snaps[1]]
    assert cli("cache", "prune", "--app", owned_app, "--older-than", "1h", "--json").json["removed"] == []
    time.sleep(1.1)
    aged = cli("cache", "prune", "--app", owned_app, "--older-than", "1s", "--json").json
    assert sorted(aged["removed"]) == sorted(snaps[1:])
    assert cli("cache", "ls", owned_app, "--json").json["snapshots"] == []
    bad = cli("cache", "prune", "--older-than", "soon")
    assert bad.returncode == 2 and "invalid --older-than 'soon'" in bad.stderr
    assert cli("cache", "prune").returncode == 2


# -- registry -------------------------------------------------------------------------------------------------------

def test_push_remove_pull_and_run_restored(tmp_path: Path, cli: Cli, owned_app: str,
                                           registry: RegistryServer) -> None:
    authfile = tmp_path / "auth.json"
    login(registry, authfile)
    env = {"REGISTRY_AUTH_FILE": str(authfile)}
    built = build(cli, owned_app)
    ref = f"{registry.address}/warmstart/{owned_app}"
    pushed = cli("push", built["snapshot"], ref, "--json", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert "warmstart: pushing" in pushed.stderr and "MB/s)" in pushed.stderr  # progress, off a terminal
    assert pushed.json["reference"] == f"{ref}:{owned_app}-{built['tag']}" and pushed.json["digest"]

    # Another machine: an empty cache, and no app record; run pulls on a local miss.
    other = Cli(tmp_path / "other-cache")
    res = other("run", owned_app, "--registry", pushed.json["reference"], "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert res.json["mode"] == "restored" and res.json["snapshot"] == built["snapshot"]
    assert http_json(res.json["ports"]["8080/tcp"])["count"] == 3

    assert cli("cache", "rm", owned_app).returncode == 0
    pulled = cli("pull", pushed.json["reference"], "--json", env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.json["snapshot"] == built["snapshot"]
    assert cli("run", owned_app, "--json").json["mode"] == "restored"


def test_wrong_password_is_a_clear_error_and_caches_nothing(tmp_path: Path, cli: Cli, owned_app: str,
                                                            registry: RegistryServer) -> None:
    built = build(cli, owned_app)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    login(registry, good)
    ref = f"{registry.address}/warmstart/{owned_app}:v1"
    assert cli("push", built["snapshot"], ref, env={"REGISTRY_AUTH_FILE": str(good)}).returncode == 0
    # podman login refuses a wrong password itself, so write the auth file by hand.
    import base64

    token = base64.b64encode(f"{registry.user}:wrong".encode()).decode()
    bad.write_text(json.dumps({"auths": {registry.address: {"auth": token}}}))
    other = Cli(tmp_path / "other")
    for args in (["pull", ref], ["push", built["snapshot"], ref]):
        res = (other if args[0] == "pull" else cli)(*args, env={"REGISTRY_AUTH_FILE": str(bad)})
        assert res.returncode == 1
        assert res.error.endswith("failed: authentication refused"), res.stderr
    assert other("cache", "ls", "--json").json["snapshots"] == []
    none = other("pull", ref, env={"REGISTRY_AUTH_FILE": str(tmp_path / "missing.json")})
    assert none.returncode == 1 and "needs credentials and none were found" in none.stderr


def test_pulled_snapshot_with_a_corrupted_blob_is_refused(tmp_path: Path, cli: Cli, owned_app: str,
                                                          registry: RegistryServer) -> None:
    authfile = tmp_path / "auth.json"
    login(registry, authfile)
    env = {"REGISTRY_AUTH_FILE": str(authfile)}
    built = build(cli, owned_app)
    ref = f"{registry.address}/warmstart/{owned_app}:corrupt"
    assert cli("push", built["snapshot"], ref, env=env).returncode == 0
    import requests

    oci = requests.get(f"http://{registry.address}/v2/warmstart/{owned_app}/manifests/corrupt", timeout=10,
                       auth=(registry.user, registry.password),
                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    title = "org.opencontainers.image.title"
    payload = next(lay for lay in oci["layers"] if lay["annotations"][title] != "manifest.json")
    digest = payload["digest"].removeprefix("sha256:")
    blob = registry.storage / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    with blob.open("r+b") as fh:  # the registry's copy of the snapshot's payload, damaged in place
        fh.seek(blob.stat().st_size // 2)
        fh.write(b"\x00" * 4096)
    other = Cli(tmp_path / "other")
    res = other("pull", ref, env=env)
    assert res.returncode == 1
    # Caught as it streams in: by the damaged file's hash (the blob's digest is checked at its end).
    assert "does not match the snapshot manifest: refused" in res.stderr, res.stderr
    assert other("cache", "ls", "--json").json["snapshots"] == []
    assert list((other.cache / ".staging").iterdir()) == []
    assert os.listdir(other.cache / "snapshots") == []


def test_pull_without_a_tag_takes_the_only_one_or_lists_them(tmp_path: Path, cli: Cli, owned_app: str,
                                                               registry: RegistryServer) -> None:
    authfile = tmp_path / "auth.json"
    login(registry, authfile)
    env = {"REGISTRY_AUTH_FILE": str(authfile)}
    built = build(cli, owned_app)
    repo = f"{registry.address}/warmstart/{owned_app}"
    assert cli("push", built["snapshot"], f"{repo}:one", env=env).returncode == 0
    other = Cli(tmp_path / "other-cache")
    pulled = other("pull", repo, "--json", env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.json["reference"] == f"{repo}:one"
    assert cli("push", built["snapshot"], f"{repo}:two", env=env).returncode == 0
    res = other("pull", repo, env=env)
    assert res.returncode == 1 and f"{repo} has 2 tags (one, two): give one as {repo}:TAG" in res.error


def test_credentials_come_from_a_docker_credential_helper(tmp_path: Path, cli: Cli, owned_app: str,
                                                          registry: RegistryServer) -> None:
    """docker's config names a credential helper for the registry (credHelpers): warmstart runs it with the
    helper protocol (`get`, the server on stdin, JSON on stdout), as docker does."""
    bin_dir, config_dir = tmp_path / "bin", tmp_path / "docker"
    bin_dir.mkdir()
    config_dir.mkdir()
    helper = bin_dir / "docker-credential-testvault"
    answer = json.dumps({"Username": registry.user, "Secret": registry.password})
    helper.write_text(f"""#!/bin/sh
read server
case "$server" in
  *{registry.address}) echo '{answer}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
""")
    helper.chmod(0o755)
    (config_dir / "config.json").write_text(json.dumps({"credHelpers": {registry.address: "testvault"}}))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "DOCKER_CONFIG": str(config_dir),
           "REGISTRY_AUTH_FILE": str(tmp_path / "none.json")}
    built = build(cli, owned_app)
    pushed = cli("push", built["snapshot"], f"{registry.address}/warmstart/{owned_app}:v1", env=env)
    assert pushed.returncode == 0, pushed.stderr

    (config_dir / "config.json").write_text(json.dumps({"credsStore": "missing"}))
    res = cli("push", built["snapshot"], f"{registry.address}/warmstart/{owned_app}:v2", env=env)
    assert res.returncode == 1 and "credential helper docker-credential-missing is not on PATH" in res.error


def _on_a_terminal(argv: list[str], env: dict[str, str], answer: bytes) -> str:
    """Run argv on a pseudo-terminal, answer its question, return everything it wrote."""
    import pty
    import select

    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    seen, answered = b"", False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        seen += chunk
        if not answered and b"[y/N]" in seen:
            os.write(leader, answer + b"\n")
            answered = True
    os.close(leader)
    proc.wait(timeout=60)
    return seen.decode(errors="replace")


def test_prune_shows_what_it_would_remove_and_asks_on_a_terminal(cli: Cli, owned_app: str) -> None:
    snaps = [build(cli, owned_app, "-e", f"V={i}")["snapshot"] for i in range(2)]  # oldest first
    argv = cli.argv("cache", "prune", "--app", owned_app, "--keep", "1")
    declined = _on_a_terminal(argv, cli.env(), b"n")
    assert f"would remove {snaps[0]}" in declined and "remove 1 snapshots" in declined
    assert "nothing removed" in declined
    assert len(cli("cache", "ls", owned_app, "--json").json["snapshots"]) == 2
    accepted = _on_a_terminal(argv, cli.env(), b"y")
    assert f"removed {snaps[0]}" in accepted
    assert [s["snapshot"] for s in cli("cache", "ls", owned_app, "--json").json["snapshots"]] == [snaps[1]]
