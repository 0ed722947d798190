"""Migration downtime (#15) through a registry on 127.0.0.1 between two "hosts" on this machine
(tests/podman/conftest.py host_b: separate podman storage and cache): the counter with 100 MiB and 1 GiB of random
memory, stop-and-copy and post-copy side by side. Downtime is what a client polling the published address every 5 ms
sees: the last answer from the source to the first from the destination."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import SESSION, WARMSTART, record, warmstart
from tests.helpers import RegistryServer, ballast_spec, free_port, login
from tests.podman.conftest import host_b, registry  # noqa: F401  (fixtures)

BIN = str(Path(sys.executable).parent)


def _poll(address: str, stop: threading.Event, seen: list[tuple[float, int]]) -> None:
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"http://{address}/", timeout=1) as resp:
                seen.append((time.monotonic(), json.loads(resp.read())["count"]))
        except OSError:
            pass
        time.sleep(0.005)


def _settled(container: str, timeout: float = 120) -> None:
    """Until a lazily restored instance has all of its memory (its init says so): a service that has run for a
    while, not one whose pages are still streaming in from its own restore (the dump would wait for them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = subprocess.run(["podman", "logs", container], capture_output=True, text=True).stderr
        if "restored pid" in logs and ("eagerly" in logs.split("restored pid")[-1].splitlines()[0]
                                       or "all of the app's memory is in" in logs):
            return
        time.sleep(0.1)
    raise AssertionError(f"{container} did not settle: {logs[-500:]}")


def _migrate_measured(ref: str, *, spec: Path, cache: Path, authfile: Path, via: str, to: str,
                      post_copy: bool) -> tuple[float, dict[str, Any]]:
    """Start an instance of the build's snapshot, migrate it once settled while a client polls it; the downtime the
    client saw and migrate's result."""
    port = free_port()
    out = warmstart("run", ref, "-f", str(spec), "-p", f"127.0.0.1:{port}:8080", cache=cache)
    _settled(out["name"])
    seen: list[tuple[float, int]] = []
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(f"127.0.0.1:{port}", stop, seen))
    poller.start()
    os.sync()  # each migration from a quiet disk: the previous one's GiBs of writes are not still flushing
    time.sleep(0.5)
    proc = subprocess.run([WARMSTART, "migrate", out["name"], "--to", to, "--via", via, "--json",
                           *(["--post-copy"] if post_copy else [])], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "WARMSTART_CACHE": str(cache), "REGISTRY_AUTH_FILE": str(authfile)})
    ended = time.monotonic()
    while not (seen and seen[-1][0] > ended) and time.monotonic() < ended + 30:
        time.sleep(0.05)  # until the destination has answered the client
    stop.set()
    poller.join()
    assert proc.returncode == 0, proc.stderr
    print(proc.stderr, file=sys.stderr)  # migrate's progress: shown with -s
    result: dict[str, Any] = json.loads(proc.stdout)
    assert seen and seen[-1][0] > ended, "the destination never answered the client"
    gaps = [(b[0] - a[0], a[1], b[1]) for a, b in zip(seen, seen[1:], strict=False)]
    downtime, last_count, first_count = max(gaps)
    after = [g[0] for g in gaps[gaps.index(max(gaps)) + 1:]]
    result["worst_gap_after_s"] = max(after, default=0.0)  # post-copy: while the rest of the memory streams in
    # The destination continued the source's state: the count goes on, past the requests that reached the instance
    # but were given up on by the client after its 1 s timeout (the server counted them; they are in the gap).
    assert last_count < first_count <= last_count + 10
    return downtime, result


@pytest.mark.parametrize("size", [100, 1024])
def test_migration_downtime(size: int, cache: Path, tmp_path: Path, host_b: dict[str, str],  # noqa: F811
                            registry: RegistryServer) -> None:  # noqa: F811
    """Stop-and-copy and post-copy side by side: two instances of one build, each migrated to host B."""
    name = f"mig{size}"
    spec = ballast_spec(tmp_path / "warmstart.toml", name, size=size)
    authfile = tmp_path / "auth.json"
    login(registry, authfile)
    built = warmstart("build", "--name", name, "-f", str(spec), "--force", cache=cache)
    via = shlex.join(["env", f"PATH={BIN}:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                      f"REGISTRY_AUTH_FILE={authfile}", f"WARMSTART_SESSION={SESSION}",
                      *(f"{k}={v}" for k, v in host_b.items())])
    to = f"{registry.address}/bench/{name}"
    # Both from the build's snapshot (not the newest, which after the first migration is its checkpoint).
    copy_down, copy = _migrate_measured(built["snapshot"], spec=spec, cache=cache, authfile=authfile, via=via, to=to,
                                        post_copy=False)
    post_down, post = _migrate_measured(built["snapshot"], spec=spec, cache=cache, authfile=authfile, via=via, to=to,
                                        post_copy=True)
    record(f"migrate {size} MiB", downtime_s=copy_down, **{f"{k}_s": v for k, v in copy["phases"].items()},
           post_copy_downtime_s=post_down, post_copy_streamed_bytes=post["streamed_bytes"],
           worst_gap_after_s=copy["worst_gap_after_s"], post_copy_worst_gap_after_s=post["worst_gap_after_s"],
           **{f"post_copy_{k}_s": v for k, v in post["phases"].items()})


def _client(url: str, stop: threading.Event, log: list[tuple[float, float, int | None]], timeout: float) -> None:
    """A client requesting in a loop every 5 ms: (sent, answered or given up, count or None when it failed)."""
    while not stop.is_set():
        sent = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                log.append((sent, time.monotonic(), json.loads(resp.read())["count"]))
        except (OSError, ValueError):
            log.append((sent, time.monotonic(), None))
        time.sleep(0.005)


def _client_view(log: list[tuple[float, float, int | None]]) -> dict[str, float]:
    """Failed requests, the longest time without an answer (a failure at the end counts until it failed), and the
    longest a single request took."""
    ordered = sorted(log, key=lambda e: e[1])
    last_answer, gap = (ordered[0][0] if ordered else 0.0), 0.0
    for _, done, count in ordered:
        if count is not None:
            gap, last_answer = max(gap, done - last_answer), done
    if ordered and ordered[-1][2] is None:
        gap = max(gap, ordered[-1][1] - last_answer)
    return {"failed": sum(e[2] is None for e in log), "requests": len(log), "gap_s": round(gap, 3),
            "slowest_s": round(max((e[1] - e[0] for e in log), default=0), 3)}


@pytest.mark.parametrize("size", [100, 1024])
def test_migration_with_and_without_the_front(size: int, cache: Path, tmp_path: Path,
                                              host_b: dict[str, str], registry: RegistryServer) -> None:  # noqa: F811
    """One build, three migrations to host B, side by side: a client requesting the instance's published port
    directly during `warmstart migrate`, and a client requesting through `serve` during POST /migrate (the front
    holds what arrives meanwhile), stop-and-copy and post-copy. Failed requests, the longest wait for an answer,
    the gap between answers."""
    name = f"front{size}"
    spec = ballast_spec(tmp_path / "warmstart.toml", name, size=size, lazy=False)
    authfile = tmp_path / "auth.json"
    login(registry, authfile)
    built = warmstart("build", "--name", name, "-f", str(spec), "--force", cache=cache)
    via = shlex.join(["env", f"PATH={BIN}:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                      f"REGISTRY_AUTH_FILE={authfile}", f"WARMSTART_SESSION={SESSION}",
                      *(f"{k}={v}" for k, v in host_b.items())])
    env = {"REGISTRY_AUTH_FILE": str(authfile), "WARMSTART_SESSION": SESSION}
    # Direct: a client with a 30 s timeout per request, as common HTTP clients have; the same through the front.
    port = free_port()
    out = warmstart("run", built["snapshot"], "-f", str(spec), "-p", f"127.0.0.1:{port}:8080", cache=cache)
    direct_log: list[tuple[float, float, int | None]] = []
    stop = threading.Event()
    client = threading.Thread(target=_client, args=(f"http://127.0.0.1:{port}/", stop, direct_log, 30.0))
    client.start()
    os.sync()  # each migration from a quiet disk: the previous one's GiBs of writes are not still flushing
    time.sleep(0.5)
    proc = subprocess.run([WARMSTART, "migrate", out["name"], "--to", f"{registry.address}/bench/{name}", "--via",
                           via, "--json"], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "WARMSTART_CACHE": str(cache), **env})
    time.sleep(1.0)
    stop.set()
    client.join()
    assert proc.returncode == 0, proc.stderr
    print(proc.stderr, file=sys.stderr)  # migrate's progress: shown with -s
    direct_phases = json.loads(proc.stdout)["phases"]
    subprocess.run(shlex.split(via) + [WARMSTART, "stop", out["name"]], capture_output=True)
    warmstart("cache", "rm", json.loads(proc.stdout)["snapshot"], cache=cache)  # the front restores the build's
    # Through the front, stop-and-copy then post-copy: the same client, the same timeout.
    held, moved = _through_front(name, spec, cache, f"{registry.address}/bench/{name}-front", via, env, post_copy=False)
    warmstart("cache", "rm", moved["snapshot"], cache=cache)
    post, post_moved = _through_front(name, spec, cache, f"{registry.address}/bench/{name}-post", via, env,
                                      post_copy=True)
    direct = _client_view(direct_log)
    record(f"migrate {size} MiB", direct_failed=direct["failed"], direct_gap_s=direct["gap_s"],
           direct_slowest_s=direct["slowest_s"],
           direct_requests=direct["requests"], front_failed=held["failed"], front_gap_s=held["gap_s"],
           front_slowest_s=held["slowest_s"], front_requests=held["requests"], front_held_s=moved["held_seconds"],
           front_downtime_s=moved["downtime_seconds"],
           front_post_failed=post["failed"], front_post_gap_s=post["gap_s"], front_post_slowest_s=post["slowest_s"],
           front_post_requests=post["requests"], front_post_held_s=post_moved["held_seconds"],
           **{f"direct_{k}_s": v for k, v in direct_phases.items()},
           **{f"front_{k}_s": v for k, v in moved["phases"].items()})


def _through_front(name: str, spec: Path, cache: Path, to: str, via: str, env: dict[str, str], *,
                   post_copy: bool) -> tuple[dict[str, float], dict[str, Any]]:
    """`serve` restoring the build's snapshot, a client requesting through it every 5 ms (30 s timeout) during
    POST /migrate: the client's view and the front's answer."""
    from tests.conftest import Cli
    from tests.podman.test_serve import Front

    admin = free_port()
    front = Front(Cli(cache), name, "-f", str(spec), "--wait-timeout", "120", "--admin", f"127.0.0.1:{admin}",
                  "--pool", "0", "--migrate-to", to, "--migrate-via", via,
                  *(["--migrate-post-copy"] if post_copy else []), env=env)
    try:
        assert front.get("/")[0] == 200
        log: list[tuple[float, float, int | None]] = []
        stop = threading.Event()
        client = threading.Thread(target=_client, args=(f"http://127.0.0.1:{front.port}/", stop, log, 30.0))
        client.start()
        os.sync()  # as above
        time.sleep(0.5)
        request = urllib.request.Request(f"http://127.0.0.1:{admin}/migrate", method="POST")
        with urllib.request.urlopen(request, timeout=900) as resp:
            moved: dict[str, Any] = json.loads(resp.read())
        time.sleep(1.0)
        stop.set()
        client.join()
    finally:
        front.stop()
    assert "error" not in moved, moved
    return _client_view(log), moved

