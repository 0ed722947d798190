"""Host ports for new instances, checked and reserved before anything starts.

Why here and not left to the engine: podman 4.3 publishes a host port another container already publishes (and
the other container stops answering), and two concurrent launches on one port leave the winner unreachable. So an
explicit port must be free (bindable) before the launch, and every port a launch uses, explicit or chosen, is
held under an exclusive per-port lock file in the cache until the launch has finished (the container then holds
it); a concurrent warmstart launch that wants the same port sees the lock: an explicit one is refused, a chosen
one is chosen again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from warmstart.core.spec import PortBinding
from warmstart.errors import UsageError

_ATTEMPTS = 50


def _bind_address(ip: str) -> str:
    return "" if ip in ("0.0.0.0", "") else ip


def _bindable(ip: str, port: int, protocol: str) -> bool:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers do not count as taken
        try:
            s.bind((_bind_address(ip), port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise UsageError(f"cannot publish on {ip}:{port}: {exc.strerror}") from exc
    return True


def _free_port(ip: str, protocol: str) -> int:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, kind) as s:
        s.bind((_bind_address(ip), 0))
        return int(s.getsockname()[1])


def _try_lock(lock_dir: Path, port: int, protocol: str) -> int | None:
    """An fd holding the port's lock file, or None when another launch holds it. The file is removed when the
    lock is released (one file per launch piled up otherwise), so a lock taken on a file that was unlinked
    meanwhile is worthless: it is checked to still be the file at that name, and taken again if not."""
    path = lock_dir / f"port-{port}-{protocol}.lock"
    for _ in range(_ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    return None


def _release(fd: int, lock_dir: Path, port: int, protocol: str) -> None:
    """Remove the lock file while still holding it, then let go (see _try_lock)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock_dir / f"port-{port}-{protocol}.lock")
    os.close(fd)


@contextlib.contextmanager
def reserved(bindings: list[PortBinding], *, lock_dir: Path) -> Iterator[list[PortBinding]]:
    """The bindings with every host port chosen, each free and locked until the block ends. Raises UsageError
    naming the port when an explicit one is taken."""
    held: list[tuple[int, int, str]] = []  # (fd, port, protocol)
    resolved = []
    try:
        for b in bindings:
            if b.host_port:
                fd = _try_lock(lock_dir, b.host_port, b.protocol)
                if fd is None:
                    raise UsageError(f"host port {b.host_port}/{b.protocol} is being published by another warmstart "
                                     "launch right now: choose another -p")
                held.append((fd, b.host_port, b.protocol))
                if not _bindable(b.host_ip, b.host_port, b.protocol):
                    raise UsageError(f"host port {b.host_ip}:{b.host_port}/{b.protocol} is already in use: choose "
                                     "another -p (nothing was started)")
                resolved.append(b)
                continue
            for _ in range(_ATTEMPTS):
                port = _free_port(b.host_ip, b.protocol)
                fd = _try_lock(lock_dir, port, b.protocol)
                if fd is not None:
                    held.append((fd, port, b.protocol))
                    resolved.append(dataclasses.replace(b, host_port=port))
                    break
            else:
                raise UsageError(f"no free host port found for {b.key} after {_ATTEMPTS} tries")
        yield resolved
    finally:
        for fd, port, protocol in held:
            _release(fd, lock_dir, port, protocol)
