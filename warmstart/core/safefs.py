"""Filesystem rules for the cache, in one place: follow no symlink, read only our own regular files, and refuse
directories that other users own or can write (anything in them may have been planted).

The cache holds process memory and decides what gets restored as root, so it is treated like ~/.ssh: every
directory and file is checked where it is read, not trusted because of where it sits.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

_RENAME_EXCHANGE = 2  # linux/fs.h; renameat2(2)


class UnsafePath(OSError):
    """A path in the cache that is a symlink, not ours, or writable by others."""


def check_private_dir(path: Path) -> None:
    """`path` is a real directory (not a symlink) owned by this user and writable by no one else."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(errno.ELOOP, f"{path} is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(errno.ENOTDIR, f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise UnsafePath(errno.EPERM, f"{path} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
    if st.st_mode & 0o022:
        raise UnsafePath(errno.EPERM, f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})")


def is_plain_dir(path: Path) -> bool:
    """A directory that is not a symlink (a symlinked entry is never read, listed or removed)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _open_regular(path: Path, *, follow: bool, owned: bool) -> int:
    """An fd for reading `path`, refused unless it is a regular file (and ours, with `owned`). Opened with
    O_NONBLOCK, so that a FIFO planted where a file belongs cannot hang the reader, and checked with fstat (what
    was opened, not what the name pointed at a moment before)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(errno.EINVAL, f"{path} is not a regular file")
        if owned and st.st_uid != os.geteuid():
            raise UnsafePath(errno.EPERM, f"{path} is owned by uid {st.st_uid}, not by this user")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_owned(path: Path) -> int:
    """An fd for reading `path`: a regular file of ours, opened without following a symlink."""
    return _open_regular(path, follow=False, owned=True)


def read_owned(path: Path, *, limit: int) -> str:
    """The UTF-8 text of a small file of ours (raises ValueError when it is larger than `limit` or not UTF-8)."""
    return _read(open_owned(path), limit)


def read_regular(path: Path, *, limit: int) -> str:
    """The UTF-8 text of a small regular file the user points us at (a spec file, a registry auth file): links are
    followed and any owner will do, but a FIFO, device or directory is refused at once, and so is a file larger
    than `limit` (ValueError)."""
    return _read(_open_regular(path, follow=True, owned=False), limit)


def _read(fd: int, limit: int) -> str:
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data.decode()


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE): readers see the old or the new, never neither.
    False when the kernel or filesystem cannot (the caller then falls back to two renames)."""
    import ctypes  # here, not at the top: only publishing needs it, and `run` imports this module
    import ctypes.util

    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS):
        return False
    raise OSError(err, os.strerror(err), str(a))


def write_private(path: Path, data: str | bytes) -> None:
    """Write atomically (temp file + rename) with mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
