"""`warmstart checkpoint` against real podman and CRIU: a running instance's state (not the build's) becomes a
snapshot in the cache, the instance keeps serving, `run APP:TAG` continues from that state, no process memory stays
in the instance, and an instance that is not a sandbox restore is refused with the reason."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ENGINES, Cli, containers_of
from tests.helpers import ballast_spec, build, http_json

pytestmark = pytest.mark.podman


def test_a_running_instance_is_checkpointed_and_restored_with_its_state(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app)
    first = cli("run", owned_app, "--json").json
    address = first["ports"]["8080/tcp"]
    for _ in range(5):
        http_json(address)
    now = http_json(address)
    ck = cli("checkpoint", first["name"], "--tag", "live", "--json")
    assert ck.returncode == 0, ck.stderr
    assert ck.json["snapshot"] == f"{owned_app}:live" and ck.json["size_bytes"] > 0 and not ck.json["stopped"]
    assert http_json(address)["count"] == now["count"] + 1  # the instance kept running

    again = cli("run", f"{owned_app}:live", "--json")
    assert again.returncode == 0, again.stderr
    assert again.json["mode"] == "restored" and again.json["snapshot"] == f"{owned_app}:live"
    restored = http_json(again.json["ports"]["8080/tcp"])
    # The live state: the same process (boot token) with the count it had at the checkpoint, plus this clone's
    # readiness probe and this request.
    assert restored["boot_token"] == now["boot_token"] and restored["count"] == now["count"] + 2
    listing = cli("exec", first["name"], "--", "ls", "-a", "/tmp/.warmstart").stdout
    assert "checkpoint-" not in listing  # no process memory left behind in the instance

    cold = cli("run", owned_app, "--cold", "--json").json
    refused = cli("checkpoint", cold["name"])
    assert refused.returncode == 2 and "is not a sandbox restore (mode cold)" in refused.error
    taken = cli("checkpoint", first["name"], "--tag", "live")
    assert taken.returncode == 2 and "exists already" in taken.error
    stopped = cli("checkpoint", again.json["name"], "--tag", "later", "--stop", "--json")
    assert stopped.returncode == 0 and stopped.json["stopped"]
    for name in (first["name"], cold["name"]):
        assert cli("stop", name).returncode == 0
    assert containers_of(owned_app) == []


def test_a_checkpoint_under_incoming_connections_succeeds(cli: Cli, owned_app: str) -> None:
    """Clients keep connecting while CRIU has the app frozen: their connections wait in the listening socket's
    queue, not yet accepted, which CRIU refuses to dump unless told to skip them (`--skip-in-flight`)."""
    build(cli, owned_app)
    first = cli("run", owned_app, "--json").json
    host, _, port = first["ports"]["8080/tcp"].rpartition(":")
    stop = threading.Event()
    attempts = []

    def connect_all_the_time() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", int(port)), timeout=0.5):
                attempts.append(time.monotonic())
            time.sleep(0.002)

    hammer = threading.Thread(target=connect_all_the_time)
    hammer.start()
    try:
        started = time.monotonic()
        ck = cli("checkpoint", first["name"], "--tag", "busy", "--stop", "--json")
        ended = time.monotonic()
    finally:
        stop.set()
        hammer.join()
    assert ck.returncode == 0, ck.stderr
    assert sum(started < t < ended for t in attempts) > 10  # connections really came in during the checkpoint
    again = cli("run", f"{owned_app}:busy", "--json").json
    assert again["mode"] == "restored"
    assert cli("stop", again["name"]).returncode == 0
    assert containers_of(owned_app) == []


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("stop", [False, True])
def test_a_checkpoint_of_a_ballast_instance_keeps_every_byte(cache: Path, owned_app: str, tmp_path: Path,
                                                             engine: str, stop: bool) -> None:
    """96 MiB of random memory through a checkpoint on both engines: copied out by the engine while the instance
    runs on (docker: its archive stream, unpacked as it arrives), moved out of the ended instance's layer with
    --stop where the layer is on the cache's filesystem; restored, its SHA-256 taken at boot still matches."""
    cli = Cli(cache, engine=engine)
    spec = ballast_spec(tmp_path / "warmstart.toml", owned_app, size=96, hot=4, repeat=3)
    assert cli("build", "--name", owned_app, "-f", str(spec), "--json").returncode == 0
    first = cli("run", owned_app, "-f", str(spec), "--json").json
    ck = cli("checkpoint", first["name"], "--tag", "mem", "--json", *(["--stop"] if stop else []), timeout=300)
    assert ck.returncode == 0, ck.stderr
    assert ck.json["stopped"] is stop and ck.json["size_bytes"] > 96 << 20
    again = cli("run", f"{owned_app}:mem", "-f", str(spec), "--json").json
    assert again["mode"] == "restored"
    sums = http_json(again["ports"]["8080/tcp"], "/checksum")
    assert sums["ballast_bytes"] == 96 << 20 and sums["ballast_sha256"] == sums["at_boot"]
    names = [again["name"]] + ([] if stop else [first["name"]])
    assert cli("stop", *names).returncode == 0
    assert containers_of(owned_app) == []


def test_checkpoint_stop_killed_at_ten_moments_never_loses_the_instances_state(cli: Cli, owned_app: str) -> None:
    """`checkpoint --stop` SIGKILLed at ten evenly spread moments of its run: after the next command (`ps`) the
    state is always somewhere, the snapshot stored or the instance running on with its count (thawed when its
    freezing process died), no marker stays, and no staging dir survives the next checkpoint."""
    build(cli, owned_app)
    scratch = cli("run", owned_app, "--json").json
    t0 = time.monotonic()
    assert cli("checkpoint", scratch["name"], "--stop", "--tag", "timing").returncode == 0
    whole = time.monotonic() - t0
    outcomes = []
    for i in range(1, 11):
        inst = cli("run", owned_app, "--json").json
        address = inst["ports"]["8080/tcp"]
        seen = http_json(address)
        proc = subprocess.Popen(cli.argv("checkpoint", inst["name"], "--stop", "--tag", f"k{i}"), env=cli.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(whole * i / 10)
        proc.kill()
        proc.wait(timeout=30)
        listed = cli("ps", "--app", owned_app, "--json").json["instances"]  # the next command
        stored = f"k{i}" in {x["tag"] for x in cli("cache", "ls", owned_app, "--json").json["snapshots"]}
        running = any(x["name"] == inst["name"] and x["status"] == "running" for x in listed)
        if running:  # thawed (or never frozen): it answers, with the state it had
            now = http_json(address)
            assert now["boot_token"] == seen["boot_token"] and now["count"] > seen["count"]
            assert cli("stop", inst["name"]).returncode == 0
        assert stored or running, f"moment {i}: neither a snapshot nor the instance"
        outcomes.append("both" if stored and running else "stored" if stored else "running")
        assert not any((cli.cache / "frozen").glob("*"))
    assert "running" in outcomes and "stored" in outcomes, outcomes  # the moments span the whole run
    last = cli("run", owned_app, "--json").json
    assert cli("checkpoint", last["name"], "--stop", "--tag", "after").returncode == 0
    assert not any((cli.cache / ".staging").iterdir())
    assert containers_of(owned_app) == []


def test_checkpoint_on_signal_captures_the_state_at_the_moment_the_signal_comes(cli: Cli, owned_app: str) -> None:
    """`checkpoint NAME --on-signal USR1` waits (a wrong name or signal is refused at once), and takes the
    checkpoint when the signal arrives: the state then, not the state when it started waiting."""
    build(cli, owned_app)
    inst = cli("run", owned_app, "--json").json
    address = inst["ports"]["8080/tcp"]
    assert cli("checkpoint", inst["name"], "--on-signal", "KILL").returncode == 2
    assert cli("checkpoint", "nobody", "--on-signal", "USR1").returncode == 2
    proc = subprocess.Popen(cli.argv("checkpoint", inst["name"], "--on-signal", "USR1", "--tag", "at-signal",
                                     "--json"), env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    assert "waiting for SIGUSR1" in proc.stderr.readline()
    for _ in range(4):
        http_json(address)
    at_signal = http_json(address)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and json.loads(out)["snapshot"] == f"{owned_app}:at-signal"
    again = cli("run", f"{owned_app}:at-signal", "--json").json
    restored = http_json(again["ports"]["8080/tcp"])
    assert restored["boot_token"] == at_signal["boot_token"] and restored["count"] == at_signal["count"] + 2
    for name in (inst["name"], again["name"]):
        assert cli("stop", name).returncode == 0
    assert containers_of(owned_app) == []
