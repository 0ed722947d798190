"""Instances left frozen by a checkpoint that ends them (`checkpoint --stop`, stop-and-copy `migrate`).

Such a checkpoint never stops the instance before its snapshot is stored: the init's `dump --then freeze` leaves the
app's processes stopped (CRIU's --leave-stopped), so nothing it does after the dump is lost, and only once the
snapshot is published is the instance removed. If that cannot be done the instance is thawed and keeps running.
The process doing it can be killed at any moment (SIGKILL included): a marker in the cache's FROZEN_DIR, named after
the instance and holding that process's pid, is written before the dump and removed after the instance is gone or
thawed. Whatever lists instances next (`ps`, `stop`, `checkpoint`, `migrate`, `exec`) thaws an instance whose
marker's process is dead: crash-only, the state stays in the running instance.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from warmstart.core import labels, sandbox
from warmstart.core.safefs import read_owned, write_private
from warmstart.engines.base import Engine
from warmstart.errors import EngineError

FROZEN_DIR = "frozen"  # in the cache dir
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,253}")  # a container name (podman's and docker's rule)


def mark(cache: Path, name: str) -> Path:
    """Record that this process is about to freeze instance `name`; returns the marker to `unmark`."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a container name: {name!r}")
    folder = cache / FROZEN_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    marker = folder / name
    write_private(marker, str(os.getpid()))
    return marker


def unmark(marker: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()


def thaw(engine: Engine, name: str) -> None:
    """Resume the app of instance `name` after `dump --then freeze` (SIGCONT to its tree, sandbox-init/dump.go)."""
    engine.exec(container=name, command=(str(sandbox.INIT), "thaw"), timeout=30)


def thaw_orphans(engine: Engine, cache: Path) -> list[str]:
    """Thaw the instances whose freezing process died (their markers' pids), and drop those markers; returns the
    instances thawed. Nothing to do, and no engine call, when no marker exists."""
    folder = cache / FROZEN_DIR
    try:
        markers = [p for p in folder.iterdir() if _NAME.fullmatch(p.name)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    thawed = []
    for marker in markers:
        try:
            pid = read_owned(marker, limit=32).strip()
        except (OSError, ValueError):
            continue
        if pid.isdigit() and labels.pid_alive(int(pid)):
            continue  # still at work (or its pid was reused: then the next look thaws it)
        state = engine.inspect(container=marker.name)
        if state is not None and state.running:
            with contextlib.suppress(EngineError):
                thaw(engine, marker.name)
                thawed.append(marker.name)
        unmark(marker)
    return thawed
