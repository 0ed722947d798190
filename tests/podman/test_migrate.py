"""`warmstart migrate` between two independent "hosts" on this machine, through a real registry on 127.0.0.1: host A
is podman's default storage with one cache; host B has its own podman storage root (graph root, run root, container
database: CONTAINERS_STORAGE_CONF) and its own cache, and is reached through `--via "env ..."` where a real one
would be `--via "ssh hostb"`. Nothing is shared but the registry. A stateful instance keeps its boot token and its
count; the source is gone after success and serves again after a failure (nothing lost either way)."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Cli, containers_of
from tests.helpers import RegistryServer, ballast_spec, build, free_port, http_json, login
from tests.podman.test_serve import Front

pytestmark = pytest.mark.podman
BIN = str(Path(sys.executable).parent)


def _on_b(env: dict[str, str], *args: str) -> str:
    return subprocess.run(["podman", *args], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                          text=True).stdout


def _via(env: dict[str, str], authfile: Path) -> str:
    return shlex.join(["env", f"PATH={BIN}:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                       f"REGISTRY_AUTH_FILE={authfile}", *(f"{k}={v}" for k, v in env.items())])


def _running(cli: Cli, app: str, registry: RegistryServer, authfile: Path) -> tuple[dict, str, dict]:
    """A restored instance of `app` that has answered a few requests: its run result, address and last answer."""
    login(registry, authfile)
    build(cli, app)
    out = cli("run", app, "--json").json
    address = out["ports"]["8080/tcp"]
    return out, address, [http_json(address) for _ in range(3)][-1]


def test_a_stateful_instance_moves_with_its_state(cli: Cli, owned_app: str, tmp_path: Path, host_b: dict[str, str],
                                                  registry: RegistryServer) -> None:
    authfile = tmp_path / "auth.json"
    out, address, before = _running(cli, owned_app, registry, authfile)
    moved = cli("migrate", out["name"], "--to", f"{registry.address}/warmstart/{owned_app}",
                "--via", _via(host_b, authfile), "--json", env={"REGISTRY_AUTH_FILE": str(authfile)}, timeout=300)
    assert moved.returncode == 0, moved.stderr
    assert moved.json["destination"]["mode"] == "restored" and moved.json["destination"]["name"] == out["name"]
    after = http_json(address)  # same published address, now served by host B
    # The count continues (the destination's readiness probe counts too): state moved, nothing lost or replayed.
    assert after["boot_token"] == before["boot_token"] and before["count"] < after["count"] <= before["count"] + 3
    assert containers_of(owned_app) == []  # host A: the source is gone
    assert out["name"] in _on_b(host_b, "ps", "--format", "{{.Names}}")
    phases = moved.json["phases"]
    assert set(phases) == {"checkpoint", "dump", "push", "destination", "pull", "restore"}, phases
    assert phases["dump"] < phases["checkpoint"] and phases["pull"] + phases["restore"] == pytest.approx(
        phases["destination"], abs=0.002) and moved.json["downtime_seconds"] > 0


@pytest.mark.parametrize("failing", ["push", "destination"])
def test_a_failed_migration_leaves_the_source_serving_with_nothing_lost(cli: Cli, owned_app: str, tmp_path: Path,
                                                                        failing: str,
                                                                        registry: RegistryServer) -> None:
    authfile = tmp_path / "auth.json"
    out, address, before = _running(cli, owned_app, registry, authfile)
    to = "127.0.0.1:9/warmstart/nowhere" if failing == "push" else f"{registry.address}/warmstart/{owned_app}"
    via = "env" if failing == "push" else "false"  # `false warmstart run ...`: a destination that fails
    res = cli("migrate", out["name"], "--to", to, "--via", via, env={"REGISTRY_AUTH_FILE": str(authfile)},
              timeout=300)
    assert res.returncode != 0
    assert f"failed at the {failing} step" in res.stderr and "nothing was lost" in res.stderr
    after = http_json(address)
    assert after["boot_token"] == before["boot_token"] and before["count"] < after["count"] <= before["count"] + 3
    assert containers_of(owned_app) == [out["name"]]
    assert cli("stop", out["name"]).returncode == 0


def test_post_copy_moves_all_of_the_memory_while_the_destination_runs(
        cli: Cli, owned_app: str, tmp_path: Path, host_b: dict[str, str], registry: RegistryServer) -> None:
    """The destination starts from a snapshot without the app's lazy memory and fetches it from this host's page
    server over TLS: every byte of 96 MiB of random memory arrives (its SHA-256 taken at boot matches)."""
    out, address, before, authfile = _post_copy_instance(cli, owned_app, tmp_path, registry)
    moved = cli("migrate", out["name"], "--to", f"{registry.address}/warmstart/{owned_app}", "--post-copy",
                "--via", _via(host_b, authfile), "--json", env={"REGISTRY_AUTH_FILE": str(authfile)}, timeout=300)
    assert moved.returncode == 0, moved.stderr
    result = moved.json
    assert result["mode"] == "post-copy" and set(result["phases"]) == {
        "checkpoint", "dump", "prepare", "push", "destination", "pull", "restore", "stream"}
    assert result["streamed_bytes"] > 64 << 20  # most of the ballast came after the destination started
    sums = http_json(address, "/checksum")
    assert sums["ballast_bytes"] == 96 << 20 and sums["ballast_sha256"] == sums["at_boot"]
    after = http_json(address)
    assert after["boot_token"] == before["boot_token"] and before["count"] < after["count"] <= before["count"] + 4
    assert containers_of(owned_app) == []
    # Here: the full checkpoint stays (it was the rollback), the thin copy is gone; no page server is left.
    here = cli("cache", "ls", owned_app, "--json").json["snapshots"]
    assert [s["post_copy_from"] for s in here if s["tag"].startswith("migrate-")] == [""]
    assert not _page_servers()
    # There: the thin copy says where its pages came from; it is never chosen by a plain `run APP`, and run by
    # its tag without the migration's credentials it is refused with the reason.
    there = json.loads(subprocess.run([f"{BIN}/warmstart", "cache", "ls", owned_app, "--json"],
                                      env={**os.environ, **host_b}, capture_output=True, text=True).stdout)
    assert [s["post_copy_from"] != "" for s in there["snapshots"]] == [True]
    again = subprocess.run([f"{BIN}/warmstart", "run", there["snapshots"][0]["snapshot"], "--no-fallback"],
                           env={**os.environ, **host_b}, capture_output=True, text=True)
    assert again.returncode != 0 and "post-copy migration's" in again.stderr, again.stderr


def _page_servers() -> list[str]:
    ps = subprocess.run(["pgrep", "-af", "criu page-server"], capture_output=True, text=True).stdout
    return ps.splitlines()


def _post_copy_instance(cli: Cli, app: str, tmp_path: Path, registry: RegistryServer) -> tuple[dict, str, dict, Path]:
    authfile = tmp_path / "auth.json"
    login(registry, authfile)
    spec = ballast_spec(tmp_path / "warmstart.toml", app, size=96, hot=4, repeat=3)
    assert cli("build", "--name", app, "-f", str(spec)).returncode == 0
    out = cli("run", app, "-f", str(spec), "--json").json
    address = out["ports"]["8080/tcp"]
    return out, address, [http_json(address) for _ in range(3)][-1], authfile


def test_a_failed_post_copy_destination_leaves_the_source_serving(cli: Cli, owned_app: str, tmp_path: Path,
                                                                  registry: RegistryServer) -> None:
    out, address, before, authfile = _post_copy_instance(cli, owned_app, tmp_path, registry)
    res = cli("migrate", out["name"], "--to", f"{registry.address}/warmstart/{owned_app}", "--post-copy",
              "--via", "false", env={"REGISTRY_AUTH_FILE": str(authfile)}, timeout=300)
    assert res.returncode != 0 and "failed at the destination step" in res.stderr and "nothing was lost" in res.stderr
    after = http_json(address)
    assert after["boot_token"] == before["boot_token"] and before["count"] < after["count"] <= before["count"] + 3
    sums = http_json(address, "/checksum")
    assert sums["ballast_sha256"] == sums["at_boot"]
    assert containers_of(owned_app) == [out["name"]] and not _page_servers()
    assert not any(s["post_copy_from"] for s in cli("cache", "ls", owned_app, "--json").json["snapshots"])
    assert cli("stop", out["name"]).returncode == 0


def test_a_page_server_killed_mid_migration_leaves_the_source_serving(
        cli: Cli, owned_app: str, tmp_path: Path, host_b: dict[str, str], registry: RegistryServer) -> None:
    """A real kill -9 of the page server as soon as the destination has connected to it: the destination's
    init stops the app rather than run it on incomplete memory, and the instance is restored here."""
    out, address, before, authfile = _post_copy_instance(cli, owned_app, tmp_path, registry)
    killed: list[str] = []
    stop = threading.Event()

    def kill_on_connect() -> None:
        while not stop.is_set():
            ss = subprocess.run(["ss", "-Htnp", "state", "established"], capture_output=True, text=True).stdout
            for line in ss.splitlines():
                if '"criu"' in line:
                    for pid in re.findall(r"pid=(\d+)", line):
                        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                        if b"page-server" in cmdline:
                            os.kill(int(pid), signal.SIGKILL)
                            killed.append(pid)
                            return
            time.sleep(0.002)

    killer = threading.Thread(target=kill_on_connect)
    killer.start()
    try:
        res = cli("migrate", out["name"], "--to", f"{registry.address}/warmstart/{owned_app}", "--post-copy",
                  "--via", _via(host_b, authfile), env={"REGISTRY_AUTH_FILE": str(authfile)}, timeout=300)
    finally:
        stop.set()
        killer.join()
    assert killed, "the page server was never seen connected"
    assert res.returncode != 0, res.stderr
    assert re.search(r"failed at the destination step.*nothing was lost|failed at the stream step.*what it did on "
                     r"the destination since it started there is lost", res.stderr), res.stderr
    after = http_json(address)
    assert after["boot_token"] == before["boot_token"] and before["count"] < after["count"]
    sums = http_json(address, "/checksum")
    assert sums["ballast_sha256"] == sums["at_boot"]
    assert containers_of(owned_app) == [out["name"]] and not _page_servers()
    assert out["name"] not in _on_b(host_b, "ps", "-a", "--format", "{{.Names}}")
    assert cli("stop", out["name"]).returncode == 0


@pytest.mark.parametrize("post_copy", [False, True], ids=["stop-and-copy", "post-copy"])
def test_a_looping_client_through_serve_sees_no_failed_request_across_a_migration(
    cli: Cli, owned_app: str, tmp_path: Path, host_b: dict[str, str], registry: RegistryServer, post_copy: bool
) -> None:
    """`serve --migrate-to/--migrate-via` and POST /migrate on its admin address: the front holds new requests while
    the instance moves (and sends again the ones the freeze cut), so a client requesting in a loop sees every one
    answered, by the same process (boot token) with its count going on; the held time is reported; stopping the
    front stops the instance where it now runs. Post-copy too (the held requests go to the destination as soon as it
    answers, while the rest of its memory streams in: the benchmark shows the held time)."""
    authfile = tmp_path / "auth.json"
    login(registry, authfile)
    build(cli, owned_app)
    admin = free_port()
    front = Front(cli, owned_app, "--admin", f"127.0.0.1:{admin}", "--pool", "0", "--migrate-to",
                  f"{registry.address}/warmstart/{owned_app}", "--migrate-via", _via(host_b, authfile),
                  *(["--migrate-post-copy"] if post_copy else []), env={"REGISTRY_AUTH_FILE": str(authfile)})
    try:
        status, body = front.get("/")
        assert status == 200
        token = json.loads(body)["boot_token"]
        answers: list[tuple[int, dict]] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                code, raw = front.get("/")
                answers.append((code, json.loads(raw) if code == 200 else {"body": raw[:200]}))
                time.sleep(0.02)

        client = threading.Thread(target=loop, daemon=True)
        client.start()
        time.sleep(0.5)
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{admin}/migrate", method="POST"),
                                    timeout=300) as resp:
            moved = json.loads(resp.read())
        time.sleep(1.0)
        stop.set()
        client.join(timeout=120)
        assert moved["held_seconds"] > 0 and moved["downtime_seconds"] > 0
        assert moved["mode"] == ("post-copy" if post_copy else "stop-and-copy")
        assert ("stream" in moved["phases"]) == post_copy
        failed = [a for a in answers if a[0] != 200]
        assert failed == [] and len(answers) > 20, failed[:3]
        counts = [a[1]["count"] for a in answers]
        assert {a[1]["boot_token"] for a in answers} == {token} and counts == sorted(counts)
        assert containers_of(owned_app) == []  # host A: the instance runs on host B now
        assert _on_b(host_b, "ps", "-q").strip()
        event = front.wait_for("migrated")
        assert event["held_seconds"] == moved["held_seconds"]
    finally:
        assert front.stop() == 0
    assert _on_b(host_b, "ps", "-q").strip() == ""  # stopped where it ran, through --migrate-via


class KeepAlive:
    """One HTTP/1.1 connection that never reconnects: a request on it after a migration is answered only if the
    restored process got this very TCP connection back."""

    def __init__(self, ip: str, port: int) -> None:
        self.sock = socket.create_connection((ip, port), timeout=60)
        self.reader = self.sock.makefile("rb")

    def get(self, path: str = "/") -> dict:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: warmstart-test\r\n\r\n".encode())
        status, length = self.reader.readline(), 0
        assert status.startswith(b"HTTP/1.1 200"), status
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return json.loads(self.reader.read(length))


def _unused_address() -> str:
    """An address of podman's default network (10.88.0.0/16) that no container has: podman hands out addresses
    from 10.88.0.2 upwards, so one from 10.88.100.0 on is free unless tens of thousands of containers exist."""
    return f"10.88.{random.randint(100, 250)}.{random.randint(2, 250)}"


def test_a_keep_alive_connection_survives_a_migration_that_keeps_the_address(
    cli: Cli, owned_app: str, tmp_path: Path, host_b: dict[str, str], registry: RegistryServer
) -> None:
    """`run --ip` and `migrate --keep-address`: the instance is restored on host B with its IP and MAC, and the init
    restores its established TCP connections (CRIU --tcp-established): a client holding a keep-alive connection
    to that address gets its next request answered on the same connection, by the same process."""
    authfile = tmp_path / "auth.json"
    login(registry, authfile)
    build(cli, owned_app, "-e", "KEEP_ALIVE=1")
    ip = _unused_address()
    out = cli("run", owned_app, "--ip", ip, "--json")
    assert out.returncode == 0 and out.json["mode"] == "restored", out.stderr
    conn = KeepAlive(ip, 8080)
    before = [conn.get() for _ in range(2)]
    local = conn.sock.getsockname()
    moved = cli("migrate", out.json["name"], "--to", f"{registry.address}/warmstart/{owned_app}",
                "--via", _via(host_b, authfile), "--keep-address", "--json",
                env={"REGISTRY_AUTH_FILE": str(authfile)}, timeout=300)
    assert moved.returncode == 0, moved.stderr
    assert containers_of(owned_app) == [] and out.json["name"] in _on_b(host_b, "ps", "--format", "{{.Names}}")
    after = conn.get()  # the same socket: it never reconnects
    assert conn.sock.getsockname() == local
    assert after["boot_token"] == before[-1]["boot_token"] and after["count"] > before[-1]["count"]
    assert after["count"] <= before[-1]["count"] + 3  # the destination's probes count too, nothing replayed
    info = json.loads(_on_b(host_b, "inspect", out.json["name"]))[0]
    assert ip in json.dumps(info["NetworkSettings"]["Networks"])
