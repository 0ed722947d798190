"""Cold start vs `warmstart run` restore vs raw `podman container restore --import`, side by side per app.

Run with scripts/bench. Each variant is a pytest-benchmark measurement of the whole launch (command to first
HTTP 200); latency of the first requests is measured after each kind of start and recorded beside it.
"""

from __future__ import annotations

import http.client
import statistics
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import ROOT, SESSION, record, warmstart

APPS = {
    "counter": ROOT / "images/examples/counter",  # toy: 2 s simulated boot
    "py-model": ROOT / "images/examples/py-model",
    "jvm-catalog": ROOT / "images/examples/jvm-catalog",
}
COUNTER_SPEC = """[apps.counter]
image = "localhost/warmstart-example-counter:latest"
ports = [8080]
env = { STARTUP_DELAY = "2" }
ready = { http = "/healthz" }
"""
ROUNDS = 5
FIRST_PATH = {"counter": "/", "py-model": "/predict?row=3", "jvm-catalog": "/search?q=oak"}


@pytest.fixture(scope="module", params=list(APPS))
def built(request: pytest.FixtureRequest, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = request.param
    spec = APPS[app] / "warmstart.toml"
    if app == "counter":
        spec = tmp_path_factory.mktemp("spec") / "warmstart.toml"
        spec.write_text(COUNTER_SPEC)
    result = warmstart("build", "--name", app, "-f", str(spec), "--force", cache=cache)
    record(app, size_bytes=result["size_bytes"], build_seconds=result["build_seconds"],
           checkpoint_seconds=result["checkpoint_seconds"])
    return {"app": app, "spec": spec, **result}


def _get(address: str, path: str) -> float:
    host, port = address.rsplit(":", 1)
    t = time.perf_counter()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200
    return (time.perf_counter() - t) * 1000


def _latencies(address: str, path: str) -> list[float]:
    return [_get(address, path) for _ in range(101)]


def _stop(cache: Path, name: str) -> None:
    """Remove an instance by the name we gave it, whichever engine runs it."""
    subprocess.run(["podman", "rm", "--force", "--ignore", "-t", "0", name], capture_output=True)
    subprocess.run(["/usr/bin/docker", "rm", "-f", name], capture_output=True)


def _measure(benchmark: Any, launch: Any) -> tuple[str, str]:
    """Run `launch` ROUNDS times (each returns (name, address)); the instance is removed between rounds, untimed."""
    started: list[tuple[str, str]] = []

    def setup() -> None:
        while started:
            _stop(Path(), started.pop()[0])

    benchmark.pedantic(lambda: started.append(launch()), setup=setup, rounds=ROUNDS, iterations=1)
    return started[-1]


def test_cold(benchmark: Any, built: dict[str, Any], cache: Path) -> None:
    app = built["app"]

    def launch() -> tuple[str, str]:
        out = warmstart("run", app, "--cold", "-f", str(built["spec"]), cache=cache)
        return out["name"], out["ports"]["8080/tcp"]

    name, address = _measure(benchmark, launch)
    first = _get(address, FIRST_PATH[app])
    lat = _latencies(address, FIRST_PATH[app])
    _stop(cache, name)
    record(app, cold_ttr=benchmark.stats.stats.median, first_cold_ms=first,
           p50_cold_ms=statistics.median(lat), p99_cold_ms=sorted(lat)[98])


def test_restored(benchmark: Any, built: dict[str, Any], cache: Path) -> None:
    app = built["app"]

    def launch() -> tuple[str, str]:
        out = warmstart("run", app, "--no-fallback", "-f", str(built["spec"]), cache=cache)
        assert out["mode"] == "restored"
        return out["name"], out["ports"]["8080/tcp"]

    name, address = _measure(benchmark, launch)
    first = _get(address, FIRST_PATH[app])
    lat = _latencies(address, FIRST_PATH[app])
    _stop(cache, name)
    record(app, restored_ttr=benchmark.stats.stats.median, first_restored_ms=first,
           p50_restored_ms=statistics.median(lat), p99_restored_ms=sorted(lat)[98])


def test_raw_podman_restore(benchmark: Any, built: dict[str, Any], cache: Path) -> None:
    """The same checkpoint file restored by podman directly, then polled until HTTP 200 like warmstart does."""
    app = built["app"]
    archive = Path(built["snapshot_path"]) / "checkpoint.tar"

    def launch() -> tuple[str, str]:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        name = f"ws-raw-{uuid.uuid4().hex[:6]}"
        subprocess.run(["podman", "container", "restore", "--import", str(archive), "--name", name,
                        "--ignore-static-ip", "--ignore-static-mac", "-p", f"127.0.0.1:{port}:8080"],
                       check=True, capture_output=True)
        address = f"127.0.0.1:{port}"
        end = time.monotonic() + 60
        while True:
            try:
                _get(address, "/healthz")
                break
            except (OSError, AssertionError, http.client.HTTPException):
                if time.monotonic() > end:
                    raise
                time.sleep(0.01)
        return name, address

    name, _ = _measure(benchmark, launch)
    _stop(cache, name)
    record(app, raw_ttr=benchmark.stats.stats.median)


assert SESSION  # restored containers inherit the build's session label, so the cache fixture sweeps them
