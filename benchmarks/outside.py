"""Time to ready as a client sees it: start a launch command and, from that same moment, poll the published port
the way an impatient client would (connect, GET PATH, 5 ms between attempts) until an HTTP 200 comes back. The
measurement of ../shared/tools/outside-ttr, kept here so benchmarks and the demo need nothing outside the repo.

    python -m benchmarks.outside --port 8080 [--path /healthz] -- warmstart run shop -p 127.0.0.1:8080:8080 --json

prints one JSON object: ttr_s (launch to first 200), slowest_attempt_s (a dropped SYN shows as ~1 s), attempts,
and the launch command's exit code and stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any


def outside_ttr(argv: list[str], *, port: int, path: str = "/healthz", timeout: float = 180,
                env: dict[str, str] | None = None) -> dict[str, Any]:
    request = f"GET {path} HTTP/1.0\r\nHost: outside\r\n\r\n".encode()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    slowest, attempts, ready = 0.0, 0, False
    while time.monotonic() - t0 < timeout and not ready:
        attempts += 1
        start = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3.0) as s:
                s.sendall(request)
                ready = s.recv(64).split(b" ")[1:2] == [b"200"]
        except OSError:
            pass
        slowest = max(slowest, time.monotonic() - start)
        if not ready:
            time.sleep(0.005)
    ttr = time.monotonic() - t0
    out, err = proc.communicate(timeout=timeout)
    return {"ready": ready, "ttr_s": round(ttr, 3), "slowest_attempt_s": round(slowest, 3), "attempts": attempts,
            "launch_exit": proc.returncode, "stdout": out, "stderr": err}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/healthz")
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("give the launch command after --")
    result = outside_ttr(cmd, port=a.port, path=a.path, timeout=a.timeout)
    print(json.dumps(result))
    return 0 if result["ready"] and result["launch_exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
