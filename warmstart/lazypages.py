"""Lazy restore (userfaultfd): CRIU's page daemon serves the restored app's memory on demand and streams the rest
in the background, so time-to-ready stops growing with the snapshot's size. The init does the work
(sandbox-init/lazy.go); this module decides when a launch asks for it.

Lazy is used for a sandbox snapshot when the app allows it (`lazy_pages`, on by default), this host's CRIU can
(`criu check --feature uffd-noncoop`, remembered per CRIU binary and kernel), and the snapshot holds enough memory
for it to pay (below MIN_BYTES the daemon's start costs more than copying). The init falls back to an eager
restore by itself when the lazy one cannot start or fails, and stops the app if the daemon dies later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warmstart.host import UFFD_MEMO, uffd_supported

LAZY_VAR = "WARMSTART_LAZY"  # sandbox-init/lazy.go LazyVar: "1" asks the init for a lazy restore
MIN_BYTES = 64 << 20  # memory images below this are copied eagerly (see README "Lazy restore" for the measurements)
PAGES_PREFIX = "images/pages-"  # CRIU's page data files (criu/include/image-desc.h: "pages-%u.img")


def memory_bytes(files: dict[str, Any]) -> int:
    """The size of a sandbox snapshot's page data, from its manifest's file list (nothing is read)."""
    return sum(int(entry.get("size", 0)) for name, entry in files.items() if name.startswith(PAGES_PREFIX))


def restore_env(*, allowed: bool, files: dict[str, Any], memo_dir: Path | None) -> dict[str, str]:
    """The init's environment for a restore: lazy when allowed, big enough and supported here."""
    if not allowed or memory_bytes(files) < MIN_BYTES or not uffd_supported(memo_dir / UFFD_MEMO if memo_dir else None):
        return {}
    return {LAZY_VAR: "1"}


def why_not(*, allowed: bool, files: dict[str, Any], memo_dir: Path | None) -> str:
    """Why a restore of these files would be eager ("" when it would be lazy): for doctor and `cache inspect`."""
    if not allowed:
        return "the app sets lazy_pages = false"
    size = memory_bytes(files)
    if size < MIN_BYTES:
        return f"its memory ({size / 2**20:.0f} MiB) is below {MIN_BYTES >> 20} MiB, where copying it is faster"
    if not uffd_supported(memo_dir / UFFD_MEMO if memo_dir else None):
        return "this host's CRIU cannot restore lazily (`criu check --feature uffd-noncoop` fails)"
    return ""
