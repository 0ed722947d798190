"""Facts about this host that decide whether a snapshot made elsewhere can be restored here."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from warmstart.cache import safefs

CRIU_VERSION_MEMO = ".criu-version"  # in the cache root: "<path>:<inode>:<size>:<mtime_ns>\n<version>\n"


@dataclass(frozen=True)
class HostFacts:
    kernel: str
    arch: str
    cpu_model: str
    cpu_flags: tuple[str, ...] = field(default_factory=tuple)
    criu_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cpu_flags"] = list(self.cpu_flags)
        return d


def _cpuinfo() -> tuple[str, tuple[str, ...]]:
    model, flags = "", tuple[str, ...]()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = tuple(sorted(value.split()))
                if model and flags:
                    break
    except OSError:
        pass
    return model, flags


def criu_version(memo: Path | None = None) -> str:
    """The version of the `criu` on PATH. Asking CRIU costs an exec (4 ms on the restore path), so with `memo`
    (a file in the cache root) the answer is kept, keyed by the binary's path, inode, size and mtime: a replaced
    or upgraded CRIU is asked again."""
    path = shutil.which("criu")
    if not path:
        return ""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    key = f"{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    if memo is not None:
        try:
            cached_key, _, cached = safefs.read_owned(memo, limit=4096).partition("\n")
            if cached_key == key and re.fullmatch(r"[\d.]+", cached.strip()):
                return cached.strip()
        except (OSError, ValueError):
            pass
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    m = re.search(r"Version:\s*([\d.]+)", out)
    version = m.group(1) if m else ""
    if memo is not None and version:
        try:
            safefs.write_private(memo, f"{key}\n{version}\n")
        except OSError:
            pass  # a memo only: the next launch asks CRIU again
    return version


@functools.lru_cache(maxsize=4)
def host_facts(memo_dir: Path | None = None) -> HostFacts:
    """This host's facts; `memo_dir` (the cache root) keeps the CRIU version between processes."""
    model, flags = _cpuinfo()
    return HostFacts(kernel=os.uname().release, arch=os.uname().machine, cpu_model=model, cpu_flags=flags,
                     criu_version=criu_version(memo_dir / CRIU_VERSION_MEMO if memo_dir else None))


def version_tuple(v: str) -> tuple[int, ...]:
    """"4.2.1" -> (4, 2, 1): how every CRIU version is compared."""
    return tuple(int(p) for p in re.findall(r"\d+", v)[:3])


def incompatibilities(snapshot_host: dict[str, Any], here: HostFacts) -> list[str]:
    """Why a snapshot made on `snapshot_host` cannot be restored here (empty when it can)."""
    problems = []
    arch = snapshot_host.get("arch")
    if arch and arch != here.arch:
        problems.append(f"snapshot is for {arch}, this host is {here.arch}")
    missing = sorted(set(snapshot_host.get("cpu_flags") or ()) - set(here.cpu_flags))
    if missing:
        problems.append(f"this host's CPU lacks flags the snapshot was made with: {', '.join(missing[:8])}"
                        + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""))
    made_with = snapshot_host.get("criu_version") or ""
    if made_with and (not here.criu_version or version_tuple(here.criu_version) < version_tuple(made_with)):
        problems.append(f"CRIU here is {here.criu_version or 'missing'}, the snapshot needs {made_with} or newer")
    return problems
