"""Encryption at rest for snapshots that must hold secrets (`secrets_during_warmup = true`).

AES-256-GCM from pyca/cryptography (a vetted AEAD; nothing home-made), per file in 1 MiB chunks so a file of any
size streams through bounded memory. File format:

    MAGIC (8 bytes) | nonce prefix (8 random bytes) | chunk 0 | chunk 1 | ...   each chunk: ciphertext + 16-byte tag

Chunk i uses the nonce `prefix || i` (4 bytes, big-endian) and the associated data `name NUL i final`, so chunks
cannot be reordered, truncated, moved to another file or another snapshot's file of the same name without the
tag failing. The key is 32 bytes from a file (`$WARMSTART_SNAPSHOT_KEY_FILE`, or a flag), written by
`warmstart key encryption PATH`; the manifest records only its id (the first 16 hex digits of its sha256).
Clear text exists only in memory: builds dump to a tmpfs and encrypt from there, restores decrypt into a tmpfs
(`/dev/shm`) that is removed once the instance runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from warmstart.errors import CacheError, UsageError

KEY_ENV = "WARMSTART_SNAPSHOT_KEY_FILE"
ALGORITHM = "AES-256-GCM, 1 MiB chunks"
MAGIC = b"WSENC1\0\0"
CHUNK = 1 << 20
TAG = 16
TMPFS = Path("/dev/shm")


def key_file(flag: Path | None = None) -> Path | None:
    """The key file: the flag, else $WARMSTART_SNAPSHOT_KEY_FILE, else none."""
    if flag is not None:
        return flag
    env = os.environ.get(KEY_ENV)
    return Path(env) if env else None


def load_key(path: Path) -> bytes:
    """32 bytes from a key file (raw, or 64 hex digits); the file must not be readable by group or others."""
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            data = fh.read(129)
    except OSError as exc:
        raise UsageError(f"cannot read the snapshot key {path}: {exc.strerror or exc}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"snapshot key {path} is readable by others", hint=f"chmod 600 {path}")
    text = data.strip()
    if len(text) == 64:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(text.decode())
    if len(data) == 32:
        return data
    raise UsageError(f"snapshot key {path} is not 32 bytes (or 64 hex digits)",
                     hint="`warmstart key encryption PATH` writes one")


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def generate(path: Path) -> str:
    """Write a new key (64 hex digits, 0600, never overwriting); returns its id."""
    key = os.urandom(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key_id(key)


def _aad(name: str, index: int, final: bool) -> bytes:
    return name.encode() + b"\0" + index.to_bytes(8, "big") + (b"\1" if final else b"\0")


def encrypt_file(src: Path, dest: Path, *, name: str, key: bytes) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    prefix = os.urandom(8)
    size = src.stat().st_size
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
        fout.write(MAGIC + prefix)
        index, done = 0, 0
        while True:
            chunk = fin.read(CHUNK)
            done += len(chunk)
            final = done >= size
            fout.write(aead.encrypt(prefix + index.to_bytes(4, "big"), chunk, _aad(name, index, final)))
            index += 1
            if final:
                break


def decrypt_file(src: Path, dest: Path, *, name: str, key: bytes) -> None:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    size = src.stat().st_size
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
        head = fin.read(16)
        if head[:8] != MAGIC:
            raise CacheError(f"{name} is not an encrypted snapshot file")
        prefix, index, done = head[8:], 0, 16
        while True:
            block = fin.read(CHUNK + TAG)
            done += len(block)
            final = done >= size
            try:
                fout.write(aead.decrypt(prefix + index.to_bytes(4, "big"), block, _aad(name, index, final)))
            except InvalidTag:
                raise CacheError(f"{name} does not decrypt with this key (wrong key, or the file was altered)")\
                    from None
            index += 1
            if final:
                break


def encrypt_tree(src: Path, dest: Path, names: list[str], *, key: bytes) -> None:
    """Encrypt the snapshot files `names` (relative) of `src` into `dest`."""
    for name in names:
        (dest / name).parent.mkdir(mode=0o700, exist_ok=True)
        encrypt_file(src / name, dest / name, name=name, key=key)


@contextlib.contextmanager
def plain_dir(prefix: str) -> Iterator[Path]:
    """A private dir on the tmpfs (memory, never at rest), removed on any exit."""
    path = Path(tempfile.mkdtemp(prefix=f"warmstart-{prefix}-", dir=TMPFS if TMPFS.is_dir() else None))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def decrypted(snapshot_dir: Path, names: list[str], *, key: bytes) -> Iterator[Path]:
    """The snapshot's files decrypted into a tmpfs dir for one restore; removed afterwards."""
    with plain_dir("restore") as path:
        for name in names:
            (path / name).parent.mkdir(mode=0o700, exist_ok=True)
            decrypt_file(snapshot_dir / name, path / name, name=name, key=key)
        yield path
