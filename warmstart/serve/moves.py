"""Migration through the front (`serve --migrate-to REF --migrate-via CMD`, triggered by `POST /migrate` on the
admin address): the front's instance moves to another host with `migrate` (stop-and-copy, or post-copy with
`--migrate-post-copy`) and no client notices.

While it moves, the front holds every new connection instead of refusing it (the instance is out of the ready set
and no other is started for it), and requests cut by the freeze are sent again once it answers (idempotent ones;
front.py's retry rule); when the destination answers (migrate's `on_destination`: for post-copy, while the rest of
its memory still streams in), everything held goes there. The `migrated` event reports
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
    loop = asyncio.get_running_loop()
    front.migrating, held_from = inst, time.monotonic()
    here = (inst.host, inst.port, inst.remote)
    held: dict[str, Any] = {}
    front.emit({"event": "migrating", "instance": name, "to": to})

    async def release(destination: dict[str, Any] | None) -> None:
        """Send what was held to where the instance answers now: the destination, or here (a failure)."""
        if held:
            return
        if destination is not None:
            host, _, port = str(destination["ports"][f"{front.port}/tcp"]).rpartition(":")
            inst.host, inst.port, inst.remote = "127.0.0.1" if host in ("", "0.0.0.0") else host, int(port), True
        held.update(held_seconds=round(time.monotonic() - held_from, 3), held_connections=front.waiting)
        async with front.changed:
            front.migrating = None
            front.changed.notify_all()

    def arrived(destination: dict[str, Any]) -> None:  # in migrate's thread: the front switches before it goes on
        asyncio.run_coroutine_threadsafe(release(destination), loop).result()

    try:
        result = await asyncio.to_thread(migrate, name, to=to, via=via, engine=front.engine, store=front.store,
                                         post_copy=front.opts.migrate_post_copy, on_destination=arrived)
    except WarmstartError as exc:  # restored here when it could be: the same name and host port as before
        inst.host, inst.port, inst.remote = here
        outcome: tuple[int, dict[str, Any]] = (500, {"error": exc.message, "instance": name})
        front.emit({"event": "migrate_failed", "instance": name, "error": exc.message})
    else:
        outcome = (200, {"instance": name, "snapshot": result.snapshot, "reference": result.reference,
                         "mode": result.mode, "downtime_seconds": result.downtime_seconds, "phases": result.phases})
    finally:
        await release(None)
    if outcome[0] == 200:
        front.emit({"event": "migrated", "instance": name, **held, "address": f"{inst.host}:{inst.port}",
                    **{k: v for k, v in outcome[1].items() if k != "instance"}})
    return outcome[0], {**outcome[1], **held}


def stop_remote(front: Any, inst: Any) -> None:
    """Stop a migrated instance where it runs now (`VIA warmstart stop NAME`), best effort."""
    from warmstart.migrate.migration import stop_destination

    stop_destination(list(front.opts.migrate_via), inst.result.name, lambda _: None)

