"""Facts about this host that decide whether a snapshot made elsewhere can be restored here."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from warmstart.core import safefs

CRIU_VERSION_MEMO = ".criu-version"  # in the cache root: "<path>:<inode>:<size>:<mtime_ns>\n<version>\n"
# linux/capability.h: sizes pipes past fs.pipe-max-size, and lets CRIU read another user's rlimits (prlimit64)
CAP_SYS_RESOURCE = 24
RLIMITS_SHIM = "libwarmstart-rlimits.so"  # criu-shim/rlimits.c, added to criu's DT_NEEDED by scripts/setup-host
UFFD_MEMO = ".criu-uffd"  # in the cache root: "<that key>:<kernel release>\nyes|no\n"


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


def _memoized(memo: Path | None, key: str, compute: Callable[[], str]) -> str:
    """compute(), kept in the file `memo` (a file in the cache root) under `key`: asking CRIU costs an exec on the
    restore path (4-15 ms), and its answers change only with the binary or the kernel, which `key` names."""
    if memo is not None:
        try:
            cached_key, _, cached = safefs.read_owned(memo, limit=4096).partition("\n")
            if cached_key == key and re.fullmatch(r"[\w.]+", cached.strip()):
                return cached.strip()
        except (OSError, ValueError):
            pass
    value = compute()
    if memo is not None and value:
        try:
            safefs.write_private(memo, f"{key}\n{value}\n")
        except OSError:
            pass  # a memo only: the next launch asks CRIU again
    return value


def _criu_key() -> tuple[str, str] | None:
    """The `criu` on PATH and what identifies its binary (path, inode, size, mtime), or None."""
    path = shutil.which("criu")
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path, f"{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def criu_version(memo: Path | None = None) -> str:
    """The version of the `criu` on PATH ("" without one), remembered in `memo` per binary."""
    found = _criu_key()
    if found is None:
        return ""
    path, key = found

    def ask() -> str:
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""
        m = re.search(r"Version:\s*([\d.]+)", out)
        return m.group(1) if m else ""

    return _memoized(memo, key, ask)


def uffd_supported(memo: Path | None = None) -> bool:
    """Whether CRIU can restore lazily here (`criu check --feature uffd-noncoop`: userfaultfd with the events a
    restored process tree needs), remembered in `memo` per CRIU binary and kernel."""
    found = _criu_key()
    if found is None:
        return False
    path, key = found

    def ask() -> str:
        try:
            proc = subprocess.run([path, "check", "--feature", "uffd-noncoop"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return ""  # not remembered: asked again next time
        return "yes" if proc.returncode == 0 else "no"

    return _memoized(memo, f"{key}:{os.uname().release}", ask) == "yes"


@functools.lru_cache(maxsize=4)
def host_facts(memo_dir: Path | None = None) -> HostFacts:
    """This host's facts; `memo_dir` (the cache root) keeps the CRIU version between processes."""
    model, flags = _cpuinfo()
    return HostFacts(kernel=os.uname().release, arch=os.uname().machine, cpu_model=model, cpu_flags=flags,
                     criu_version=criu_version(memo_dir / CRIU_VERSION_MEMO if memo_dir else None))


def has_capability(bit: int) -> bool:
    """Whether this process holds capability `bit` (its effective set, /proc/self/status CapEff)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def criu_has_rlimits_shim(criu: str) -> bool:
    """Whether the CRIU binary at `criu` loads warmstart's rlimits shim (its name among the ELF's strings, where
    DT_NEEDED names live) and the shim is beside it in its prefix's lib/."""
    real = Path(os.path.realpath(criu))
    try:
        return RLIMITS_SHIM.encode() in real.read_bytes() and (real.parent.parent / "lib" / RLIMITS_SHIM).is_file()
    except OSError:
        return False


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
