"""Instance verbs as docker and podman users know them, against real podman: logs, exec, ps -q, stop -t."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import BASE_IMAGE, Cli, containers_of
from tests.helpers import build

pytestmark = pytest.mark.podman


def test_logs_exec_ps_and_a_graceful_stop(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app)
    name = cli("run", owned_app, "--json").json["name"]
    assert cli("ps", "-q", "--app", owned_app).stdout.split() == [name]

    logs = cli("logs", name)
    assert logs.returncode == 0 and "warmstart-init: restored pid" in logs.stdout + logs.stderr
    assert "counter listening" not in logs.stdout + logs.stderr  # the build's boot line is not this instance's

    ran = cli("exec", name, "--", "sh", "-c", "echo from inside; exit 3")
    assert ran.returncode == 3 and ran.stdout.strip() == "from inside"

    for verb in (["logs", "not-ours"], ["exec", "not-ours", "--", "true"], ["stop", "-t", "5", "not-ours"]):
        refused = cli(*verb)
        assert refused.returncode == 2 and "not a warmstart instance: not-ours" in refused.stderr

    # -t: SIGTERM first; the init forwards it to the restored app, which ends by it (128 + 15), not by a kill.
    stopped = cli("stop", "-t", "10", name, "--json").json
    assert stopped == {"stopped": [name], "exit_codes": {name: 143}}
    assert containers_of(owned_app) == []


def test_stop_at_once_by_default(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app)
    name = cli("run", owned_app, "--json").json["name"]
    assert cli("stop", name, "--json").json == {"stopped": [name], "exit_codes": {name: None}}
    assert containers_of(owned_app) == []
    assert cli("stop", "-t", "-1", "--all").returncode == 2


def test_run_with_a_name_and_labels_and_a_name_that_is_taken(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app)
    name = f"shop-{owned_app}"
    out = cli("run", owned_app, "--name", name, "--label", "team=payments", "--json")
    assert out.returncode == 0, out.stderr
    assert out.json["name"] == name and out.json["mode"] == "restored"
    shown = cli("inspect", name, "--json").json
    assert shown["labels"]["team"] == "payments" and shown["snapshot"].startswith(f"{owned_app}:")
    assert name in [i["name"] for i in cli("ps", "--app", owned_app, "--json").json["instances"]]

    # A taken name is refused before anything starts, and the container that has it is left alone.
    again = cli("run", owned_app, "--name", name)
    assert again.returncode == 2 and f"a container named {name} already exists" in again.error
    stranger = f"not-ours-{owned_app}"
    subprocess.run(["podman", "run", "-d", "--name", stranger, "--label", f"io.warmstart.app={owned_app}",
                    BASE_IMAGE, "sleep", "60"], check=True, capture_output=True)
    try:
        taken = cli("run", owned_app, "--name", stranger)
        assert taken.returncode == 2 and "already exists" in taken.error
        assert subprocess.run(["podman", "container", "exists", stranger]).returncode == 0
        assert cli("stop", stranger).returncode == 2  # not one of ours: stop refuses it too
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", stranger], capture_output=True)
    assert cli("run", owned_app, "--label", "io.warmstart.app=x").returncode == 2
    assert cli("run", owned_app, "--name", "wsb-sneaky").returncode == 2
    assert cli("stop", name).returncode == 0
    assert containers_of(owned_app) == []


def test_progress_shows_on_a_terminal_with_elapsed_time_and_as_timestamped_lines_elsewhere(
    cli: Cli, owned_app: str
) -> None:
    import os
    import pty
    import re

    from tests.conftest import COUNTER_IMAGE

    argv = cli.argv("build", "--name", owned_app, "--image", COUNTER_IMAGE, "-p", "8080", "--ready-http", "/healthz",
                    "-e", "STARTUP_DELAY=1")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=cli.env(), close_fds=True)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    text = seen.decode(errors="replace")
    assert re.search(r"… \[\s*\d+\.\d+s\] waiting for HTTP GET /healthz", text), text
    assert re.search(r"… \[\s*\d+\.\d+s\] checkpointing", text), text
    assert "built snapshot" in text

    plain = cli("build", "--name", owned_app, "--image", COUNTER_IMAGE, "-p", "8080", "--ready-http", "/healthz",
                "-e", "STARTUP_DELAY=1", "--force")
    assert plain.returncode == 0
    assert re.search(r"^\d\d:\d\d:\d\d warmstart: checkpointing$", plain.stderr, re.MULTILINE), plain.stderr
    assert "…" not in plain.stderr and plain.stdout.startswith("built snapshot")
    assert containers_of(owned_app) == []


def test_ps_shows_this_caches_instances_unless_asked_for_all(cli: Cli, owned_app: str, tmp_path: Path) -> None:
    build(cli, owned_app)
    out = cli("run", owned_app, "--json").json
    other = Cli(tmp_path / "other-cache")
    assert [i["name"] for i in cli("ps", "--app", owned_app, "--json").json["instances"]] == [out["name"]]
    assert other("ps", "--app", owned_app, "--json").json["instances"] == []
    assert [i["name"] for i in other("ps", "--app", owned_app, "--all-caches", "--json").json["instances"]] == [
        out["name"]]
    assert cli("ps", "--app", owned_app, "--format", "json").json == cli("ps", "--app", owned_app, "--json").json
    assert cli("stop", out["name"]).returncode == 0


def test_run_with_memory_and_cpu_limits(cli: Cli, owned_app: str) -> None:
    import json

    build(cli, owned_app)
    out = cli("run", owned_app, "--memory", "256M", "--cpus", "0.5", "--json")
    assert out.returncode == 0, out.stderr
    assert out.json["mode"] == "restored"  # CRIU restores into the limited container
    host = json.loads(subprocess.run(["podman", "container", "inspect", out.json["name"]], capture_output=True,
                                     text=True, check=True).stdout)[0]["HostConfig"]
    assert host["Memory"] == 256 * 1024 * 1024 and host["NanoCpus"] == 500_000_000
    assert cli("stop", out.json["name"]).returncode == 0
    bad = cli("run", owned_app, "--memory", "256")
    assert bad.returncode == 2 and "expected a number with a unit" in bad.error
    assert cli("run", owned_app, "--cpus", "0").returncode == 2
    assert containers_of(owned_app) == []


def test_run_with_an_extra_volume(cli: Cli, owned_app: str, tmp_path: Path) -> None:
    build(cli, owned_app)
    data = tmp_path / "data"
    data.mkdir()
    (data / "greeting").write_text("hello from the host\n")
    out = cli("run", owned_app, "-v", f"{data}:/data:ro", "--json")
    assert out.returncode == 0, out.stderr
    assert out.json["mode"] == "restored"
    shown = cli("exec", out.json["name"], "--", "cat", "/data/greeting")
    assert shown.returncode == 0 and shown.stdout.strip() == "hello from the host"
    assert cli("stop", out.json["name"]).returncode == 0
    bad = cli("run", owned_app, "-v", "relative:/data")
    assert bad.returncode == 2 and "expected HOST_PATH:CONTAINER_PATH" in bad.error
    assert cli("run", owned_app, "-v", f"{data}:/.warmstart/x").returncode == 2
    # A missing host path is the user's slip, not the snapshot's failure: refused before anything starts, and
    # three of them in a row do not open the snapshot's circuit breaker (#29).
    for _ in range(3):
        missing = cli("run", owned_app, "-v", f"{tmp_path}/missing:/x")
        assert missing.returncode == 2 and "does not exist" in missing.error, missing.stderr
    again = cli("run", owned_app, "--json")
    assert again.json["mode"] == "restored", again.json.get("reason")
    assert cli("stop", again.json["name"]).returncode == 0
    assert containers_of(owned_app) == []
