"""High availability (#27): checkpoint freeze per 100 MiB, and recovery after a real `kill -9` (kill to the first
good answer, polled from outside every 10 ms) beside a cold restart's time-to-ready, side by side in one run."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.conftest import ROOT, SESSION, WARMSTART, outside_ttr, record, warmstart
from tests.helpers import ballast_spec, free_port


def _first_answer_after(address: str, since: float, *, path: str, timeout: float = 120) -> float:
    """Seconds from `since` to the first HTTP 200 from `address` (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{address}{path}", timeout=1) as resp:
                if resp.status == 200:
                    return time.monotonic() - since
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"{address} did not answer within {timeout}s")


@pytest.mark.parametrize("service", ["100 MiB", "1024 MiB", "1024 MiB lazy", "py-model"])
def test_ha_freeze_and_recovery(service: str, cache: Path, tmp_path: Path) -> None:
    """The counter with 100 MiB and 1 GiB of random memory (freeze per size; restored eagerly, and with `lazy =
    true` lazily: only what the app touches comes before it answers), and the Python example (Flask + pandas +
    scikit-learn, a model fitted at start: recovery beside an expensive cold start)."""
    if service == "py-model":
        name, spec = service, ROOT / "images" / "examples" / "py-model" / "warmstart.toml"
        warmstart("build", "-f", str(spec), cache=cache)
    else:
        name = f"ha{service.split()[0]}{'lazy' if 'lazy' in service else ''}"
        spec = ballast_spec(tmp_path / "warmstart.toml", name, size=int(service.split()[0]), lazy="lazy" in service)
        warmstart("build", "--name", name, "-f", str(spec), "--force", cache=cache)
    env = {**os.environ, "WARMSTART_CACHE": str(cache), "WARMSTART_SESSION": SESSION}
    proc = subprocess.Popen([WARMSTART, "run", name, "-f", str(spec), "--restart", "on-failure",
                             "--checkpoint-every", "5s", "--keep", "2", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    events: list[dict] = []
    reader = threading.Thread(target=lambda: events.extend(json.loads(ln) for ln in proc.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while sum(e["event"] == "checkpointed" for e in events) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        started = next(e for e in events if e["event"] == "started")
        checkpoints = [e for e in events if e["event"] == "checkpointed"]
        pid = json.loads(subprocess.run(["podman", "inspect", started["name"]], capture_output=True,
                                        check=True).stdout)[0]["State"]["Pid"]
        app = [c for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
        killed = time.monotonic()
        subprocess.run(["kill", "-9", *app], check=True)
        time.sleep(0.05)  # the port stays open until the container is gone: wait for the failure first
        recovery = _first_answer_after(started["ports"]["8080/tcp"], killed, path="/healthz")
    finally:
        proc.send_signal(2)
        proc.wait(timeout=120)
        subprocess.run([WARMSTART, "stop", "--app", name], env=env, capture_output=True)
    port = free_port()
    cold = outside_ttr([WARMSTART, "run", name, "-f", str(spec), "--cold", "-p", f"127.0.0.1:{port}:8080", "--json"],
                       port=port, path="/healthz", env={"WARMSTART_CACHE": str(cache)})
    subprocess.run([WARMSTART, "stop", "--app", name], env=env, capture_output=True)
    frozen = [e["frozen_seconds"] for e in checkpoints if e.get("frozen_seconds") is not None]
    record(f"ha {service}", frozen_s=statistics.median(frozen) if frozen else None,
           checkpoint_s=statistics.median(e["checkpoint_seconds"] for e in checkpoints), recovery_s=recovery,
           cold_ttr=cold["ttr_s"])
