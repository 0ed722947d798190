"""Spec-file apps against real podman + CRIU: probe kinds, warm-up, hooks, the Python helper, trim."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import COUNTER_IMAGE, Cli, containers_of

pytestmark = pytest.mark.podman


def spec(tmp_path: Path, app: str, body: str, *, env: str = "STARTUP_DELAY = \"0.5\"", ports: str = "[8080]") -> Path:
    """The app's spec; restored whenever the snapshot works (always_restore): these tests are about the spec's
    features, and an app booting in 0.5 s is one the restore policy may fairly judge as fast cold."""
    path = tmp_path / "warmstart.toml"
    policy = "" if "always_restore" in body else "always_restore = true\n"
    path.write_text(f'[apps.{app}]\nimage = "{COUNTER_IMAGE}"\nports = {ports}\nenv = {{ {env} }}\n{policy}{body}')
    return path


def get(address: str, path: str = "/") -> dict:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def in_container(name: str, *cmd: str) -> str:
    return subprocess.run(["podman", "exec", name, *cmd], capture_output=True, text=True, check=True).stdout


GOOD_PROBES = {
    "http": 'ready = { http = "/healthz", status = "200", body = "\\"ready\\": true", successes = 3 }',
    "tcp": "ready = { tcp = 8080 }",
    "exec": "ready = { exec = \"python3 -c 'import urllib.request as u; "
            "u.urlopen(\\\"http://127.0.0.1:8080/healthz\\\")'\" }",
    "log": 'ready = { log = "counter listening on :8080" }',
}
BROKEN_PROBES = {
    "http": ('ready = { http = "/healthz", port = 8080, body = "nope", timeout = "2s" }', "body did not match 'nope'"),
    "tcp": ('ready = { tcp = 8081, timeout = "2s" }', "ConnectionRefusedError"),
    "exec": ('ready = { exec = "false", timeout = "2s" }', "last attempt: exit code 1"),
    "log": ('ready = { log = "never printed", timeout = "2s" }', "last attempt: no matching log line yet"),
}


@pytest.mark.parametrize("kind", list(GOOD_PROBES))
def test_each_probe_kind_passes_on_a_real_service(tmp_path: Path, cli: Cli, owned_app: str, kind: str) -> None:
    res = cli("build", "--name", owned_app, "-f", str(spec(tmp_path, owned_app, GOOD_PROBES[kind])), "--json")
    assert res.returncode == 0, res.stderr
    assert res.json["app"] == owned_app and res.json["size_bytes"] > 0
    assert res.json["restored_ready_seconds"] > 0  # the trial restore passed the same probe
    assert containers_of(owned_app) == []
    # After a restore the same probe passes (a log probe cannot see the app's ready line again: it waits for the
    # init's "restored" line instead, which only a completed restore prints).
    out = cli("run", owned_app, "-f", str(spec(tmp_path, owned_app, GOOD_PROBES[kind] + "\nalways_restore = true\n")),
              "--json")
    assert out.returncode == 0, out.stderr
    assert out.json["mode"] == "restored", out.json.get("reason")
    assert cli("stop", out.json["name"]).returncode == 0


@pytest.mark.parametrize("kind", list(BROKEN_PROBES))
def test_each_probe_kind_times_out_clearly(tmp_path: Path, cli: Cli, owned_app: str, kind: str) -> None:
    body, seen = BROKEN_PROBES[kind]
    res = cli("build", "--name", owned_app, "-f", str(spec(tmp_path, owned_app, body, ports="[8080, 8081]")))
    assert res.returncode == 1
    first = res.error
    assert "not ready after 2s" in first and seen in first and "container status: running" in first, first
    assert containers_of(owned_app) == []
    assert not (cli.cache / "snapshots" / owned_app).exists()


def test_warmup_traffic_is_in_the_snapshot(tmp_path: Path, cli: Cli, owned_app: str) -> None:
    body = ('ready = { http = "/healthz" }\n'
            'warmup = { requests = ["GET /", { method = "POST", path = "/warm", body = "{}" }], repeat = 10 }\n')
    built = cli("build", "--name", owned_app, "-f", str(spec(tmp_path, owned_app, body)), "--json")
    assert built.returncode == 0, built.stderr
    assert built.json["warmup_requests"] == 20
    out = cli("run", owned_app, "--json").json
    assert out["mode"] == "restored"
    # 1 build probe + 20 warm-up requests, then 1 probe after restore and this request.
    assert get(out["ports"]["8080/tcp"])["count"] == 23
    assert get(out["ports"]["8080/tcp"], "/events")["events"].count("POST /warm") == 10


def test_hooks_run_in_order_around_the_snapshot(tmp_path: Path, cli: Cli, owned_app: str) -> None:
    body = """ready = { http = "/healthz" }
[[apps.APP.hooks.before_checkpoint]]
exec = "sh -c 'echo one >> /tmp/hooks'"
[[apps.APP.hooks.before_checkpoint]]
http = "POST /two"
[[apps.APP.hooks.before_checkpoint]]
exec = "sh -c 'echo three >> /tmp/hooks'"
[[apps.APP.hooks.after_restore]]
exec = "sh -c 'echo four >> /tmp/hooks'"
""".replace("APP", owned_app)
    built = cli("build", "--name", owned_app, "-f", str(spec(tmp_path, owned_app, body)), "--json")
    assert built.returncode == 0, built.stderr
    assert built.json["hooks"] == ["exec sh -c 'echo one >> /tmp/hooks'", "HTTP POST /two",
                                   "exec sh -c 'echo three >> /tmp/hooks'"]
    out = cli("run", owned_app, "--json").json
    assert out["mode"] == "restored"
    assert in_container(out["name"], "cat", "/tmp/hooks").split() == ["one", "three", "four"]
    assert get(out["ports"]["8080/tcp"], "/events")["events"] == ["POST /two"]
    cold = cli("run", owned_app, "--cold", "--json").json  # hooks belong to snapshots, not to cold starts
    assert subprocess.run(["podman", "exec", cold["name"], "test", "-e", "/tmp/hooks"]).returncode == 1


def test_failing_before_checkpoint_hook_fails_the_build_and_leaves_nothing(
    tmp_path: Path, cli: Cli, owned_app: str
) -> None:
    body = (f'ready = {{ http = "/healthz" }}\n[[apps.{owned_app}.hooks.before_checkpoint]]\n'
            'exec = "sh -c \'echo closing failed; exit 4\'"\n')
    res = cli("build", "--name", owned_app, "-f", str(spec(tmp_path, owned_app, body)))
    assert res.returncode == 1
    assert res.error == (
        "warmstart: error: before_checkpoint hook #1 (exec sh -c 'echo closing failed; exit 4') exited with 4")
    assert "out: closing failed" in res.stderr
    assert containers_of(owned_app) == []
    assert not (cli.cache / "snapshots" / owned_app).exists()
    assert not (cli.cache / "apps" / f"{owned_app}.json").exists()
    assert list((cli.cache / ".staging").iterdir()) == []


def test_failing_after_restore_hook_falls_back_cold(tmp_path: Path, cli: Cli, owned_app: str) -> None:
    body = f'ready = {{ http = "/healthz" }}\n[[apps.{owned_app}.hooks.after_restore]]\nexec = "false"\n'
    path = spec(tmp_path, owned_app, body)
    assert cli("build", "--name", owned_app, "-f", str(path)).returncode == 0
    refused = cli("run", owned_app, "-f", str(path), "--no-fallback")
    assert refused.returncode == 1 and "after_restore hook #1 (exec false) exited with 1" in refused.stderr
    assert containers_of(owned_app) == []
    out = cli("run", owned_app, "-f", str(path), "--json").json
    assert out["mode"] == "cold" and "after_restore hook #1 (exec false) exited with 1" in out["reason"]
    assert containers_of(owned_app) == [out["name"]]  # the restored instance whose hook failed is gone


def test_python_helper_reseeds_clones_and_runs_registered_hooks(tmp_path: Path, cli: Cli, owned_app: str) -> None:
    body = 'python_helper = true\nready = { http = "/healthz" }\n'
    path = spec(tmp_path, owned_app, body, env='STARTUP_DELAY = "0.5", USE_HELPER = "1"')
    assert cli("build", "--name", owned_app, "-f", str(path)).returncode == 0
    a, b = (cli("run", owned_app, "--json").json for _ in range(2))
    assert a["mode"] == b["mode"] == "restored"
    ra, rb = get(a["ports"]["8080/tcp"], "/random"), get(b["ports"]["8080/tcp"], "/random")
    assert ra["random"] != rb["random"] and ra["uuid"] != rb["uuid"]
    assert get(a["ports"]["8080/tcp"], "/events")["events"] == ["before_checkpoint", "after_restore"]


def test_without_the_helper_clones_share_random_state(tmp_path: Path, cli: Cli, owned_app: str) -> None:
    """The failure the helper exists for: same snapshot, same `random` sequence."""
    path = spec(tmp_path, owned_app, 'ready = { http = "/healthz" }\n')
    assert cli("build", "--name", owned_app, "-f", str(path)).returncode == 0
    a, b = (cli("run", owned_app, "--json").json for _ in range(2))
    ra, rb = get(a["ports"]["8080/tcp"], "/random"), get(b["ports"]["8080/tcp"], "/random")
    assert ra["random"] == rb["random"]
    assert ra["uuid"] != rb["uuid"]  # uuid4 reads the kernel's generator


def test_python_trim_runs_through_the_helper_and_reports_sizes(tmp_path: Path, cli: Cli, owned_app: str) -> None:
    body = 'python_helper = true\ntrim = { python = true }\nready = { http = "/healthz" }\n'
    path = spec(tmp_path, owned_app, body, env='USE_HELPER = "1"')
    res = cli("build", "--name", owned_app, "-f", str(path), "--compare-trim", "--json")
    assert res.returncode == 0, res.stderr
    assert res.json["trim"] == {"python": "gc.collect + malloc_trim(0)"}
    assert res.json["untrimmed_size_bytes"] > 0 and res.json["size_bytes"] > 0
    assert cli("run", owned_app, "--json").json["mode"] == "restored"


def test_build_without_name_builds_every_app_in_the_file(tmp_path: Path, cli: Cli, owned_app: str) -> None:
    other = f"{owned_app}-b"
    path = tmp_path / "warmstart.toml"
    path.write_text(
        f'[apps.{owned_app}]\nimage = "{COUNTER_IMAGE}"\nports = [8080]\nready = {{ tcp = 8080 }}\n'
        f'[apps.{other}]\nimage = "{COUNTER_IMAGE}"\nports = [8080]\nready = {{ http = "/healthz" }}\n'
    )
    res = subprocess.run([*cli.argv("build", "--json")], cwd=tmp_path, capture_output=True, text=True,
                         env=cli.env())
    assert res.returncode == 0, res.stderr
    assert [b["app"] for b in json.loads(res.stdout)["builds"]] == [owned_app, other]
    # flags override the file: same app, another probe
    over = cli("build", "-f", str(path), "--name", other, "--ready-http", "/", "-e", "X=1", "--json")
    assert over.returncode == 0, over.stderr
    manifest = json.loads((Path(over.json["snapshot_path"]) / "manifest.json").read_text())
    assert manifest["spec"]["probe"]["path"] == "/" and manifest["spec"]["env"] == ["X"]
    bad = cli("build", "-f", str(path), "--image", "x")
    assert bad.returncode == 2 and "need --name" in bad.stderr


def test_jvm_trim_makes_the_snapshot_smaller(tmp_path: Path, cli: Cli, owned_app: str) -> None:
    """A full GC (jcmd GC.run) before the checkpoint: the catalogue's loading garbage is not dumped. (The JVM helper,
    on by default, runs a GC before the dump too: off here, so the comparison is jcmd's alone.)"""
    path = tmp_path / "warmstart.toml"
    path.write_text(f"""[apps.{owned_app}]
image = "localhost/warmstart-example-jvm-catalog:latest"
ports = [8080]
env = {{ CATALOG_SIZE = "150000" }}
ready = {{ http = "/healthz", timeout = "120s" }}
warmup = {{ requests = ["GET /search?q=eco"], repeat = 20 }}
trim = {{ jvm = true }}
jvm_helper = false
""")
    res = cli("build", "--name", owned_app, "-f", str(path), "--compare-trim", "--json")
    assert res.returncode == 0, res.stderr
    out = res.json
    assert out["trim"] == {"jvm": "full GC (jcmd GC.run)"}
    assert out["untrimmed_size_bytes"] > 1.3 * out["size_bytes"], out
    restored = cli("run", owned_app, "--json").json
    assert restored["mode"] == "restored"
    assert get(restored["ports"]["8080/tcp"], "/stats")["products"] == 150000
