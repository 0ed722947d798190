"""`build` and `run` against real podman, runc and CRIU, with real HTTP probes."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import COUNTER_IMAGE, ENGINES, WARMSTART, Cli, containers_of
from tests.helpers import build, corrupt_image, free_port, http_json, reseal, snapshot_holds_token

pytestmark = pytest.mark.podman


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cli(cache: Path, engine_name: str) -> Cli:
    """These behaviours are the contract of every engine: each test runs against podman and docker."""
    return Cli(cache, engine=engine_name)


@pytest.fixture(scope="module", params=ENGINES)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, str, dict]:
    """One snapshot per engine shared by the non-destructive tests of this module."""
    import uuid

    cli = Cli(tmp_path_factory.mktemp("cache") / "c", engine=request.param)
    app = f"t{uuid.uuid4().hex[:10]}"
    result = build(cli, app, "-e", "API_KEY=s3cret-value")
    yield cli, app, result
    for name in containers_of(app):
        cli("stop", name)


def test_build_stores_a_private_snapshot_and_leaves_no_container(built: tuple[Cli, str, dict]) -> None:
    cli, app, result = built
    assert {"app", "snapshot", "image", "size_bytes", "build_seconds"} <= result.keys()
    assert result["snapshot"] == f"{app}:{result['key'][:12]}" and not result["reused"]
    assert result["app"] == app and result["image"] == COUNTER_IMAGE and result["size_bytes"] > 1_000_000
    assert containers_of(app) == []
    snap = Path(result["snapshot_path"])
    assert sorted(p.name for p in snap.iterdir()) == [".verified", "images", "manifest.json", "rootfs.tar",
                                                      "sandbox.json"]
    assert any(p.name.startswith("pages-") for p in (snap / "images").iterdir())  # CRIU images, unpacked
    for path in [cli.cache, snap.parent, snap, snap / "images"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in snap.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    manifest = json.loads((snap / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert manifest["spec"]["env"] == ["API_KEY", "STARTUP_DELAY"]
    assert "s3cret-value" not in (snap / "manifest.json").read_text()
    assert list((cli.cache / ".staging").iterdir()) == []


def test_restored_instance_continues_the_snapshot_state(built: tuple[Cli, str, dict]) -> None:
    cli, app, result = built
    port = free_port()
    res = cli("run", app, "-p", f"127.0.0.1:{port}:8080", "--json")
    assert res.returncode == 0, res.stderr
    out = res.json
    assert out["mode"] == "restored" and out["app"] == app and out["snapshot"] == result["snapshot"]
    assert out["container"] and out["ready_seconds"] > 0 and "reason" in out
    body = http_json(f"127.0.0.1:{port}")
    assert snapshot_holds_token(Path(result["snapshot_path"]), body["boot_token"])
    # 1 build probe before the checkpoint + 1 probe after restore + this request: the count went on, not restarted.
    assert body["count"] == 3
    assert cli("stop", out["name"]).returncode == 0
    assert containers_of(app) == []


def test_two_instances_from_one_snapshot_serve_at_once(built: tuple[Cli, str, dict]) -> None:
    cli, app, result = built
    first = cli("run", app, "--json").json
    second = cli("run", app, "--json").json
    assert first["mode"] == second["mode"] == "restored"
    assert first["name"] != second["name"]
    a, b = http_json(first["ports"]["8080/tcp"]), http_json(second["ports"]["8080/tcp"])
    assert first["ports"] != second["ports"]
    assert a["boot_token"] == b["boot_token"] and a["count"] == b["count"] == 3
    assert http_json(first["ports"]["8080/tcp"])["count"] == 4  # each has its own counter
    ps = cli("ps", "--app", app, "--json").json["instances"]
    assert sorted(i["name"] for i in ps) == sorted([first["name"], second["name"]])
    assert {i["mode"] for i in ps} == {"restored"}
    stopped = cli("stop", "--app", app, "--json").json["stopped"]
    assert sorted(stopped) == sorted([first["name"], second["name"]])
    assert containers_of(app) == []


def test_run_without_snapshot_starts_cold_and_says_why(cli: Cli, owned_app: str) -> None:
    built = build(cli, owned_app)
    kept = cli.cache.parent / "kept-snapshot"  # a copy, to tell the snapshot's process from a fresh one
    subprocess.run(["cp", "-a", built["snapshot_path"], str(kept)], check=True)
    subprocess.run(["rm", "-rf", str(cli.cache / "snapshots" / owned_app)], check=True)

    refused = cli("run", owned_app, "--no-fallback")
    assert refused.returncode == 1
    assert "no snapshot" in refused.stderr and "--no-fallback" in refused.stderr
    assert containers_of(owned_app) == []

    res = cli("run", owned_app, "--json")
    assert res.returncode == 0, res.stderr
    out = res.json
    assert out["mode"] == "cold" and "no snapshot" in out["reason"]
    body = http_json(out["ports"]["8080/tcp"])
    assert not snapshot_holds_token(kept, body["boot_token"]) and body["count"] == 2  # fresh: 1 probe + this
    human = cli("run", owned_app)
    assert human.returncode == 0 and "cold" in human.stdout and "why cold: no snapshot" in human.stdout


def test_tampered_snapshot_is_quarantined_and_falls_back_cold(cli: Cli, owned_app: str) -> None:
    built = build(cli, owned_app)
    name = corrupt_image(Path(built["snapshot_path"]), "pages-1.img")
    res = cli("run", owned_app, "--json")
    assert res.returncode == 0, res.stderr
    assert res.json["mode"] == "cold"
    assert f"{name} does not match its sha256 in the manifest; quarantined to" in res.json["reason"]
    assert not Path(built["snapshot_path"]).exists()
    assert len(list((cli.cache / "quarantine").iterdir())) == 1

    rebuilt = build(cli, owned_app)  # the key is free again: a fresh snapshot
    corrupt_image(Path(rebuilt["snapshot_path"]), "pages-1.img")
    refused = cli("run", owned_app, "--no-fallback")
    assert refused.returncode == 1
    assert "does not match its sha256" in refused.stderr and "--no-fallback" in refused.stderr
    assert cli("cache", "prune", "--keep", "5", "--json").json["quarantine_removed"] == 2


def test_unrestorable_snapshot_falls_back_cold_or_fails_with_no_fallback(cli: Cli, owned_app: str) -> None:
    built = build(cli, owned_app)
    corrupt_image(Path(built["snapshot_path"]), "inventory.img")
    reseal(Path(built["snapshot_path"]))

    refused = cli("run", owned_app, "--no-fallback")
    assert refused.returncode == 1
    first_line = refused.error
    assert first_line.startswith("warmstart: error: restore of") and "--no-fallback" in first_line
    assert containers_of(owned_app) == []  # the failed restore left nothing

    res = cli("run", owned_app, "--json")
    assert res.returncode == 0, res.stderr
    out = res.json
    assert out["mode"] == "cold"
    assert f"restore from snapshot {built['snapshot']} failed" in out["reason"]
    assert http_json(out["ports"]["8080/tcp"])["count"] == 2
    assert containers_of(owned_app) == [out["name"]]


def test_never_ready_service_fails_build_with_diagnostics_and_leaves_nothing(cli: Cli, owned_app: str) -> None:
    res = cli("build", "--name", owned_app, "--image", COUNTER_IMAGE, "-p", "8080", "--ready-http", "/healthz",
              "-e", "NEVER_READY=1", "--ready-timeout", "3")
    assert res.returncode == 1
    first = res.error
    assert "not ready after 3s" in first and "GET /healthz" in first and "HTTP 503" in first
    assert "container status: running" in first
    assert "log: counter listening" in res.stderr  # the app's last log lines
    assert containers_of(owned_app) == []
    assert not (cli.cache / "snapshots" / owned_app).exists()
    assert list((cli.cache / ".staging").iterdir()) == []
    assert not (cli.cache / "apps" / f"{owned_app}.json").exists()


def test_app_that_exits_fails_build_at_once_with_its_exit_code(cli: Cli, owned_app: str) -> None:
    res = cli("build", "--name", owned_app, "--image", COUNTER_IMAGE, "-p", "8080", "--ready-tcp", "8080",
              "--ready-timeout", "60", "--", "python3", "-c", "print('boom'); raise SystemExit(3)")
    assert res.returncode == 1
    assert "exit code 3" in res.stderr and "boom" in res.stderr
    assert containers_of(owned_app) == []


def test_ctrl_c_during_build_removes_everything(cli: Cli, owned_app: str) -> None:

    env = cli.env()
    proc = subprocess.Popen(
        [WARMSTART, "build", "--name", owned_app, "--image", COUNTER_IMAGE, "-p", "8080", "--ready-http", "/healthz",
         "-e", "STARTUP_DELAY=60"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while not containers_of(owned_app) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert containers_of(owned_app), "the build container never appeared"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert containers_of(owned_app) == []
    assert list((cli.cache / ".staging").iterdir()) == []
    assert not (cli.cache / "snapshots" / owned_app).exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["build", "--name", "APP", "--image", "localhost/no-such-image:1", "-p", "8080", "--ready-http", "/"],
         1, "image 'localhost/no-such-image:1' not found locally"),
        (["build", "--name", "APP", "--image", COUNTER_IMAGE, "-p", "80x80", "--ready-http", "/"],
         2, "container port '80x80' is not a port number"),
        (["build", "--name", "APP", "--image", COUNTER_IMAGE, "-p", "8080", "--ready-http", "healthz"],
         2, "expected a path starting with '/'"),
        (["build", "--name", "Bad Name!", "--image", COUNTER_IMAGE, "-p", "8080", "--ready-http", "/"],
         2, "invalid app name"),
        (["build", "--name", "APP", "--image", COUNTER_IMAGE, "-p", "8080"], 2, "has no readiness probe"),
        (["run", "APP", "-p", "8080"], 2, "expected HOST_PORT:CONTAINER_PORT"),
        (["run", "APP", "-p", "99999:8080"], 2, "host port '99999' is not a port number"),
        (["run", "APP"], 1, "unknown app 'APP'"),
        (["stop", "not-ours"], 2, "not a warmstart instance: not-ours"),
    ],
)
def test_bad_input_gives_one_line_error_and_leaves_nothing(
    cli: Cli, owned_app: str, args: list[str], code: int, message: str
) -> None:
    res = cli(*[owned_app if a == "APP" else a for a in args])
    assert res.returncode == code, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("warmstart: error: ") and message.replace("APP", owned_app) in lines[0], res.stderr
    assert all(ln.startswith("  hint: ") for ln in lines[1:]), res.stderr
    assert containers_of(owned_app) == []
    assert not (cli.cache / "snapshots" / owned_app).exists()


def test_snapshot_of_another_engine_is_not_restored(tmp_path: Path, owned_app: str, engine_name: str) -> None:
    other = "docker" if engine_name == "podman" else "podman"
    cache = tmp_path / "c"
    built = build(Cli(cache, engine=other), owned_app)
    res = Cli(cache, engine=engine_name)("run", owned_app, "--json")
    assert res.returncode == 0, res.stderr
    assert res.json["mode"] == "cold"
    assert res.json["reason"] == f"snapshot {built['snapshot']} was made with {other}, not {engine_name}"


def test_unusable_cache_dir_is_a_clear_error(tmp_path: Path, owned_app: str) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    res = Cli(not_a_dir)("build", "--name", owned_app, "--image", COUNTER_IMAGE, "-p", "8080", "--ready-http", "/")
    assert res.returncode == 1
    assert res.error == f"warmstart: error: cache dir {not_a_dir} is not a directory"
    assert containers_of(owned_app) == []
