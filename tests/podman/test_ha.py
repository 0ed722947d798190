"""`run --restart on-failure --checkpoint-every`: an instance checkpointed while it serves comes back by itself,
in place, from its newest checkpoint that passes verification, after a real `kill -9` of its app."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Cli, containers_of
from tests.helpers import JsonLines, build, corrupt_image, http_json

pytestmark = pytest.mark.podman


class Supervisor(JsonLines):
    """A `warmstart run --restart on-failure --json` process and its JSON event lines."""

    def __init__(self, cli: Cli, *args: str) -> None:
        super().__init__(subprocess.Popen(cli.argv("run", *args, "--restart", "on-failure", "--json"),
                                          env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))


def _kill_app(name: str) -> None:
    """kill -9 of the app itself (the container's init then exits with it), as a crash would."""
    init = json.loads(subprocess.run(["podman", "inspect", name], capture_output=True, check=True).stdout)[0]
    pid = init["State"]["Pid"]
    children = [c for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    subprocess.run(["kill", "-9", *children], check=True)


def test_a_killed_instance_comes_back_in_place_from_its_newest_good_checkpoint(
    cli: Cli, owned_app: str
) -> None:
    build(cli, owned_app)
    sup = Supervisor(cli, owned_app, "--checkpoint-every", "3s", "--keep", "2")
    try:
        started = sup.wait_for("started")
        name, address = started["name"], started["ports"]["8080/tcp"]
        for _ in range(5):
            http_json(address)
        written = http_json(address)  # the data: a count the app keeps in memory
        older = sup.wait_for("checkpointed")
        assert older["frozen_seconds"] is None or older["frozen_seconds"] < older["checkpoint_seconds"]
        http_json(address)
        newest = sup.wait_for("checkpointed")
        # The newest checkpoint is damaged on disk: it must never be restored; the older one is.
        snap = Path(next(s["path"] for s in cli("cache", "ls", owned_app, "--json").json["snapshots"]
                         if s["snapshot"] == newest["snapshot"]))
        corrupt_image(snap, "pages-1.img")
        _kill_app(name)
        failed = sup.wait_for("failed")
        assert failed["why"] in ("its main process exited", "container exited (exit code 137)")
        skipped = sup.wait_for("recovery_attempt_failed")
        assert skipped["from"] == newest["snapshot"]
        recovered = sup.wait_for("recovered")
        assert recovered["from"] == f"snapshot {older['snapshot']}" and recovered["restarts"] == 1
        back = http_json(address)  # same name, same host port
        assert back["boot_token"] == written["boot_token"] and back["count"] > written["count"]
        assert name in containers_of(owned_app)
    finally:
        sup.proc.send_signal(signal.SIGINT)
        assert sup.proc.wait(timeout=60) == 0
    ended = sup.wait_for("unsupervised")
    assert ended["restarts"] == 1 and len(ended["checkpoints"]) <= 2
    assert http_json(address)["boot_token"] == written["boot_token"]  # unsupervised, still serving
    tags = [s["tag"] for s in cli("cache", "ls", owned_app, "--json").json["snapshots"] if s["tag"].startswith("ha-")]
    assert len(tags) <= 2  # --keep
    assert cli("stop", name).returncode == 0
    assert containers_of(owned_app) == []


def test_restart_options_are_checked_before_anything_starts(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app)
    for args, message in ((["--restart", "always"], "expected on-failure"),
                          (["--checkpoint-every", "5s"], "needs --restart on-failure"),
                          (["--restart", "on-failure", "--checkpoint-every", "soon"], "invalid --checkpoint-every"),
                          (["--restart", "on-failure", "--keep", "0"], "--keep must be at least 1")):
        res = cli("run", owned_app, *args)
        assert res.returncode == 2 and message in res.error, (args, res.stderr)
    assert containers_of(owned_app) == []
