"""Counter service: every request (probes included) increments `count`; GET / returns {"boot_token", "count",
"pid"}; /healthz answers 200 once ready.

STARTUP_DELAY (seconds) simulates an expensive boot; NEVER_READY=1 keeps /healthz at 503 forever.
GET /random returns random.random() and uuid4() (clones of one snapshot must differ), GET /seeded only
random.random(); GET /slow?seconds=N answers after N seconds; GET /secret the SHA-256 of $API_KEY as the app sees it now (never the value); GET /events lists the
warmstart_helper hooks that ran (the app registers them when USE_HELPER=1).

KEEP_ALIVE=1 answers HTTP/1.1 with keep-alive (a connection that must survive a migration).
BALLAST_MB (default 0) fills that much memory with random bytes at boot (incompressible: the snapshot's size),
HOT_MB (default 0) a separate buffer that every GET / reads. GET /checksum returns the SHA-256 of both, so a
restore that lost or mixed up a page shows: `at_boot` is the ballast's SHA-256 taken at boot, which it must equal.
"""

import hashlib
import json
import os
import secrets
import random
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOOT_TOKEN = secrets.token_hex(8)
STATE: dict = {"count": 0, "events": []}
BALLAST = bytearray(os.urandom(int(os.environ.get("BALLAST_MB", "0")) << 20))
HOT = bytearray(os.urandom(int(os.environ.get("HOT_MB", "0")) << 20))
BALLAST_AT_BOOT = hashlib.sha256(BALLAST).hexdigest()  # restored with the rest: what /checksum must still match

if os.environ.get("USE_HELPER") == "1":
    import warmstart_helper

    @warmstart_helper.register_before_checkpoint
    def _before() -> None:
        STATE["events"].append("before_checkpoint")

    @warmstart_helper.register_after_restore
    def _after() -> None:
        STATE["events"].append("after_restore")

    warmstart_helper.install()


class Handler(BaseHTTPRequestHandler):
    if os.environ.get("KEEP_ALIVE") == "1":  # HTTP/1.1: a client may send its next request on the same connection
        protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        STATE["count"] += 1
        if self.path == "/healthz":
            ready = os.environ.get("NEVER_READY") != "1"
            self._send(200 if ready else 503, {"ready": ready})
            return
        if self.path == "/seeded":  # only what clones share unless reseeded (uuid4 reads the kernel's generator)
            self._send(200, {"random": random.random()})
            return
        if self.path == "/random":
            self._send(200, {"random": random.random(), "uuid": str(uuid.uuid4())})
            return
        if self.path == "/secret":
            value = os.environ.get("API_KEY")
            self._send(200, {"sha256": hashlib.sha256(value.encode()).hexdigest() if value is not None else None})
            return
        if self.path.startswith("/slow"):  # a request that takes a while: GET /slow?seconds=2
            time.sleep(float(self.path.partition("seconds=")[2] or "2"))
            self._send(200, {"slow": True})
            return
        if self.path == "/checksum":
            self._send(200, {"ballast_sha256": hashlib.sha256(BALLAST).hexdigest(), "at_boot": BALLAST_AT_BOOT,
                             "hot_sha256": hashlib.sha256(HOT).hexdigest(), "ballast_bytes": len(BALLAST)})
            return
        if self.path == "/events":
            self._send(200, {"events": STATE["events"]})
            return
        hot = hashlib.sha256(HOT).hexdigest()[:16] if HOT else None  # the working set every request touches
        self._send(200, {"boot_token": BOOT_TOKEN, "count": STATE["count"], "pid": os.getpid(), "hot": hot})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # hooks and warm-up calls: counted like any request
        STATE["count"] += 1
        STATE["events"].append(f"POST {self.path}")
        self._send(200, {"ok": True})

    def log_message(self, format: str, *args: object) -> None:  # keep logs to lifecycle lines
        pass


if __name__ == "__main__":
    time.sleep(float(os.environ.get("STARTUP_DELAY", "0")))
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler)
    print(f"counter listening on :{server.server_port} token={BOOT_TOKEN}", flush=True)
    server.serve_forever()
