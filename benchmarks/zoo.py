"""The zoo run: every service of images/zoo/warmstart.toml built, started cold and restored, each timed by an
outside client from the moment of the launch command (its own protocol on the published port), checked with the
service's own client (data written before the checkpoint), and loaded with its own benchmark tool; the table is
written to docs/compatibility.md and the figures to benchmarks/results/zoo.json.

    python -m benchmarks.zoo [--only redis,postgres] [--fast] [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "images" / "zoo"
SPEC = ZOO / "warmstart.toml"
RESULTS = ROOT / "benchmarks" / "results" / "zoo.json"
DOC = ROOT / "docs" / "compatibility.md"
WARMSTART = str(Path(sys.executable).with_name("warmstart"))


@dataclass
class Outcome:
    service: str
    version: str = ""
    built: bool = False
    holds: dict[str, int] = field(default_factory=dict)
    cold_s: float | None = None
    restored_s: float | None = None
    mode: str = ""  # what the forced restore did: restored, or cold (and why, in note)
    policy: str = ""  # what a plain `run` does after this build: "restore", or "cold" where the restore did not win
    trial_cold_s: float | None = None  # the build's trial medians, which the policy judges by
    trial_restored_s: float | None = None
    check: str = ""  # "ok" or what went wrong
    load: str = ""
    note: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def client_ready(port: int, probe: Any) -> bool:
    """One attempt of an outside client: its protocol's first exchange on 127.0.0.1:port."""
    if isinstance(probe, str) and probe.startswith("http:"):  # HTTP/1.1: H2's console answers 1.0 with a 400
        request = f"GET {probe[5:]} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        send, expect = request.encode(), b"HTTP/1."
    else:
        send, expect = bytes.fromhex(probe["send"]), bytes.fromhex(probe["expect"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
            if send:
                s.sendall(send)
            reply = s.recv(256)
    except OSError:
        return False
    if isinstance(probe, str):
        return reply.startswith(expect) and reply.split(b" ")[1:2] == [b"200"]
    return len(reply) > 0 and reply.startswith(expect)


def timed_launch(argv: list[str], port: int, probe: Any, timeout: float = 240) -> tuple[float | None, dict[str, Any]]:
    """Seconds from the launch command to the first good client exchange (None: never), and run's JSON."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = False
    while time.monotonic() - t0 < timeout and not (ready := client_ready(port, probe)):
        time.sleep(0.005)
    ttr = round(time.monotonic() - t0, 3) if ready else None
    out, err = proc.communicate(timeout=timeout)
    try:
        result: dict[str, Any] = json.loads(out)
    except ValueError:
        result = {"error": err.strip().splitlines()[-1:] or ["no output"]}
    return ttr, result


def sh(name: str, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "exec", name, "bash", "-c", command], capture_output=True, text=True,
                          timeout=timeout)


def warmstart(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WARMSTART, *args], capture_output=True, text=True, timeout=timeout)


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def forced_spec(directory: Path) -> Path:
    """SPEC with always_restore = true in every app (the zoo proves the restore, whatever the policy would pick),
    written to `directory`, with its build contexts made absolute."""
    text = re.sub(r"^(\[apps\.[\w-]+\].*)$", r"\1\nalways_restore = true", SPEC.read_text(), flags=re.M)
    text = re.sub(r'^build = "([\w-]+)"', lambda m: f'build = "{ZOO / m.group(1)}"', text, flags=re.M)
    path = directory / "warmstart.toml"
    path.write_text(text)
    return path


def run_service(name: str, zoo: dict[str, Any], spec: dict[str, Any], forced: Path) -> Outcome:
    out = Outcome(service=name)
    port_in = int(zoo.get("port", spec["ports"][0]))
    built = warmstart("build", "-f", str(SPEC), "--name", name, "--json")
    if built.returncode != 0:
        errors = (ln for ln in built.stderr.splitlines() if ln.startswith("warmstart: error:"))
        err = next(errors, last_line(built.stderr))
        out.note = err.removeprefix("warmstart: error: ")
        return out
    out.built = True
    figures = json.loads(built.stdout)
    out.trial_cold_s, out.trial_restored_s = figures.get("cold_ready_seconds"), figures.get("restored_ready_seconds")
    from warmstart.restore import policy

    out.policy = "cold" if policy.skip_reason(name, figures, policy.Health(), always_restore=False) else "restore"
    info = warmstart("cache", "inspect", name, "--json")
    out.holds = json.loads(info.stdout).get("holds", {}) if info.returncode == 0 else {}
    answers: dict[str, str] = {}
    for mode in ("cold", "restored"):
        port = free_port()
        argv = [WARMSTART, "run", name, "-f", str(forced), "--json", "-p", f"127.0.0.1:{port}:{port_in}",
                *(["--cold"] if mode == "cold" else [])]
        ttr, result = timed_launch(argv, port, zoo["probe"])
        instance = result.get("name")
        try:
            if mode == "cold":
                out.cold_s = ttr
                out.version = last_line(sh(instance, zoo["version"]).stdout) if instance else ""
            else:
                out.restored_s, out.mode = ttr, result.get("mode", "failed")
                if out.mode != "restored":
                    out.note = result.get("reason") or str(result.get("error", ""))
            if not instance or ttr is None:
                out.check = out.check or f"{mode}: never ready ({result.get('error', '')})"
                continue
            checked = sh(instance, zoo["check"])
            answers[mode] = checked.stdout.strip()
            if mode == "restored":
                want = zoo.get("expect", "before-checkpoint")
                if checked.returncode != 0 or want not in checked.stdout:
                    out.check = f"expected {want!r}, got {last_line(checked.stdout + checked.stderr)!r}"
                elif zoo.get("same_as_cold") and answers.get("cold") != answers["restored"]:
                    out.check = "answer differs from a cold start's"
                else:
                    out.check = "ok"
                loaded = sh(instance, zoo["load"])
                failed = loaded.returncode != 0 or any("error" in ln.lower() for ln in loaded.stdout.splitlines())
                out.load = last_line(loaded.stderr or loaded.stdout) if failed else "ok"
        finally:
            if instance:
                warmstart("stop", instance)
    return out


def table(outcomes: list[Outcome]) -> str:
    rows = ["| service | version | holds | cold (s) | restored (s) | restored/cold | restore | check | load | "
            "`run` picks | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        ratio = f"{o.restored_s / o.cold_s:.0%}" if o.cold_s and o.restored_s and o.mode == "restored" else ""
        holds = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in o.holds.items() if v)
        rows.append(f"| {o.service} | {o.version.replace('|', '/')} | {holds} | {o.cold_s or ''} | "
                    f"{o.restored_s or ''} | {ratio} | {o.mode or 'not built'} | {o.check} | {o.load} | {o.policy} | "
                    f"{o.note.replace('|', '/')[:300]} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated services")
    ap.add_argument("--fast", action="store_true", help="only the services marked fast (CI's subset)")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/compatibility.md")
    a = ap.parse_args()
    zoo = tomllib.loads((ZOO / "zoo.toml").read_text())
    specs = tomllib.loads(SPEC.read_text())["apps"]
    names = [n for n in zoo if (not a.only or n in a.only.split(",")) and (not a.fast or zoo[n].get("fast"))]
    outcomes = []
    scratch = Path(tempfile.mkdtemp(prefix="warmstart-zoo-spec."))
    forced = forced_spec(scratch)
    for name in names:
        print(f"zoo: {name}", file=sys.stderr, flush=True)
        try:
            outcome = run_service(name, zoo[name], specs[name], forced)
        except subprocess.TimeoutExpired as exc:
            outcome = Outcome(service=name, note=f"timed out: {shlex.join(map(str, exc.cmd))[:200]}")
        print(f"zoo: {name}: {json.dumps(asdict(outcome))}", file=sys.stderr, flush=True)
        outcomes.append(outcome)
    shutil.rmtree(scratch)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if a.only and RESULTS.exists():  # a partial run updates its services in the last full run's results
        rerun = {o.service for o in outcomes}
        kept = [Outcome(**o) for o in json.loads(RESULTS.read_text())["services"] if o["service"] not in rerun]
        outcomes = sorted(kept + outcomes, key=lambda o: list(zoo).index(o.service) if o.service in zoo else 99)
    RESULTS.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "trials": os.environ.get("WARMSTART_TRIALS", "3"),
                                   "services": [asdict(o) for o in outcomes]}, indent=2) + "\n")
    if not a.no_docs and not a.fast:
        DOC.parent.mkdir(exist_ok=True)
        text = DOC.read_text() if DOC.exists() else ""
        head = text.split("<!-- zoo table -->")[0] if "<!-- zoo table -->" in text else text
        DOC.write_text(head + "<!-- zoo table -->\n" + table(outcomes))
    print(table(outcomes))
    return 0 if all(o.check == "ok" and o.load == "ok" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
