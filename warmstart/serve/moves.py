"""Migration through the front (`serve --migrate-to REF --migrate-via CMD`, triggered by `POST /migrate` on the
admin address): the front's instance moves to another host with `migrate` (stop-and-copy) and no client notices.

While it moves, the front holds every new connection instead of refusing it (the instance is out of the ready set
and no other is started for it), and requests cut by the freeze are sent again once it answers (idempotent ones;
front.py's retry rule); when the destination is ready, everything held goes there. The `migrated` event reports
how long connections were held and how many waited. A failed migration has restored the instance here (migrate's
own rule, same name and ports), and the held connections go to it.

The front reaches the destination at the address the destination's `run` reports (the same host port: migrate
keeps it). On one machine, or where that address is routed to the other host, that is direct; an instance the front
published on 127.0.0.1 is not reachable on another host's loopback, which is this design's limit.

`front` is front.py's Front (and `inst` its Instance), typed Any here: front.py imports this module.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from warmstart.errors import WarmstartError
from warmstart.migrate.migration import migrate


async def migrate_through(front: Any) -> tuple[int, dict[str, Any]]:
    """Move the front's instance (its only one, or the least busy) as configured; the HTTP status and body for the
    admin request."""
    to, via = front.opts.migrate_to, front.opts.migrate_via
    if not to or not via:
        return 409, {"error": "serve was started without --migrate-to and --migrate-via"}
    if front.migrating is not None:
        return 409, {"error": f"instance {front.migrating.result.name} is being migrated already"}
    inst = min((i for i in front.instances if not i.remote), key=lambda i: i.active, default=None)
    if inst is None:
        return 409, {"error": "no instance of this host runs: nothing to migrate"}
    return await _move(front, inst, to=to, via=list(via))


async def _move(front: Any, inst: Any, *, to: str, via: list[str]) -> tuple[int, dict[str, Any]]:
    name = inst.result.name
    front.migrating, held_from = inst, time.monotonic()
    front.emit({"event": "migrating", "instance": name, "to": to})
    try:
        result = await asyncio.to_thread(migrate, name, to=to, via=via, engine=front.engine, store=front.store)
    except WarmstartError as exc:  # restored here when it could be: the same name and host port as before
        outcome: tuple[int, dict[str, Any]] = (500, {"error": exc.message, "instance": name})
        front.emit({"event": "migrate_failed", "instance": name, "error": exc.message})
    else:
        host, _, port = str(result.destination["ports"][f"{front.port}/tcp"]).rpartition(":")
        inst.host, inst.port, inst.remote = "127.0.0.1" if host in ("", "0.0.0.0") else host, int(port), True
        outcome = (200, {"instance": name, "snapshot": result.snapshot, "reference": result.reference,
                         "downtime_seconds": result.downtime_seconds, "phases": result.phases})
    finally:
        waiting = front.waiting
        async with front.changed:
            front.migrating = None
            front.changed.notify_all()
    held = round(time.monotonic() - held_from, 3)
    if outcome[0] == 200:
        front.emit({"event": "migrated", "instance": name, "held_seconds": held, "held_connections": waiting,
                    "address": f"{inst.host}:{inst.port}", **{k: v for k, v in outcome[1].items() if k != "instance"}})
    return outcome[0], {**outcome[1], "held_seconds": held, "held_connections": waiting}


def stop_remote(front: Any, inst: Any) -> None:
    """Stop a migrated instance where it runs now (`VIA warmstart stop NAME`), best effort."""
    from warmstart.migrate.migration import stop_destination

    stop_destination(list(front.opts.migrate_via), inst.result.name, lambda _: None)

