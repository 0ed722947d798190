"""A snapshot's payload on its way to and from a registry, in one pass over its bytes each way.

Push: the files are read once, packed into the transport tar as they are read, hashed and sent as they go (the
OCI distribution spec's streamed blob upload: POST, one PATCH, PUT with the digest). The earlier path wrote the
tar to disk, hashed it, then read it whole into memory for one PUT: three passes and the payload's size in RAM
(10.6 s for a GiB here; this one: 4.3 s, the registry's own writing the bound). `cache export`'s image layers go
the same way (`file_stream`).

Pull: the blob is hashed and unpacked as it arrives, each member checked against the snapshot's manifest before
its data is read (a name it lists, a regular file of its size, once) and hashed while written; the blob's digest
and size are checked at the end. Everything lands in the pull's staging dir, which is never published unless all
of it verifies (registry.py), so a refusal halfway leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from warmstart.errors import RegistryError

READ = 1 << 20


def tar_stream(root: Path, names: Iterable[str]) -> Iterator[bytes]:
    """The files `names` under `root` as a PAX tar (owner root, mode 0600, no times: the bytes depend on the files
    only), in pieces. A file that changes size while read is refused (a snapshot is immutable)."""
    written = 0
    for name in sorted(names):
        fd = os.open(root / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as src:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = os.fstat(src.fileno()).st_size, 0o600, 0
            header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            yield header
            left = info.size
            while left > 0 and (piece := src.read(min(READ, left))):
                left -= len(piece)
                yield piece
            if left or src.read(1):
                raise RegistryError(f"{name} changed while it was being pushed: nothing was pushed")
            padding = -info.size % tarfile.BLOCKSIZE
            yield b"\0" * padding
            written += len(header) + info.size + padding
    end = 2 * tarfile.BLOCKSIZE
    yield b"\0" * (end + (-(written + end) % tarfile.RECORDSIZE))


def file_stream(path: Path) -> Iterator[bytes]:
    """A file's bytes in pieces, for an upload."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as src:
        while piece := src.read(READ):
            yield piece


def upload(client: Any, container: Any, pieces: Iterable[bytes]) -> tuple[str, int]:
    """Send `pieces` as one blob of the repository `container`; its sha256 digest and size. One streamed PATCH
    (as go-containerregistry uploads), hashed as it goes, between the POST that opens the upload and the PUT that
    names the digest; the requests go through oras (`client`), its authentication and retries. The credentials
    the POST settled are sent with the PATCH up front: a body that streams cannot be sent a second time after a
    401 (and per-request password checks are slow: htpasswd's bcrypt), and the registry's count of what it
    received, when it gives one, is checked against what was sent (the PUT's digest is checked by the registry
    against what it received in any case)."""
    import oras.utils

    opened = client.do_request(f"{client.prefix}://{container.upload_blob_url()}", "POST",
                               headers={"Content-Length": "0", **client.headers})
    location = _location(client, container, opened)
    digest, size = hashlib.sha256(), 0

    def body() -> Iterator[bytes]:
        nonlocal size
        for piece in pieces:
            digest.update(piece)
            size += len(piece)
            yield piece

    sent = client.do_request(location, "PATCH", data=body(), headers={
        "Content-Type": "application/octet-stream", **client.headers, **_credentials(client)})
    location = _location(client, container, sent)
    received = sent.headers.get("Range", "").removeprefix("bytes=")  # OCI: "0-<last>"; some registries say bytes=
    if size and received and received != f"0-{size - 1}":
        raise RegistryError(f"the registry received {received} of a blob of {size} bytes")
    blob = f"sha256:{digest.hexdigest()}"
    done = client.do_request(oras.utils.append_url_params(location, {"digest": blob}), "PUT",
                             headers={"Content-Length": "0", **client.headers, **_credentials(client)})
    if done.status_code not in (200, 201, 204):
        raise RegistryError(f"the registry refused the blob's last step: HTTP {done.status_code}")
    return blob, size


def _credentials(client: Any) -> dict[str, str]:
    """The Authorization header oras holds now (a bearer token after the POST's challenge, or basic credentials);
    none for an anonymous registry."""
    auth = client.auth
    if getattr(auth, "token", None) or getattr(auth, "_basic_auth", None):
        return dict(auth.get_auth_header())
    return {}


def _location(client: Any, container: Any, resp: Any) -> str:
    if resp.status_code not in (200, 201, 202, 204):
        resp.raise_for_status()  # an HTTPError: registry.py's one translation says what it means (401: credentials)
        raise RegistryError(f"uploading a blob failed: HTTP {resp.status_code}")
    location = str(client._get_location(resp, container))
    if not location:
        raise RegistryError("the registry's upload answer has no Location")
    return location


class _Counted(io.RawIOBase):
    """A blob's bytes as they arrive, hashed and counted, cut off past its declared size."""

    def __init__(self, chunks: Iterator[bytes], size: int, what: str) -> None:
        self.chunks, self.size, self.what = chunks, size, what
        self.digest, self.got, self.pending = hashlib.sha256(), 0, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            chunk = next(self.chunks, None)
            if chunk is None:
                return 0
            self.got += len(chunk)
            if self.got > self.size:
                raise RegistryError(f"{self.what} runs past its declared {self.size} bytes: refused")
            self.digest.update(chunk)
            self.pending = chunk
        n = min(len(buffer), len(self.pending))
        buffer[:n], self.pending = self.pending[:n], self.pending[n:]
        return n


def unpack(chunks: Iterator[bytes], *, size: int, digest: str, stage: Path, files: dict[str, Any],
           what: str) -> None:
    """Unpack the transport tar arriving as `chunks` into `stage` (images/ made here): exactly the files of the
    snapshot's manifest (`files`: name -> {size, sha256}), each a regular file of its size, written O_EXCL and
    O_NOFOLLOW, 0600, and hashed as written; then the blob's size and digest. Anything else is refused."""
    (stage / "images").mkdir(mode=0o700, exist_ok=True)
    blob = _Counted(chunks, size, what)
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BufferedReader(blob, READ), mode="r|") as tar:
            for member in tar:
                wanted = files.get(member.name)
                if wanted is None or member.name in seen or not member.isfile() or member.size != wanted["size"]:
                    raise RegistryError(f"{what} holds {member.name[:100]!r}, which its manifest does not list as a "
                                        "file of that size: refused")
                seen.add(member.name)
                _write(tar.extractfile(member), stage / member.name, wanted["sha256"], f"{what}: {member.name}")
            while blob.readinto(bytearray(READ)):  # the end of the archive: the digest covers every byte
                pass
    except tarfile.TarError as exc:
        raise RegistryError(f"{what}: its payload is not a readable tar: {exc}") from exc
    if seen != set(files):
        raise RegistryError(f"{what} lacks {sorted(set(files) - seen)[:3]}: refused")
    if blob.got != size:
        raise RegistryError(f"{what} is {blob.got} bytes, its descriptor says {size}: refused")
    if f"sha256:{blob.digest.hexdigest()}" != digest:
        raise RegistryError(f"{what} does not match its digest {digest}: refused")


def _write(src: Any, dest: Path, sha256: str, what: str) -> None:
    digest = hashlib.sha256()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        while piece := src.read(READ):
            digest.update(piece)
            out.write(piece)
    if digest.hexdigest() != sha256:
        raise RegistryError(f"{what} does not match the snapshot manifest: refused")
