"""Soak: repeated run/stop cycles and a burst of concurrent connections through `serve` from zero, on real
podman + CRIU. Reports cost per cycle over time and what was left behind (containers, conmon processes, mounts,
file descriptors, disk), and how many of the connections were answered, rejected (503) or hung (must be 0).

Not a test of timings: a benchmark whose numbers go to benchmarks/results/soak.md and soak.json. The sizes are
$WARMSTART_SOAK_CYCLES (default 500) and $WARMSTART_SOAK_CONNECTIONS (default 200).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import RESULTS, SESSION, WARMSTART, warmstart
from benchmarks.test_startup import COUNTER_SPEC

CYCLES = int(os.environ.get("WARMSTART_SOAK_CYCLES", "500"))
CONNECTIONS = int(os.environ.get("WARMSTART_SOAK_CONNECTIONS", "200"))
HANG_AFTER = 60.0  # a connection without an answer after this long counts as hung


def _leftovers(cache: Path) -> dict[str, int]:
    def count(cmd: list[str]) -> int:
        return len(subprocess.run(cmd, capture_output=True, text=True).stdout.split())

    conmon = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit() and _comm(p) == "conmon")
    return {
        "containers": count(["podman", "ps", "-aq", "--filter", f"label=io.warmstart.session={SESSION}"]),
        "conmon_processes": conmon,
        "mounts": len(Path("/proc/self/mountinfo").read_text().splitlines()),
        "open_fds_here": len(os.listdir("/proc/self/fd")),
        "cache_bytes": sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()),
        "podman_storage_bytes": shutil.disk_usage("/var/lib/containers").used,
    }


def _comm(p: Path) -> str:
    try:
        return (p / "comm").read_text().strip()
    except OSError:
        return ""


def _cycles(cache: Path, spec: Path) -> dict[str, Any]:
    before = _leftovers(cache)
    seconds: list[float] = []
    failures: list[str] = []
    modes: dict[str, int] = {}
    for _ in range(CYCLES):
        t = time.perf_counter()
        try:
            out = warmstart("run", "soak", "-f", str(spec), cache=cache)
            modes[out["mode"]] = modes.get(out["mode"], 0) + 1
            warmstart("stop", out["name"], cache=cache)
        except RuntimeError as exc:
            failures.append(str(exc)[:300])
        seconds.append(time.perf_counter() - t)
    after = _leftovers(cache)
    tenth = max(1, CYCLES // 10)
    return {
        "cycles": CYCLES, "failures": len(failures), "failure_messages": failures[:5], "modes": modes,
        "first_tenth_median_s": round(statistics.median(seconds[:tenth]), 3),
        "last_tenth_median_s": round(statistics.median(seconds[-tenth:]), 3),
        "by_tenth_median_s": [round(statistics.median(seconds[i:i + tenth]), 3) for i in range(0, CYCLES, tenth)],
        "leftovers_before": before, "leftovers_after": after,
    }


def _burst(cache: Path, spec: Path) -> dict[str, Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    front = subprocess.Popen([WARMSTART, "serve", "soak", "-f", str(spec), "--listen", f"127.0.0.1:{port}",
                              "--max", "3", "--json"],
                             env={**os.environ, "WARMSTART_CACHE": str(cache), "WARMSTART_SESSION": SESSION},
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert front.stdout is not None
    assert json.loads(front.stdout.readline())["event"] == "listening"
    outcomes: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=HANG_AFTER) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                status = c.recv(64).split(b" ")[1:2]
            kind = "answered" if status == [b"200"] else "rejected" if status == [b"503"] else "failed"
        except TimeoutError:
            kind = "hung"
        except OSError:
            kind = "failed"
        with lock:
            outcomes.append(kind)

    t = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(CONNECTIONS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    front.send_signal(signal.SIGTERM)
    events = [json.loads(line) for line in front.communicate(timeout=120)[0].splitlines() if line.strip()]
    return {"connections": CONNECTIONS, **{k: outcomes.count(k) for k in ("answered", "rejected", "hung", "failed")},
            "seconds": round(elapsed, 2), "instances_started": sum(e["event"] == "started" for e in events)}


@pytest.mark.timeout(3600)  # 500 cycles take about 8 minutes here
def test_soak(cache: Path, tmp_path: Path) -> None:
    spec = tmp_path / "warmstart.toml"
    spec.write_text(COUNTER_SPEC.replace("[apps.counter]", "[apps.soak]"))
    warmstart("build", "--name", "soak", "-f", str(spec), cache=cache)
    result = {"cycles": _cycles(cache, spec), "serve_burst": _burst(cache, spec)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    c, b = result["cycles"], result["serve_burst"]
    lines = [f"# Soak ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"run/stop cycles: {c['cycles']} ({c['modes']}), failures {c['failures']}; median seconds per cycle "
             f"by tenth: {c['by_tenth_median_s']}", *[f"- failure: {m}" for m in c["failure_messages"]], "",
             "| leftover | before | after |", "|---|---|---|"]
    lines += [f"| {k} | {c['leftovers_before'][k]} | {c['leftovers_after'][k]} |" for k in c["leftovers_before"]]
    lines += ["", f"serve from zero, {b['connections']} concurrent connections: answered {b['answered']}, "
                  f"rejected {b['rejected']}, hung {b['hung']}, failed {b['failed']} in {b['seconds']} s; "
                  f"instances started: {b['instances_started']}"]
    (RESULTS / "soak.md").write_text("\n".join(lines) + "\n")
    assert c["failures"] == 0 and b["hung"] == 0
    assert c["leftovers_after"]["containers"] == c["leftovers_before"]["containers"]
