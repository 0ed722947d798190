"""Restore only where it wins, and a circuit breaker for snapshots that keep failing, against real podman/CRIU:
a build times a trial restore beside its cold start; `run` starts cold when the snapshot did not win (saying so),
and after repeated restore failures stops trying for a cool-down, then tries once and closes on success."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import Cli, containers_of
from tests.helpers import build, corrupt_image, http_json, reseal

pytestmark = pytest.mark.podman


def _set_timings(snapshot: Path, **timings: float) -> None:
    manifest = json.loads((snapshot / "manifest.json").read_text())
    manifest["timings"].update(timings)
    (snapshot / "manifest.json").write_text(json.dumps(manifest))


def test_a_snapshot_that_does_not_beat_cold_is_skipped_with_the_reason(
    cli: Cli, owned_app: str, tmp_path: Path
) -> None:
    built = build(cli, owned_app)
    assert 0 < built["restored_ready_seconds"] < built["cold_ready_seconds"]  # STARTUP_DELAY=1: restoring wins
    inspected = cli("cache", "inspect", owned_app, "--json").json
    assert inspected["timings"]["restored_ready_seconds"] == built["restored_ready_seconds"]

    snap = Path(built["snapshot_path"])
    # as measured for a service that boots fast
    _set_timings(snap, cold_ready_seconds=0.5, restored_ready_seconds=0.8, cold_trials=1)
    res = cli("run", owned_app, "--json")
    assert res.returncode == 0, res.stderr
    assert res.json["mode"] == "cold"
    assert "does not beat a cold start here: its trial restore was ready in 0.80s against 0.50s cold (one trial" in \
        res.json["reason"]
    assert cli("stop", res.json["name"]).returncode == 0

    spec = tmp_path / "warmstart.toml"
    spec.write_text(f'[apps.{owned_app}]\nimage = "localhost/warmstart-example-counter:latest"\nports = [8080]\n'
                    'ready = { http = "/healthz" }\nenv = { STARTUP_DELAY = "1" }\nalways_restore = true\n')
    forced = cli("run", owned_app, "-f", str(spec), "--json")
    assert forced.returncode == 0, forced.stderr
    assert forced.json["mode"] == "restored"
    assert cli("stop", forced.json["name"]).returncode == 0
    assert containers_of(owned_app) == []


def test_repeated_restore_failures_open_the_circuit_which_closes_after_a_good_restore(
    cli: Cli, owned_app: str, tmp_path: Path
) -> None:
    built = build(cli, owned_app)
    snap = Path(built["snapshot_path"])
    good = tmp_path / "inventory.img"
    shutil.copyfile(snap / "images" / "inventory.img", good)
    corrupt_image(snap, "inventory.img")
    reseal(snap)

    for attempt in range(3):
        res = cli("run", owned_app, "--json")
        assert res.returncode == 0, res.stderr
        assert res.json["mode"] == "cold"
        assert f"restore from snapshot {built['snapshot']} failed" in res.json["reason"], attempt
        assert cli("stop", res.json["name"]).returncode == 0

    res = cli("run", owned_app, "--json")  # the circuit is open: cold at once, no restore tried
    assert res.json["mode"] == "cold"
    assert "circuit open after 3 failed restores in a row" in res.json["reason"]
    assert cli("stop", res.json["name"]).returncode == 0
    shown = cli("cache", "inspect", owned_app)
    assert "restores   circuit open, 3 failed in a row" in shown.stdout
    assert cli("cache", "inspect", owned_app, "--json").json["restores"]["circuit"] == "open"

    # The snapshot is repaired and the cool-down is over: one restore is tried (half-open), succeeds, closes it.
    shutil.copyfile(good, snap / "images" / "inventory.img")
    reseal(snap)
    health = json.loads((snap / ".health").read_text())
    (snap / ".health").write_text(json.dumps({**health, "open_until": time.time() - 1}))
    assert cli("cache", "inspect", owned_app, "--json").json["restores"]["circuit"] == "half-open"
    res = cli("run", owned_app, "--json")
    assert res.returncode == 0, res.stderr
    assert res.json["mode"] == "restored"
    assert http_json(res.json["ports"]["8080/tcp"])["count"] >= 3
    assert cli("cache", "inspect", owned_app, "--json").json["restores"] == {
        "consecutive_failures": 0, "last_error": "", "open_until": 0.0, "circuit": "closed"}
    assert cli("stop", res.json["name"]).returncode == 0
    assert containers_of(owned_app) == []
