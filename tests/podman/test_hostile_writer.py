"""What a writer of the cache or of the engine's records must not get, against real podman, runc and CRIU (#29):
a snapshot's file layer never reaches a volume of the launch, and a restored or pooled instance's secrets are in
none of the engine's records (`podman inspect`, its stored container config) nor on any command line."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import ENGINES, Cli, containers_of
from tests.helpers import build, http_json, reseal
from tests.podman.test_serve import Front

pytestmark = pytest.mark.podman


def test_a_file_layer_member_under_a_mounted_path_never_reaches_the_host_volume(
    cli: Cli, owned_app: str, tmp_path: Path
) -> None:
    """The snapshot's file layer (rootfs.tar: files the app changed, put back before CRIU runs) is unpacked only on
    the container's own filesystem: a member that lies under a volume of this launch would write through to the
    host. The init refuses the layer, the launch starts cold with that reason, and the host's file is unchanged."""
    built = build(cli, owned_app)
    snap = Path(built["snapshot_path"])
    layer = snap / "rootfs.tar"
    with tarfile.open(layer, "a" if layer.exists() else "w") as tar:
        data = b"planted by the snapshot\n"
        info = tarfile.TarInfo("data/greeting")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest["files"].setdefault("rootfs.tar", {})
    (snap / "manifest.json").write_text(json.dumps(manifest))
    reseal(snap)  # the writer is trusted for the bytes here: the layer itself must not reach the volume
    volume = tmp_path / "data"
    volume.mkdir()
    (volume / "greeting").write_text("hello from the host\n")
    out = cli("run", owned_app, "-v", f"{volume}:/data", "--json")
    assert out.returncode == 0, out.stderr
    assert out.json["mode"] == "cold"
    assert "lies on the mount /data" in out.json["reason"] and "\n" not in out.json["reason"]
    assert (volume / "greeting").read_text() == "hello from the host\n"
    assert sorted(p.name for p in volume.iterdir()) == ["greeting"]
    assert cli("stop", out.json["name"]).returncode == 0
    assert containers_of(owned_app) == []


COUNTER = "localhost/warmstart-example-counter:latest"


def _engine_records_holding(name: str, needles: list[bytes], engine: str = "podman") -> list[str]:
    """Where the engine keeps what it knows of a container: its inspect output and the configs it stored
    (podman: the runtime config under userdata/; docker: config.v2.json and hostconfig.json)."""
    binary = "/usr/bin/docker" if engine == "docker" else "podman"
    inspect = subprocess.run([binary, "container", "inspect", name], capture_output=True, check=True).stdout
    found = [f"{engine} inspect"] if any(n in inspect for n in needles) else []
    cid = json.loads(inspect)[0]["Id"]
    stored = (Path("/var/lib/docker/containers").glob(f"{cid}/*.json") if engine == "docker"
              else Path("/var/lib/containers/storage").glob(f"overlay-containers/{cid}/userdata/*"))
    for path in stored:
        if path.is_file() and any(n in path.read_bytes() for n in needles):
            found.append(str(path))
    return found


def _secret_spec(tmp_path: Path, app: str) -> Path:
    """The counter with a declared secret and an after-restore exec hook that records the value's digest."""
    spec = tmp_path / "warmstart.toml"
    spec.write_text(
        f'[apps.{app}]\nimage = "{COUNTER}"\nports = [8080]\nready = {{ http = "/healthz" }}\n'
        'python_helper = true\nsecret_env = ["API_KEY"]\nalways_restore = true\nenv = { USE_HELPER = "1" }\n'
        f'[[apps.{app}.hooks.after_restore]]\n'
        'exec = "sh -c \'test -n \\"$API_KEY\\" && printf %s \\"$API_KEY\\" | sha256sum > /tmp/hook-saw\'"\n')
    return spec


@pytest.mark.parametrize("engine", ENGINES)
def test_a_restored_instance_keeps_its_secret_out_of_the_engines_records(
    tmp_path: Path, cache: Path, owned_app: str, engine: str
) -> None:
    """The init receives a restored sandbox's secrets by fd (podman: a memfd at fd 3; docker: its stdin, attached
    before the start), not in its environment: the engine's inspect output and stored configs show the name,
    never the value; the restored app reads it and an after-restore exec hook gets it too."""
    cli = Cli(cache, engine=engine)
    secret = f"sk-test-{uuid.uuid4().hex}"
    env = {"API_KEY": secret}
    built = cli("build", "--name", owned_app, "-f", str(_secret_spec(tmp_path, owned_app)), env=env)
    assert built.returncode == 0, built.stderr
    digest = hashlib.sha256(secret.encode()).hexdigest()
    out = cli("run", owned_app, "--json", env=env)
    assert out.returncode == 0 and out.json["mode"] == "restored", out.stderr
    assert http_json(out.json["ports"]["8080/tcp"], "/secret")["sha256"] == digest
    hook = cli("exec", out.json["name"], "--", "cat", "/tmp/hook-saw")
    assert hook.stdout.split()[:1] == [digest], hook.stderr
    assert _engine_records_holding(out.json["name"], [secret.encode(), secret.encode("utf-16-le")], engine) == []
    assert cli("stop", out.json["name"]).returncode == 0
    assert containers_of(owned_app) == []


def test_a_pooled_instance_keeps_its_secret_out_of_the_engines_records(
    tmp_path: Path, cli: Cli, owned_app: str
) -> None:
    """`serve` pre-starts a sandbox for the next request with the secret handed over the same way: the pooled
    container's records hold no value, and the instance it becomes answers with the secret."""
    secret = f"sk-test-{uuid.uuid4().hex}"
    env = {"API_KEY": secret}
    assert cli("build", "--name", owned_app, "-f", str(_secret_spec(tmp_path, owned_app)), env=env).returncode == 0
    front = Front(cli, owned_app, env=env)
    try:
        pooled = front.wait_for("pooled")["instance"]
        assert _engine_records_holding(pooled, [secret.encode(), secret.encode("utf-16-le")]) == []
        status, body = front.get("/secret")
        assert status == 200 and json.loads(body)["sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    finally:
        assert front.stop() == 0
    assert containers_of(owned_app) == []
