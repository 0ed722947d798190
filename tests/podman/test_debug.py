"""`warmstart debug`: a snapshot restored into an isolated instance (loopback only, none of the app's volumes, no
secrets), stopped before it runs, that a debugger attaches to; twice from one snapshot; its state is the
snapshot's once thawed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Cli, containers_of
from tests.helpers import build, http_json

pytestmark = pytest.mark.podman


def _state(pid: int) -> str:
    return next(ln.split()[1] for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("State"))


def test_a_debug_instance_is_stopped_isolated_and_holds_the_snapshots_state(
    cli: Cli, owned_app: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "greeting").write_text("production data\n")
    spec = tmp_path / "warmstart.toml"
    spec.write_text(f'[apps.{owned_app}]\nimage = "localhost/warmstart-example-counter:latest"\nports = [8080]\n'
                    f'ready = {{ http = "/healthz" }}\nvolumes = ["{data}:/data:ro"]\nalways_restore = true\n')
    assert cli("build", "-f", str(spec)).returncode == 0
    live = cli("run", owned_app, "--json").json  # a normal restore, for the snapshot's boot token
    token = http_json(live["ports"]["8080/tcp"])["boot_token"]
    assert cli("stop", live["name"]).returncode == 0

    first, second = (cli("debug", owned_app, "--json") for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    one, two = first.json, second.json
    assert one["name"] != two["name"] and one["app_pids"] and two["app_pids"]
    assert all(_state(pid) == "T" for pid in one["app_pids"] + two["app_pids"])  # not one instruction run
    modes = {i["name"]: i["mode"] for i in cli("ps", "--app", owned_app, "--json").json["instances"]}
    assert modes == {one["name"]: "debug", two["name"]: "debug"}

    def inside(*command: str) -> subprocess.CompletedProcess[str]:
        return cli("exec", one["name"], "--", *command)

    assert inside("ls", "/sys/class/net").stdout.split() == ["lo"]  # no network but loopback
    assert len(inside("cat", "/proc/net/route").stdout.strip().splitlines()) == 1  # the header: no route out
    assert inside("test", "-e", "/data/greeting").returncode != 0  # the app's volume is not mounted
    if shutil.which("gdb"):
        attached = subprocess.run(["gdb", "-p", str(one["app_pids"][0]), "-batch", "-ex", "info threads"],
                                  capture_output=True, text=True, timeout=120)
        assert f"LWP {one['app_pids'][0]}" in attached.stdout, attached.stdout + attached.stderr
        assert _state(one["app_pids"][0]) == "T"  # still stopped after the debugger detached

    resume = one["resume"].split(" -- ", 1)[1].split()
    assert inside(*resume).returncode == 0
    got = inside("python3", "-c", "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/')"
                                  ".read().decode())")
    assert json.loads(got.stdout)["boot_token"] == token  # the state at the checkpoint
    assert cli("stop", "--app", owned_app).returncode == 0
    assert containers_of(owned_app) == []


def test_debug_refuses_what_it_cannot_restore_stopped(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app, "--mode", "container")
    res = cli("debug", owned_app)
    assert res.returncode == 2 and "only sandbox snapshots can be restored stopped" in res.error
    missing = cli("debug", "nope")
    assert missing.returncode == 1 and "no snapshot 'nope'" in missing.error
    assert containers_of(owned_app) == []
