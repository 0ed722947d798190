"""The front's admin listener (`serve --admin HOST:PORT`, keep it on loopback): /healthz, /metrics, POST /migrate."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from warmstart.serve import moves


async def handle_admin(front: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """GET /healthz (200 serving, 503 draining), GET /metrics (Prometheus text format), POST /migrate (moves.py;
    answered when the move is over)."""
    try:
        request = await asyncio.wait_for(reader.readline(), timeout=5)
        path = request.decode(errors="replace").split(" ")[1] if request.count(b" ") >= 2 else ""
        if path == "/healthz":
            status = "503 Service Unavailable" if front.draining else "200 OK"
            body = json.dumps({"status": "draining" if front.draining else "serving",
                               "instances": len(front.instances), "pool": len(front.pool)}).encode()
            ctype = "application/json"
        elif request.startswith(b"POST ") and path == "/migrate":
            code, answer = await moves.migrate_through(front)
            status = {200: "200 OK", 409: "409 Conflict"}.get(code, "500 Internal Server Error")
            body, ctype = json.dumps(answer).encode(), "application/json"
        elif path == "/metrics":
            status, body, ctype = "200 OK", front.metrics.render(
                modes=[i.result.mode for i in front.instances], pool=len(front.pool),
                open_connections=sum(i.active for i in front.instances)), front.metrics.content_type
        else:
            status, body, ctype = "404 Not Found", b"not found: try /healthz or /metrics\n", "text/plain"
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)
        await writer.drain()
    except (TimeoutError, OSError, IndexError):
        pass
    finally:
        writer.close()
