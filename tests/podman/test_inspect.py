"""`warmstart cache inspect --contents`: what a snapshot holds, decoded by CRIU's own decoder (pycriu), for a
sandbox snapshot (CRIU's image dir) and a container-mode one (podman's checkpoint archive, which Debian's
checkpointctl reads too)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.helpers import build, reseal

pytestmark = pytest.mark.podman
CHECKPOINTCTL = "/opt/warmstart/criu/bin/checkpointctl"  # scripts/setup-host installs it beside CRIU


@pytest.mark.parametrize("mode", ["sandbox", "container"])
def test_contents_list_the_apps_process_its_listening_port_and_env_names_only(cli: Cli, owned_app: str,
                                                                             mode: str) -> None:
    built = build(cli, owned_app, "--mode", mode, "-e", "GREETING=hello-value")
    res = cli("cache", "inspect", owned_app, "--contents", "--json")
    assert res.returncode == 0, res.stderr
    contents = res.json["contents"]
    app = [p for p in contents["processes"] if "/app/app.py" in p["command"]]
    assert len(app) == 1 and app[0]["command"][:2] == ["python3", "-u"] and app[0]["memory_bytes"] > 1 << 20
    assert 8080 in contents["listening"]
    assert any(f["kind"] == "socket" and f["state"] == "listening" and f["port"] == 8080 for f in app[0]["fds"])
    assert {"GREETING", "STARTUP_DELAY"} <= set(app[0]["env_names"])
    assert "hello-value" not in res.stdout  # names, never values
    human = cli("cache", "inspect", owned_app, "--contents")
    assert "python3 -u /app/app.py" in human.stdout and "listening  8080" in human.stdout
    if mode == "container" and shutil.which(CHECKPOINTCTL):
        shown = subprocess.run([CHECKPOINTCTL, "show", str(Path(built["snapshot_path"]) / "checkpoint.tar")],
                               capture_output=True, text=True)
        assert shown.returncode == 0 and "warmstart-example-counter" in shown.stdout and "Podman" in shown.stdout, shown


def test_contents_of_a_damaged_image_is_a_one_line_error(cli: Cli, owned_app: str) -> None:
    built = build(cli, owned_app)
    snapshot = Path(built["snapshot_path"])
    pstree = snapshot / "images" / "pstree.img"
    good = pstree.read_bytes()
    pstree.write_bytes(good[:-3])  # no longer what its digest says: refused before decoding
    res = cli("cache", "inspect", owned_app, "--contents")
    assert res.returncode != 0 and res.stderr.startswith("warmstart: error: ") and "pstree.img" in res.stderr
    pstree.write_bytes(good[:8] + b"\xff" * (len(good) - 8))  # garbage behind valid magics, digests re-sealed
    reseal(snapshot)
    res = cli("cache", "inspect", owned_app, "--contents")
    assert res.returncode != 0 and res.stderr.startswith("warmstart: error: cannot decode pstree.img")
    assert len(res.stderr.strip().splitlines()) <= 2


THREADED = ("import http.server, threading, time\n"
            "for i in range(4):\n"
            "    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self): self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n"
            "http.server.HTTPServer(('', 8080), H).serve_forever()\n")


def test_coredump_writes_a_core_per_process_that_gdb_opens_with_the_apps_threads(
    cli: Cli, owned_app: str, tmp_path: Path
) -> None:
    """`cache coredump`: an ELF core of the snapshot's process, 0600, in which gdb finds all five threads (the main
    one and four workers), with the registers CRIU saved; an existing core is not overwritten."""
    spec = tmp_path / "warmstart.toml"
    spec.write_text(f'[apps.{owned_app}]\nimage = "localhost/warmstart-example-counter:latest"\n'
                    f'command = ["python3", "-c", """{THREADED}"""]\nports = [8080]\nready = {{ http = "/" }}\n')
    built = cli("build", "-f", str(spec), "--json")
    assert built.returncode == 0, built.stderr
    out = tmp_path / "cores"
    res = cli("cache", "coredump", owned_app, "-o", str(out), "--json")
    assert res.returncode == 0, res.stderr
    (core,) = res.json["cores"]
    assert core["threads"] == 5 and core["comm"] == "python3"
    path = Path(core["path"])
    assert path.parent == out and (path.stat().st_mode & 0o777) == 0o600
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed (scripts/setup-host installs it)")
    shown = subprocess.run(["gdb", "-batch", "-ex", "info threads", "-ex", "info registers rip", "/usr/bin/python3",
                            str(path)], capture_output=True, text=True, timeout=120)
    listed = re.findall(r"^[* ] +\d+ +LWP (\d+) ", shown.stdout, re.MULTILINE)  # gdb's `info threads` table
    assert len(listed) == 5 and str(core["pid"]) in listed, shown.stdout + shown.stderr
    assert "rip" in shown.stdout
    again = cli("cache", "coredump", owned_app, "-o", str(out))
    assert again.returncode == 2 and "exists already" in again.error
