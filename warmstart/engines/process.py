"""Bare CRIU: checkpoint and restore a process tree directly with the `criu` CLI, inside a container (the
entrypoint wrapper) or on a plain host. Standard library only, so it runs in app images without warmstart's
dependencies.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from warmstart.engines.base import criu_log_excerpt
from warmstart.errors import CheckpointError, EngineUnavailable, RestoreError

# Options both sides need: a job started from a shell (own session), TCP connections and Unix sockets whose peers
# are outside the tree (the container runtime's, the probe's) are cut or re-created rather than refused.
COMMON = ("--shell-job", "--tcp-established", "--ext-unix-sk")
DUMP_LOG, RESTORE_LOG = "dump.log", "restore.log"


def external_stdio() -> dict[int, str]:
    """fd -> "pipe:[inode]" for stdout/stderr when they are pipes: restored processes get today's pipes instead
    (`--inherit-fd`), since yesterday's other ends (the old container runtime) are gone."""
    found = {}
    for fd in (1, 2):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("pipe:["):
            found[fd] = target
    return found


class CriuProcess:
    """Keyword-only calls around `criu dump` / `criu restore` for one process tree."""

    def __init__(self, binary: str = "criu") -> None:
        self.binary = binary

    def _run(self, args: list[str], *, timeout: float, capture: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([self.binary, *args], capture_output=capture, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise EngineUnavailable(f"criu not found ({self.binary})",
                                    hint="install CRIU 4.2+ in the image (images/build-images makes one)") from exc

    def version(self) -> str:
        out = self._run(["--version"], timeout=10).stdout
        return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Version:")), "")

    def dump(self, *, pid: int, images: Path, workdir: Path, leave_running: bool = True, timeout: float = 300) -> None:
        args = ["dump", "-t", str(pid), "-D", str(images), "-W", str(workdir), "-o", DUMP_LOG, *COMMON]
        if leave_running:
            args.append("--leave-running")
        proc = self._run(args, timeout=timeout)
        if proc.returncode != 0:
            raise CheckpointError(f"criu dump of pid {pid} failed (exit {proc.returncode})",
                                  details=criu_log_excerpt(workdir / DUMP_LOG))

    def restore(self, *, images: Path, workdir: Path, inherit: dict[int, str], timeout: float = 300) -> int:
        """Restore detached; returns the root pid of the restored tree (a child of this process's subreaper)."""
        pidfile = workdir / "restored.pid"
        args = ["restore", "-D", str(images), "-W", str(workdir), "-o", RESTORE_LOG, "-d", "--pidfile", str(pidfile),
                *COMMON]
        for fd, pipe in inherit.items():
            args += ["--inherit-fd", f"fd[{fd}]:{pipe}"]
        # Not captured: with --inherit-fd the restored app takes over criu's own stdout/stderr, which must be
        # ours (the container's), not a pipe we would wait on forever.
        proc = self._run(args, timeout=timeout, capture=False)
        if proc.returncode != 0 or not pidfile.exists():
            raise RestoreError(f"criu restore from {images} failed (exit {proc.returncode})",
                               details=criu_log_excerpt(workdir / RESTORE_LOG))
        return int(pidfile.read_text().strip())
