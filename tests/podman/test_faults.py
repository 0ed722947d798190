"""Faults and hostile input against the real CLI, podman, CRIU and a real registry on 127.0.0.1: crafted registry
artifacts built here, refs that try to leave the cache, a foreign-owned cache, interrupts during a restore, taken
ports, serve scale-out and hung connections. Each test asserts the exact refusal (or the cold fallback and its
reason), that nothing outside the cache changed, and that nothing was left running."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import COUNTER_IMAGE, Cli, containers_of
from tests.helpers import RegistryServer, build, free_port, http_json, login
from tests.podman.test_serve import Front

pytestmark = pytest.mark.podman


def tree(path: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(path)), p.stat().st_size if p.is_file() else -1) for p in path.rglob("*"))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    (d / "victim").mkdir(parents=True)
    (d / "victim" / "keep.txt").write_text("precious")
    return d


# -- refs that try to leave the cache --------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["cache", "rm", "app:../../../outside/victim"], "invalid tag '../../../outside/victim'"),
    (["cache", "inspect", "app:../../outside"], "invalid tag '../../outside'"),
    (["run", "app:../../../outside/victim"], "invalid tag '../../../outside/victim'"),
    (["run", ""], "invalid app name ''"),
    (["run", "x" * 5000], "invalid app name"),
    (["cache", "ls", "../outside"], "invalid app name '../outside'"),
    (["push", "app:../x", "127.0.0.1:1/a/b:c"], "invalid tag '../x'"),
])
def test_refs_that_would_leave_the_cache_are_refused(cli: Cli, outside: Path, args: list[str], message: str) -> None:
    before = tree(outside)
    res = cli(*args)
    assert res.returncode == 2, res.stderr
    assert res.error.startswith("warmstart: error: ") and message in res.stderr
    assert len(res.error) < 400  # one line, even for a 5000-character name
    assert tree(outside) == before


def test_a_port_the_app_does_not_publish_is_refused(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app)
    for mapping in ("8080/udp", "9999"):
        res = cli("run", owned_app, "-p", mapping if ":" in mapping else f"127.0.0.1::{mapping}")
        assert res.returncode == 2, res.stderr
        assert f"app '{owned_app}' publishes container ports [8080] (tcp)" in res.stderr
    assert containers_of(owned_app) == []


def test_prune_does_not_follow_a_symlinked_app_dir(cli: Cli, owned_app: str, outside: Path) -> None:
    built = build(cli, owned_app)
    planted = outside / "snapshots-elsewhere"
    (planted / "t1").mkdir(parents=True)
    (planted / "t1" / "manifest.json").write_text(
        (Path(built["snapshot_path"]) / "manifest.json").read_text().replace(built["tag"], "t1"))
    os.symlink(planted, cli.cache / "snapshots" / "zz-link")
    before = tree(outside)
    res = cli("cache", "prune", "--keep", "0", "--json")
    assert res.returncode == 0 and res.json["removed"] == [built["snapshot"]]
    assert tree(outside) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the cache to another user")
def test_cache_owned_by_another_user_is_refused_with_the_fix(tmp_path: Path, owned_app: str) -> None:
    cache = tmp_path / "shared-cache"
    (cache / "apps").mkdir(parents=True)
    (cache / "apps" / f"{owned_app}.json").write_text(json.dumps(
        {"record_version": 1, "spec": {"name": owned_app, "image": "localhost/warmstart-example-counter:latest",
                                       "volumes": ["/:/host"]}}))
    for p in (cache, cache / "apps", cache / "apps" / f"{owned_app}.json"):
        os.chown(p, 65534, 65534)
    os.chmod(cache, 0o777)
    res = Cli(cache)("run", owned_app)
    assert res.returncode == 1
    assert "cache dir refused:" in res.stderr and "is owned by uid 65534" in res.stderr
    assert "hint: snapshots are restored as they are found" in res.stderr
    assert containers_of(owned_app) == []


# -- crafted registry artifacts ---------------------------------------------------------------------------------------

def _push_raw(reg: RegistryServer, repo: str, tag: str, *, config_media: str,
              layers: list[tuple[bytes, str, dict[str, str]]], declared: dict[int, int] | None = None) -> str:
    """Push an OCI manifest exactly as given, through the distribution API (no client to tidy it up); `declared`:
    layer index -> the size its descriptor claims instead of the real one."""
    s = requests.Session()
    s.auth = (reg.user, reg.password)
    base = f"http://{reg.address}/v2/{repo}"

    def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        loc = s.post(f"{base}/blobs/uploads/", timeout=10).headers["Location"]
        url = loc if loc.startswith("http") else f"http://{reg.address}{loc}"
        s.put(url, params={"digest": digest}, data=data, timeout=10).raise_for_status()
        return digest

    config = b"{}"
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config_media, "digest": blob(config), "size": len(config)},
        "layers": [{"mediaType": media, "digest": blob(data), "size": (declared or {}).get(i, len(data)),
                    "annotations": ann} for i, (data, media, ann) in enumerate(layers)],
    }
    s.put(f"{base}/manifests/{tag}", data=json.dumps(manifest), timeout=10,
          headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}).raise_for_status()
    return f"{reg.address}/{repo}:{tag}"


CONFIG = "application/vnd.warmstart.snapshot.config.v1+json"
TITLE = "org.opencontainers.image.title"


def _snapshot_layers(manifest: dict, checkpoint: bytes, titles: tuple[str, str] = ("manifest.json", "checkpoint.tar")
                     ) -> list[tuple[bytes, str, dict[str, str]]]:
    return [(json.dumps(manifest).encode(), "application/vnd.warmstart.manifest.v1+json", {TITLE: titles[0]}),
            (checkpoint, "application/vnd.warmstart.checkpoint.v1.tar", {TITLE: titles[1]})]


@pytest.fixture
def real_snapshot(cli: Cli, owned_app: str) -> tuple[dict, bytes]:
    """A real container-mode snapshot: its manifest and the engine's archive, to craft artifacts from."""
    built = build(cli, owned_app, "--mode", "container")
    path = Path(built["snapshot_path"])
    return json.loads((path / "manifest.json").read_text()), (path / "checkpoint.tar").read_bytes()


def _transport(snapshot: Path, manifest: dict, extra: tarfile.TarInfo | None = None, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in sorted(manifest["files"]):
            tar.add(snapshot / name, arcname=name)
        if extra is not None:
            tar.addfile(extra, io.BytesIO(data) if extra.isfile() else None)
    return buf.getvalue()


@pytest.mark.parametrize("case, message", [
    ("member-traversal", "holds '../../../outside/escape', which its manifest does not list as a file"),
    ("member-symlink", "holds 'images/pages-1.img', which its manifest does not list as a file"),
    ("member-missing", "lacks ['sandbox.json']"),
])
def test_crafted_sandbox_transports_are_refused(
        tmp_path: Path, cli: Cli, owned_app: str, registry: RegistryServer,  # noqa: F811
        outside: Path, case: str, message: str) -> None:
    built = build(cli, owned_app)
    path = Path(built["snapshot_path"])
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["engine"]["mode"] == "sandbox"
    if case == "member-traversal":
        extra = tarfile.TarInfo("../../../outside/escape")
        extra.size = 4
        payload = _transport(path, manifest, extra, b"evil")
    elif case == "member-symlink":
        manifest_files = dict(manifest["files"])
        manifest["files"] = {k: v for k, v in manifest_files.items() if k != "images/pages-1.img"}
        link = tarfile.TarInfo("images/pages-1.img")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        payload = _transport(path, manifest, link)
        manifest["files"] = manifest_files
    else:
        files = dict(manifest["files"])
        manifest["files"] = {k: v for k, v in files.items() if k != "sandbox.json"}
        payload = _transport(path, manifest)
        manifest["files"] = files
    ref = _push_raw(registry, f"crafted/{owned_app}", case, config_media=CONFIG, layers=[
        (json.dumps(manifest).encode(), "application/vnd.warmstart.manifest.v1+json", {TITLE: "manifest.json"}),
        (payload, "application/vnd.warmstart.snapshot.v1.tar", {TITLE: "snapshot.tar"})])
    authfile = tmp_path / "auth.json"
    login(registry, authfile)
    other = Cli(tmp_path / "other")
    before = tree(outside)
    res = other("pull", ref, env={"REGISTRY_AUTH_FILE": str(authfile)})
    assert res.returncode == 1 and message in res.stderr, res.stderr
    assert tree(outside) == before
    assert other("cache", "ls", "--json").json["snapshots"] == []
    assert list((other.cache / ".staging").iterdir()) == []


def test_sandbox_snapshot_round_trips_through_the_registry(
        tmp_path: Path, cli: Cli, owned_app: str, registry: RegistryServer) -> None:  # noqa: F811
    authfile = tmp_path / "auth.json"
    login(registry, authfile)
    env = {"REGISTRY_AUTH_FILE": str(authfile)}
    built = build(cli, owned_app)
    pushed = cli("push", built["snapshot"], f"{registry.address}/warmstart/{owned_app}", "--json", env=env)
    assert pushed.returncode == 0, pushed.stderr
    other = Cli(tmp_path / "other")
    res = other("run", owned_app, "--registry", pushed.json["reference"], "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert res.json["mode"] == "restored" and res.json["snapshot"] == built["snapshot"]
    assert http_json(res.json["ports"]["8080/tcp"])["count"] >= 2
    pulled = Path(other("cache", "inspect", built["snapshot"], "--json").json["path"])
    assert sorted(p.name for p in (pulled / "images").iterdir()) == sorted(
        p.name for p in (Path(built["snapshot_path"]) / "images").iterdir())
    assert list((cli.cache / ".staging").iterdir()) == []  # the push's transport tar is gone


@pytest.mark.parametrize("case, message", [
    ("tag-traversal", "invalid tag '../../../outside/victim'"),
    ("app-traversal", "invalid app name '../../outside'"),
    ("title-traversal", "found a layer titled '../../../outside/escape'"),
    ("not-ours", "is not a warmstart snapshot"),
    ("extra-file", "files: '../x' is not a plain file name"),
    ("empty-files", "files: does not list checkpoint.tar"),
    ("digest-mismatch", "does not match the snapshot manifest: refused"),
    ("understated-size", "runs past its declared 4096 bytes: refused"),  # cut off while streaming
    ("over-the-limit", "a pull takes here: refused"),
])
def test_crafted_artifacts_are_refused_and_write_nothing_outside(
        tmp_path: Path, cli: Cli, owned_app: str, registry: RegistryServer,  # noqa: F811
        real_snapshot: tuple[dict, bytes], outside: Path, case: str, message: str) -> None:
    manifest, checkpoint = real_snapshot
    titles = ("manifest.json", "checkpoint.tar")
    media = CONFIG
    if case == "tag-traversal":
        manifest["tag"] = "../../../outside/victim"
    elif case == "app-traversal":
        manifest["app"] = "../../outside"
    elif case == "title-traversal":
        titles = ("manifest.json", "../../../outside/escape")
    elif case == "not-ours":
        media = "application/vnd.oci.image.config.v1+json"
    elif case == "extra-file":
        manifest["files"]["../x"] = manifest["files"]["checkpoint.tar"]
    elif case == "empty-files":
        manifest["files"] = {}
    elif case == "digest-mismatch":
        manifest["files"]["checkpoint.tar"]["sha256"] = "0" * 64
    ref = _push_raw(registry, f"crafted/{owned_app}", case, config_media=media,
                    layers=_snapshot_layers(manifest, checkpoint, titles),
                    declared={1: 4096} if case == "understated-size" else None)
    limit = {"WARMSTART_MAX_ARTIFACT_SIZE": "1M"} if case == "over-the-limit" else {}
    authfile = tmp_path / "auth.json"
    login(registry, authfile)
    other = Cli(tmp_path / "other")
    before = tree(outside)
    for args in (["pull", ref], ["run", owned_app, "--registry", ref, "--no-fallback"]):
        res = other(*args, env={"REGISTRY_AUTH_FILE": str(authfile), **limit})
        assert res.returncode != 0 and message in res.stderr, res.stderr
    assert tree(outside) == before
    assert other("cache", "ls", "--json").json["snapshots"] == []
    assert list((other.cache / ".staging").iterdir()) == []
    assert containers_of(owned_app) == []


# -- interrupts during a restore ---------------------------------------------------------------------------------------

def _conmon_of(name: str) -> list[int]:
    """conmon processes serving a container of this name (a leaked restore keeps one)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"conmon") and name.encode() in cmd:
            found.append(int(pid))
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("delay", [0.1, 0.4, 0.7])  # before, around and during the restore
def test_interrupt_during_a_restore_leaves_no_container_and_no_process(
        cli: Cli, owned_app: str, sig: signal.Signals, delay: float) -> None:
    build(cli, owned_app)
    proc = subprocess.Popen(cli.argv("run", owned_app, "--json"), env=cli.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(delay)
    os.killpg(proc.pid, sig)  # as a terminal does: the whole group
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    if proc.returncode == 0:  # it finished before the signal: then the instance is ours to stop
        name = json.loads(out)["name"]
        assert cli("stop", name).returncode == 0
    elif err == "":  # still starting up: nothing was started, the exit is quiet (128 + signal, or the signal)
        assert proc.returncode in (128 + sig, -sig)
    else:
        assert proc.returncode == 130 and "interrupted" in err, err
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (containers_of(owned_app) or _conmon_of(f"ws-{owned_app}")):
        time.sleep(0.1)
    assert containers_of(owned_app) == []
    assert _conmon_of(f"ws-{owned_app}") == []


def test_an_interrupt_at_any_of_20_moments_of_a_first_launch_leaves_nothing_or_what_it_reported(
        cli: Cli, owned_app: str, tmp_path: Path) -> None:
    """A first launch in a fresh cache (no snapshot: a cold start, the app record written on the way), SIGINT at
    20 moments spread evenly over its whole length: each attempt either reported its instance (exit 0, which is
    then ours to stop) or was interrupted (130, or the signal before anything started) and left no container and no
    conmon behind."""
    spec = tmp_path / "warmstart.toml"
    spec.write_text(f'[apps.{owned_app}]\nimage = "{COUNTER_IMAGE}"\nports = [8080]\nready = {{ http = "/healthz" }}\n'
                    'env = { STARTUP_DELAY = "0.3" }\n')
    t0 = time.monotonic()
    whole = cli("run", owned_app, "-f", str(spec), "--json")
    length = time.monotonic() - t0
    assert whole.returncode == 0 and whole.json["mode"] == "cold", whole.stderr
    assert cli("stop", whole.json["name"]).returncode == 0
    outcomes = []
    for k in range(20):
        shutil.rmtree(cli.cache, ignore_errors=True)  # a fresh cache every time
        proc = subprocess.Popen(cli.argv("run", owned_app, "-f", str(spec), "--json"), env=cli.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        time.sleep(length * (k + 1) / 21)  # from start-up (imports) to the instance being ready
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert "Traceback" not in err
        outcomes.append(proc.returncode)
        if proc.returncode == 0:
            assert cli("stop", json.loads(out)["name"]).returncode == 0
        else:
            assert proc.returncode in (130, 128 + signal.SIGINT, -signal.SIGINT), (k, proc.returncode, err)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (containers_of(owned_app) or _conmon_of(f"ws-{owned_app}")):
            time.sleep(0.1)
        assert containers_of(owned_app) == [], (k, proc.returncode, err)
        assert _conmon_of(f"ws-{owned_app}") == [], (k, proc.returncode, err)
    assert any(code != 0 for code in outcomes)  # the moments did reach into the launch


# -- ports ------------------------------------------------------------------------------------------------------------

def test_a_host_port_another_instance_publishes_is_refused_before_anything_starts(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app)
    port = free_port()
    first = cli("run", owned_app, "-p", f"127.0.0.1:{port}:8080", "--json")
    assert first.returncode == 0, first.stderr
    second = cli("run", owned_app, "-p", f"127.0.0.1:{port}:8080", "--json")
    assert second.returncode == 2
    assert f"host port 127.0.0.1:{port}/tcp is already in use: choose another -p (nothing was started)" in second.stderr
    assert containers_of(owned_app) == [first.json["name"]]
    assert http_json(f"127.0.0.1:{port}")["count"] >= 1  # the first instance still answers


def test_concurrent_runs_on_one_host_port_one_wins_cleanly(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app)
    port = free_port()
    procs = [subprocess.Popen(cli.argv("run", owned_app, "-p", f"127.0.0.1:{port}:8080", "--json"), env=cli.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2, 2], results
    for code, _, err in results:
        if code == 2:
            assert "host port" in err and ("already in use" in err or "another warmstart launch" in err), err
    assert len(containers_of(owned_app)) == 1
    assert http_json(f"127.0.0.1:{port}")["count"] >= 1


def test_automatic_ports_of_concurrent_runs_differ(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app)
    procs = [subprocess.Popen(cli.argv("run", owned_app, "--json"), env=cli.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    addresses = [json.loads(o)["ports"]["8080/tcp"] for o, _ in outs]
    assert len(set(addresses)) == 4
    assert all(http_json(a)["count"] >= 1 for a in addresses)


# -- build: tags, orphans -------------------------------------------------------------------------------------------

def test_explicit_tag_is_honoured_when_the_key_already_exists(cli: Cli, owned_app: str) -> None:
    first = build(cli, owned_app)
    tagged = build(cli, owned_app, "--tag", "prod")
    assert tagged["tag"] == "prod" and not tagged["reused"] and tagged["key"] == first["key"]
    again = build(cli, owned_app, "--tag", "prod")
    assert again["reused"] and again["snapshot"] == f"{owned_app}:prod"
    assert cli("run", f"{owned_app}:prod", "--json").json["mode"] == "restored"


def test_mistyped_tag_is_an_error_not_a_cold_start(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app)
    res = cli("run", f"{owned_app}:no-such-tag")
    assert res.returncode == 1 and f"no snapshot {owned_app}:no-such-tag" in res.stderr
    assert "hint: tags of" in res.stderr
    assert containers_of(owned_app) == []


# -- serve ------------------------------------------------------------------------------------------------------------

def test_serve_scales_out_to_max_and_closes_hung_connections(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app)
    front = Front(cli, owned_app, "--max", "2", "--concurrency", "2", "--idle", "2", "--conn-idle", "1.5")
    try:
        hung = [socket.create_connection(("127.0.0.1", front.port), timeout=5) for _ in range(3)]  # never speak
        started = [front.wait_for("started", timeout=60) for _ in range(2)]
        assert {e["mode"] for e in started} == {"restored"} and started[-1]["instances"] == 2
        for s in hung:  # closed by the front after --conn-idle, not held forever
            s.settimeout(10)
            assert s.recv(1) == b""
            s.close()
        stopped = [front.wait_for("stopped", timeout=30) for _ in range(2)]  # and then they can idle away
        assert all(e["reason"].startswith("idle for") for e in stopped)
    finally:
        front.stop()
    assert containers_of(owned_app) == []


def test_a_chatty_apps_log_is_not_stored_in_the_snapshot(cli: Cli, owned_app: str) -> None:
    quiet = build(cli, owned_app)
    chatty = cli("build", "--name", owned_app, "--image", "localhost/warmstart-example-counter:latest", "-p", "8080",
                 "--ready-http", "/healthz", "--json", "--",
                 "sh", "-c", "yes 'a chatty log line of forty characters...' | head -c 8000000; "
                             "exec python3 -u /app/app.py")
    assert chatty.returncode == 0, chatty.stderr
    assert chatty.json["size_bytes"] < quiet["size_bytes"] + 2_000_000  # 8 MB written, at most 1 MiB kept
    assert cli("run", owned_app, "--json").json["mode"] == "restored"


def test_orphan_of_a_killed_build_is_swept_by_a_build_that_reuses(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app)
    proc = subprocess.Popen(cli.argv("build", "--name", owned_app, "--image",
                                     "localhost/warmstart-example-counter:latest",
                                     "-p", "8080", "--ready-http", "/healthz", "-e", "STARTUP_DELAY=60", "--json"),
                            env=cli.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not containers_of(owned_app) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert containers_of(owned_app), "the second build never started its container"
    proc.kill()
    proc.wait(timeout=30)
    assert containers_of(owned_app)  # the orphan
    reused = build(cli, owned_app)
    assert reused["reused"]
    assert containers_of(owned_app) == []


def test_env_values_never_appear_on_a_command_line(cli: Cli, owned_app: str, tmp_path: Path) -> None:
    """Any user can read every process's argv (`ps`): env values from the spec file, often secrets, must reach
    the engine another way."""
    import threading

    secret = f"s3cret-{owned_app}"
    spec = tmp_path / "warmstart.toml"
    spec.write_text(f'[apps.{owned_app}]\nimage = "localhost/warmstart-example-counter:latest"\nports = [8080]\n'
                    f'env = {{ API_KEY = "{secret}" }}\nsecret_env = ["API_KEY"]\nready = {{ http = "/healthz" }}\n'
                    'always_restore = true\n')  # a fast-booting app: restored whatever the trial measured
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for entry in os.listdir("/proc"):
                try:
                    argv = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if secret.encode() in argv:
                    seen.append(argv.replace(b"\0", b" ").decode(errors="replace")[:200])
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        built = cli("build", "--name", owned_app, "-f", str(spec), "--json").json
        out = cli("run", owned_app, "-f", str(spec), "--json").json
        cold = cli("run", owned_app, "-f", str(spec), "--cold", "--json").json
    finally:
        stop.set()
        watcher.join()
    assert out["mode"] == "restored" and cold["mode"] == "cold" and built["snapshot"]
    assert seen == []
    for name in (out["name"], cold["name"]):
        assert cli("stop", name).returncode == 0

