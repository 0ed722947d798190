"""Docker beside podman for the same app, and `warmstart serve` request-to-first-byte from zero (restored vs
cold). Same run, same machine, one instance at a time."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import SESSION, WARMSTART, record, warmstart
from benchmarks.test_startup import COUNTER_SPEC, ROUNDS, _measure, _stop

DOCKER = "/usr/bin/docker"


def _docker_up() -> bool:
    return os.path.exists("/var/run/docker.sock") and subprocess.run(
        [DOCKER, "image", "inspect", "localhost/warmstart-example-counter:latest"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def counter_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = tmp_path_factory.mktemp("spec") / "warmstart.toml"
    spec.write_text(COUNTER_SPEC.replace("[apps.counter]", "[apps.counter-d]"))
    return spec


@pytest.mark.skipif(not _docker_up(), reason="no docker daemon with the example image (scripts/docker-daemon start)")
@pytest.mark.parametrize("mode", ["cold", "restored"])
def test_docker_counter(benchmark: Any, cache: Path, counter_spec: Path, mode: str) -> None:
    if mode == "cold":
        t = time.perf_counter()
        built = warmstart("build", "--engine", "docker", "--name", "counter-d", "-f", str(counter_spec), "--force",
                          cache=cache)
        record("counter (docker)", build_seconds=time.perf_counter() - t, size_bytes=built["size_bytes"],
               checkpoint_seconds=built["checkpoint_seconds"])

    def launch() -> tuple[str, str]:
        extra = ["--cold"] if mode == "cold" else ["--no-fallback"]
        out = warmstart("run", "counter-d", "--engine", "docker", *extra, "-f", str(counter_spec), cache=cache)
        return out["name"], out["ports"]["8080/tcp"]

    name, _ = _measure(benchmark, launch)
    _stop(Path(), name)
    record("counter (docker)", **{f"{mode}_ttr": benchmark.stats.stats.median})


def _first_byte(port: int) -> float:
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        assert s.recv(1)
    return time.perf_counter() - t


@pytest.mark.parametrize("mode", ["pooled", "restored", "cold"])
def test_serve_first_byte_from_zero(benchmark: Any, cache: Path, counter_spec: Path, tmp_path: Path,
                                    mode: str) -> None:
    """Request-to-first-byte from zero instances: with the default pool (one pre-started sandbox), without it
    (--pool 0: a container is started and restored on demand), and cold."""
    app = "counter"  # the same app and spec as test_startup (2 s simulated boot): its snapshot is reused
    spec = tmp_path / "warmstart.toml"
    spec.write_text(COUNTER_SPEC)
    warmstart("build", "--name", app, "-f", str(spec), cache=cache)
    if mode == "cold":  # same app, its snapshots moved away: the front must boot it cold
        subprocess.run(["mv", str(cache / "snapshots" / app), str(tmp_path / "moved")], check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = ["--pool", "1"] if mode == "pooled" else ["--pool", "0"]
    front = subprocess.Popen([WARMSTART, "serve", app, "--listen", f"127.0.0.1:{port}", "--idle", "0.5", *pool,
                              "--json", "-f", str(spec)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "WARMSTART_CACHE": str(cache), "WARMSTART_SESSION": SESSION})
    try:
        assert front.stdout is not None and '"listening"' in front.stdout.readline()

        def from_zero() -> float:
            return _first_byte(port)

        def wait_zero() -> None:  # each round starts with no running instance (and, pooled, a refilled pool)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                ps = json.loads(subprocess.run([WARMSTART, "ps", "--app", app, "--json"], capture_output=True,
                                               text=True).stdout)["instances"]
                modes = [i["mode"] for i in ps]
                if "restored" not in modes and "cold" not in modes and (mode != "pooled" or "pooled" in modes):
                    return
                time.sleep(0.2)

        benchmark.pedantic(from_zero, setup=wait_zero, rounds=ROUNDS if mode == "restored" else 3, iterations=1)
        record(app, **{f"serve_first_byte_{mode}": benchmark.stats.stats.median})
    finally:
        front.send_signal(signal.SIGTERM)
        front.wait(timeout=60)
        if mode == "cold":
            subprocess.run(["mv", str(tmp_path / "moved"), str(cache / "snapshots" / app)], check=True)





SELFSNAP = "localhost/warmstart-example-selfsnap:latest"
SELFSNAP_PRIVS = ["--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE", "--cap-add", "NET_ADMIN", "--cap-add",
                  "SYS_TIME", "--security-opt", "seccomp=unconfined"]


@pytest.mark.parametrize("mode", ["cold", "restored"])
def test_entrypoint_container_start(benchmark: Any, tmp_path: Path, mode: str) -> None:
    """`podman run` of an image whose ENTRYPOINT is the wrapper, to first HTTP 200: first boot (cold, empty
    snapshot dir) vs later boots (restored from the volume). The counter app with a 2 s simulated boot."""
    import urllib.request

    snapdir = tmp_path / "snapshots"
    snapdir.mkdir()
    names: list[str] = []

    def boot() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        name = f"wse-bench-{uuid.uuid4().hex[:8]}"
        names.append(name)
        subprocess.run(["podman", "run", "-d", "--name", name, *SELFSNAP_PRIVS, "--label",
                        f"io.warmstart.session={SESSION}", "--label", "io.warmstart.managed=true", "-e",
                        "STARTUP_DELAY=2", "-v", f"{snapdir}:/snapshots", "-p", f"127.0.0.1:{port}:8080", SELFSNAP],
                       check=True, capture_output=True)
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
                return
            except OSError:
                time.sleep(0.01)

    def setup() -> None:
        subprocess.run(["podman", "rm", "--force", "--ignore", "-t", "0", *names], capture_output=True)
        if mode == "cold":
            subprocess.run(["rm", "-rf", *map(str, snapdir.iterdir())])
        elif not (snapdir / "current").exists():  # a first boot to make the snapshot, untimed
            boot()
            while not (snapdir / "current").exists():
                time.sleep(0.1)
            subprocess.run(["podman", "rm", "--force", "--ignore", "-t", "0", *names], capture_output=True)

    try:
        benchmark.pedantic(boot, setup=setup, rounds=3, iterations=1)
    finally:
        subprocess.run(["podman", "rm", "--force", "--ignore", "-t", "0", *names], capture_output=True)
    record("counter (entrypoint, podman run)", **{f"{mode}_ttr": benchmark.stats.stats.median})
