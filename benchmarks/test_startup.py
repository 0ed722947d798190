"""Cold start vs `warmstart run` (sandbox restore) vs raw `podman container restore --import` vs CRIU alone in an
already started container (the floor), side by side per app, each measured by an outside client polling the
published port from the moment of the launch command.

Run with scripts/bench. Each variant is a pytest-benchmark measurement of the whole launch; the recorded TTR is the
median of the outside client's times, beside warmstart's own ready_seconds and the slowest single client attempt (a
dropped SYN shows as ~1 s there). Latency of the first requests is measured after each kind of start.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import ROOT, SESSION, WARMSTART, free_port, outside_ttr, record, warmstart

APPS = {
    "counter": ROOT / "images/examples/counter",  # toy: 2 s simulated boot
    "py-model": ROOT / "images/examples/py-model",
    "jvm-catalog": ROOT / "images/examples/jvm-catalog",
    "spring-catalog": ROOT / "images/examples/spring-catalog",  # framework-sized: Spring Boot + HikariCP + H2
}
COUNTER_SPEC = """[apps.counter]
image = "localhost/warmstart-example-counter:latest"
ports = [8080]
env = { STARTUP_DELAY = "2" }
ready = { http = "/healthz" }
"""
ROUNDS = 5
FIRST_PATH = {"counter": "/", "py-model": "/predict?row=3", "jvm-catalog": "/search?q=oak",
              "spring-catalog": "/products/123"}


@pytest.fixture(scope="module", params=list(APPS))
def built(request: pytest.FixtureRequest, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The app's sandbox snapshot (what `run` restores) and a container-mode one (what raw podman restores)."""
    app = request.param
    spec = APPS[app] / "warmstart.toml"
    if app == "counter":
        spec = tmp_path_factory.mktemp("spec") / "warmstart.toml"
        spec.write_text(COUNTER_SPEC)
    container = warmstart("build", "--name", app, "-f", str(spec), "--mode", "container", "--tag", "container-mode",
                          "--force", cache=cache)
    result = warmstart("build", "--name", app, "-f", str(spec), "--mode", "sandbox", "--force", cache=cache)
    record(app, size_bytes=result["size_bytes"], build_seconds=result["build_seconds"],
           checkpoint_seconds=result["checkpoint_seconds"])
    return {"app": app, "spec": spec, "container_snapshot": container["snapshot_path"], **result}


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


def _outside(benchmark: Any, launch: Any, prepare: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run `launch` ROUNDS times (each returns the outside_ttr result and the instance's name); instances are
    removed between rounds, and `prepare` runs before each, untimed. Returns the last result and all of them."""
    runs: list[dict[str, Any]] = []
    names: list[str] = []

    def setup() -> None:
        while names:
            _stop(Path(), names.pop())
        if prepare is not None:
            prepare()

    def once() -> None:
        result, name = launch()
        runs.append(result)
        names.append(name)

    benchmark.pedantic(once, setup=setup, rounds=ROUNDS, iterations=1)
    return runs[-1] | {"name": names[-1]}, runs


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _run_argv(built: dict[str, Any], port: int, *extra: str) -> list[str]:
    return [WARMSTART, "run", built["app"], "-f", str(built["spec"]), "-p", f"127.0.0.1:{port}:8080", "--json",
            *extra]


def test_cold(benchmark: Any, built: dict[str, Any], cache: Path) -> None:
    app = built["app"]

    def launch() -> tuple[dict[str, Any], str]:
        port = free_port()
        r = outside_ttr(_run_argv(built, port, "--cold"), port=port, env={"WARMSTART_CACHE": str(cache)})
        out = json.loads(r["stdout"])
        return r | {"ready_seconds": out["ready_seconds"], "address": f"127.0.0.1:{port}"}, out["name"]

    last, runs = _outside(benchmark, launch)
    first = _get(last["address"], FIRST_PATH[app])
    lat = _latencies(last["address"], FIRST_PATH[app])
    _stop(cache, last["name"])
    record(app, cold_ttr=_median(runs, "ttr_s"), cold_ready_seconds=_median(runs, "ready_seconds"),
           first_cold_ms=first, p50_cold_ms=statistics.median(lat), p99_cold_ms=sorted(lat)[98])


def _criu_seconds(name: str) -> float | None:
    """CRIU's own restore time in the sandbox, as warmstart-init logs it ("restored pid N in X ms")."""
    logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True).stderr
    found = re.search(r"warmstart-init: restored pid \d+ in (\d+) ms", logs)
    return int(found.group(1)) / 1000 if found else None


def test_restored(benchmark: Any, built: dict[str, Any], cache: Path) -> None:
    app = built["app"]

    def launch() -> tuple[dict[str, Any], str]:
        port = free_port()
        r = outside_ttr(_run_argv(built, port, "--no-fallback"), port=port, env={"WARMSTART_CACHE": str(cache)})
        out = json.loads(r["stdout"])
        assert out["mode"] == "restored", out
        return r | {"ready_seconds": out["ready_seconds"], "address": f"127.0.0.1:{port}",
                    "criu_s": _criu_seconds(out["name"])}, out["name"]

    last, runs = _outside(benchmark, launch)
    first = _get(last["address"], FIRST_PATH[app])
    lat = _latencies(last["address"], FIRST_PATH[app])
    _stop(cache, last["name"])
    criu = [r["criu_s"] for r in runs if r["criu_s"] is not None]
    record(app, restored_ttr=_median(runs, "ttr_s"), restored_ready_seconds=_median(runs, "ready_seconds"),
           slowest_restored_s=max(r["slowest_attempt_s"] for r in runs),
           criu_restore_s=statistics.median(criu) if criu else None,
           first_restored_ms=first, p50_restored_ms=statistics.median(lat), p99_restored_ms=sorted(lat)[98])


def test_raw_podman_restore(benchmark: Any, built: dict[str, Any], cache: Path) -> None:
    """A container-mode checkpoint of the same app restored by podman directly: what users compare with."""
    archive = Path(built["container_snapshot"]) / "checkpoint.tar"

    def launch() -> tuple[dict[str, Any], str]:
        port = free_port()
        name = f"ws-raw-{uuid.uuid4().hex[:6]}"
        r = outside_ttr(["podman", "container", "restore", "--import", str(archive), "--name", name,
                         "--ignore-static-ip", "--ignore-static-mac", "-p", f"127.0.0.1:{port}:8080"], port=port)
        return r, name

    try:
        last, runs = _outside(benchmark, launch)
    except RuntimeError as exc:  # podman's own restore failing is a result too: the table says so
        record(built["app"], raw_error=str(exc).splitlines()[0][-160:])
        pytest.skip(f"raw podman restore failed: {exc}")
    _stop(cache, last["name"])
    record(built["app"], raw_ttr=_median(runs, "ttr_s"), slowest_raw_s=max(r["slowest_attempt_s"] for r in runs))


def test_criu_restore_in_a_started_container(benchmark: Any, built: dict[str, Any], cache: Path) -> None:
    """The floor: the container is already up (network, ports published; `sleep` as PID 1, untimed), and only the
    restore is timed, triggered with `podman exec` of the same init and CRIU on the same snapshot dir."""
    from warmstart.core import sandbox
    from warmstart.runtime.hooks import init_env

    snapshot = Path(built["snapshot_path"])
    manifest = json.loads((snapshot / "manifest.json").read_text())
    image = manifest["image"]["ref"]
    helper_env = [f"--env={k}={v}" for k, v in init_env(manifest["spec"]).items()]
    pending: list[tuple[str, int]] = []

    def launch() -> tuple[dict[str, Any], str]:
        name, port = pending.pop()
        r = outside_ttr(["podman", "exec", "-d", name, str(sandbox.INIT), "restore", "--snapshot",
                         sandbox.SNAPSHOT_MOUNT], port=port)
        return r, name

    def start_idle() -> None:  # untimed: a started container waiting for the restore
        port, name = free_port(), f"ws-floor-{uuid.uuid4().hex[:6]}"
        mounts = [f"--volume={m}" for m in [*sandbox.tool_mounts(), f"{snapshot}:{sandbox.SNAPSHOT_MOUNT}:ro"]]
        privileges = [f"--cap-add={c}" for c in sandbox.CAP_ADD] + [f"--security-opt={o}" for o in sandbox.SECURITY_OPT]
        subprocess.run(["podman", "run", "-d", "--name", name, "--label", f"io.warmstart.session={SESSION}",
                        *mounts, *privileges, *helper_env, "-p", f"127.0.0.1:{port}:8080", "--entrypoint", "sleep",
                        image,
                        "infinity"], check=True, capture_output=True)
        pending.append((name, port))

    last, runs = _outside(benchmark, launch, prepare=start_idle)
    _stop(cache, last["name"])
    record(built["app"], floor_ttr=_median(runs, "ttr_s"))


assert SESSION  # every container a benchmark starts carries the session label, so the cache fixture sweeps them


SHIM = """#!/bin/sh
date +%s%N >> "{log}"
exit 125
"""


def test_cli_to_first_engine_call(tmp_path: Path) -> None:
    """`warmstart run` from exec to its first engine call (#11: at most 50 ms), beside a bare interpreter's start.
    A podman shim on PATH writes the time it was exec'd and refuses everything, so nothing starts; the shim's own
    start (sh, date) counts against us."""
    from warmstart.cache.store import SnapshotStore
    from warmstart.core.spec import AppSpec

    store = SnapshotStore(tmp_path / "cache").open()
    store.save_app(AppSpec(name="cli", image="localhost/warmstart-example-counter:latest", ports=(8080,)))
    bindir, log = tmp_path / "bin", tmp_path / "calls"
    bindir.mkdir()
    (bindir / "podman").write_text(SHIM.format(log=log))
    (bindir / "podman").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "WARMSTART_CACHE": str(store.root)}
    firsts, bare = [], []
    for _ in range(21):
        log.unlink(missing_ok=True)
        t0 = time.time_ns()
        subprocess.run([WARMSTART, "run", "cli"], env=env, capture_output=True)
        firsts.append((int(log.read_text().split()[0]) - t0) / 1e6)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], capture_output=True)
        bare.append((time.perf_counter() - t) * 1000)
    record("cli", first_engine_call_ms=statistics.median(firsts), bare_python_ms=statistics.median(bare))
