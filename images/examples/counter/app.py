"""Counter service: every request (probes included) increments `count`; GET / returns {"boot_token", "count",
"pid"}; /healthz answers 200 once ready.

STARTUP_DELAY (seconds) simulates an expensive boot; NEVER_READY=1 keeps /healthz at 503 forever.
"""

import json
import os
import secrets
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOOT_TOKEN = secrets.token_hex(8)
STATE = {"count": 0}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        STATE["count"] += 1
        if self.path == "/healthz":
            ready = os.environ.get("NEVER_READY") != "1"
            self._send(200 if ready else 503, {"ready": ready})
            return
        self._send(200, {"boot_token": BOOT_TOKEN, "count": STATE["count"], "pid": os.getpid()})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # keep logs to lifecycle lines
        pass


if __name__ == "__main__":
    time.sleep(float(os.environ.get("STARTUP_DELAY", "0")))
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler)
    print(f"counter listening on :{server.server_port} token={BOOT_TOKEN}", flush=True)
    server.serve_forever()
