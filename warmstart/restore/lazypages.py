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

from warmstart.core.host import UFFD_MEMO, uffd_supported

LAZY_VAR = "WARMSTART_LAZY"  # sandbox-init/lazy.go LazyVar: "1" asks the init for a lazy restore
RECORD = "record"  # sandbox-init/workingset.go RecordMode: restore lazily through the working-set recorder
RECORD_MOUNT = "/.warmstart/record"  # sandbox-init/workingset.go RecordMount: where the recorder writes FAULTS_FILE
FAULTS_FILE = "faults"  # sandbox-init/workingset.go FaultsFile
MIN_BYTES = 64 << 20  # memory images below this are copied eagerly (see README "Lazy restore" for the measurements)
PAGE_SIZE = 4096  # sandbox-init/pagemap.go pageSize: the unit of `warmstart-init working-set`'s counts
PAGES_PREFIX = "images/pages-"  # CRIU's page data files (criu/include/image-desc.h: "pages-%u.img")


def memory_bytes(files: dict[str, Any]) -> int:
    """The size of a sandbox snapshot's page data, from its manifest's file list (nothing is read)."""
    return sum(int(entry.get("size", 0)) for name, entry in files.items() if name.startswith(PAGES_PREFIX))


def images_bytes(images: Path) -> int:
    """The same, for a CRIU image dir on disk (a build's staged snapshot)."""
    return sum(p.stat().st_size for p in images.glob("pages-*.img"))


def restore_env(*, allowed: bool, memory: int, memo_dir: Path | None) -> dict[str, str]:
    """The init's environment for a restore of `memory` bytes of pages: lazy when allowed, big enough, and
    supported here."""
    return {} if why_not(allowed=allowed, memory=memory, memo_dir=memo_dir) else {LAZY_VAR: "1"}


def record_env() -> dict[str, str]:
    """The init's environment for a build's recording clone (sandbox-init/workingset.go)."""
    return {LAZY_VAR: RECORD}


def why_not(*, allowed: bool, memory: int, memo_dir: Path | None) -> str:
    """Why a restore of `memory` bytes of pages would be eager ("" when it would be lazy)."""
    if not allowed:
        return "the app sets lazy_pages = false"
    if memory < MIN_BYTES:
        return f"its memory ({memory / 2**20:.0f} MiB) is below {MIN_BYTES >> 20} MiB, where copying it is faster"
    if not uffd_supported(memo_dir / UFFD_MEMO if memo_dir else None):
        return "this host's CRIU cannot restore lazily (`criu check --feature uffd-noncoop` fails)"
    return ""


def record_working_set(*, images: Path, faults: Path) -> tuple[int, int]:
    """Mark the pages in `faults` (a recording clone's) eager in `images`' pagemaps: `warmstart-init working-set`,
    the one reader and writer of that format on this side. Returns (pages made eager, pages left lazy)."""
    import subprocess

    from warmstart.core import sandbox
    from warmstart.errors import CheckpointError

    proc = subprocess.run([str(sandbox.INIT), "working-set", "--images", str(images), "--faults", str(faults)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise CheckpointError(f"marking the working set eager failed: {proc.stderr.strip()}")
    eager, lazy = (int(n) for n in proc.stdout.split())
    return eager, lazy
