"""Post-copy migration (`migrate --post-copy`): the destination restores before the app's memory has arrived, and
its pages follow over the network, on fault first and then in the background.

    source host                                              destination host
    full checkpoint in the cache (every page; rollback)
    thin copy: without the lazy pages (registry)       --->  pulled, verified; the init restores lazily
    TLS credentials for this migration (--via's stdin) --->  a tmpfs dir mounted into the new instance
    `criu page-server --lazy-pages -D <full images>`  <----  `criu lazy-pages --page-server` (sandbox-init/postcopy.go)
      on ADDRESS:PORT of this host, TLS both ways             the app serves from the first page it gets

The pages come from the full checkpoint's images on disk, not from the frozen source process (CRIU's own
`dump --lazy-pages`): the source keeps a complete copy until the destination holds every page, so a destination or
network that fails halfway loses nothing (migration.py restores here), and the page server needs no port of the
source container. The cost is the dump to disk, which stop-and-copy pays too.

The page server serves one connection and ends once every page has been sent. Both ends prove themselves with
certificates of a CA made for this one migration. The destination's key never goes through the registry (the
push's secret scan would refuse it anyway) nor on a command line: `migrate` writes it to the stdin of the `--via`
command (ssh: encrypted and authenticated), `run --post-copy-credentials -` reads it, and it lives on a tmpfs only
until the instance is ready.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from warmstart.cache.manifest import POST_COPY_SCHEMA
from warmstart.cache.store import Snapshot, SnapshotStore
from warmstart.core import sandbox
from warmstart.core.host import CAP_SYS_RESOURCE, has_capability
from warmstart.errors import RestoreError, UsageError
from warmstart.restore.postcopy import CA_FILE, CLIENT_CERT, CLIENT_KEY, private_files

PIPE_BYTES = 4 << 20  # criu/page-pipe.c pipe_read_dest_init: the pipe size the page server needs
PIPE_MAX_SIZE = Path("/proc/sys/fs/pipe-max-size")
LOG = "page-server.log"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Credentials:
    """PEM files of a CA made for one migration, and of the certificates it signed for both ends."""

    ca: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes

    def for_destination(self) -> str:
        """What `run --post-copy-credentials -` reads on the destination: JSON of its three PEM files."""
        return json.dumps({CA_FILE: self.ca.decode(), CLIENT_CERT: self.client_cert.decode(),
                           CLIENT_KEY: self.client_key.decode()})


def credentials(*, valid: timedelta = timedelta(days=1)) -> Credentials:
    """A fresh CA (ECDSA P-256) and a server and a client certificate signed by it; CRIU checks the chain only
    (`--tls-no-cn-verify`): the CA exists for this migration and signs nothing else."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey,
             *, ca: bool, usage: list[x509.ObjectIdentifier]) -> bytes:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + valid)
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = cert("warmstart migration CA", ca_key, "warmstart migration CA", ca_key, ca=True, usage=[])
    server = cert("warmstart page server", server_key, "warmstart migration CA", ca_key, ca=False,
                  usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    client = cert("warmstart destination", client_key, "warmstart migration CA", ca_key, ca=False,
                  usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    return Credentials(ca=ca, server_cert=server, server_key=pem(server_key), client_cert=client,
                       client_key=pem(client_key))


def why_not_here() -> str:
    """Why this host cannot serve a post-copy migration's pages ("" when it can)."""
    if not os.access(sandbox.CRIU_PREFIX / "bin" / "criu", os.X_OK):
        return sandbox.missing() or f"no CRIU at {sandbox.CRIU_PREFIX}"
    try:
        pipe_max = int(PIPE_MAX_SIZE.read_text())
    except (OSError, ValueError):
        pipe_max = 0
    if pipe_max < PIPE_BYTES and not has_capability(CAP_SYS_RESOURCE):
        return (f"CRIU's page server needs {PIPE_BYTES >> 20} MiB pipes, and fs.pipe-max-size is {pipe_max} bytes "
                "without CAP_SYS_RESOURCE (scripts/setup-host raises it)")
    return ""


def endpoint(spec: str | None) -> str:
    """The ADDRESS:PORT the page server listens on and the destination connects to: `spec` is ADDRESS or
    ADDRESS:PORT (an IPv4 address of this host that the destination reaches); without it, the address of this
    host's default route. A free port is chosen when none is given."""
    if spec:
        address, _, port_text = spec.partition(":")
    else:
        address, port_text = _default_address(), ""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise UsageError(f"--page-server {spec!r}: expected an IPv4 address of this host, optionally with :PORT") \
            from None
    if ip.is_loopback or ip.is_unspecified:
        raise UsageError(f"--page-server {address}: the destination must reach it, give this host's address on "
                         "the network both hosts share")
    port = 0
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"--page-server {spec!r}: the port must be 1-65535")
        port = int(port_text)
    with socket.socket() as probe:  # the address must be this host's, and the port free
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise UsageError(f"--page-server {spec or address}: cannot listen there ({exc.strerror})",
                             hint="give an address of this host (`ip -4 addr`) and a free port") from None
        port = probe.getsockname()[1]
    return f"{address}:{port}"


def _default_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("198.51.100.1", 9))  # TEST-NET-2; no packet is sent: this only asks the routing table
            return str(s.getsockname()[0])
        except OSError:
            raise UsageError("this host has no default route: give --page-server ADDRESS (this host's address "
                             "that the destination reaches)") from None


def thin_snapshot(full: Snapshot, *, store: SnapshotStore, tag: str, page_server: str) -> tuple[Snapshot, int]:
    """Publish `full` without its lazy pages (`warmstart-init post-copy`), marked as needing `page_server`.
    Returns it and the bytes of memory left to the page server."""
    with store.staging(full.manifest.app) as stage:
        images = stage / sandbox.IMAGES_DIR
        images.mkdir(mode=0o700)
        proc = subprocess.run([str(sandbox.INIT), "post-copy", "--images", str(full.path / sandbox.IMAGES_DIR),
                               "--out", str(images)], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RestoreError(f"preparing the post-copy snapshot failed: {proc.stderr.strip()}")
        lazy = int(proc.stdout.split()[0])
        for name in full.manifest.files:
            if "/" not in name:
                os.link(full.path / name, stage / name)
        manifest = replace(full.manifest, tag=tag, files={}, post_copy={"page_server": page_server},
                           schema_version=POST_COPY_SCHEMA,
                           created_at=datetime.now(UTC).isoformat(timespec="milliseconds"))
        return store.publish(stage, manifest), lazy


class PageServer:
    """`criu page-server --lazy-pages` on this host, serving one snapshot's lazy pages to one destination; it
    ends by itself once the destination's page daemon has every page."""

    def __init__(self, full: Snapshot, *, work: Path, tls: Path, endpoint: str, creds: Credentials) -> None:
        images = work / "images"  # hard links: CRIU may write beside the images, never into the cache's snapshot
        images.mkdir(mode=0o700)
        for name in full.manifest.files:
            if name.startswith(f"{sandbox.IMAGES_DIR}/"):
                os.link(full.path / name, work / name)
        self.work = work
        self.endpoint = endpoint
        self.creds = creds
        address, _, port = endpoint.rpartition(":")
        ready_r, ready_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [str(sandbox.CRIU_PREFIX / "bin" / "criu"), "page-server", "--lazy-pages", "-D", str(images),
                 "-W", str(work), "-o", LOG, "--address", address, "--port", port, "--status-fd", str(ready_w),
                 "--tls", "--tls-no-cn-verify", "--tls-cacert", str(tls / "ca.pem"),
                 "--tls-cert", str(tls / "server.pem"), "--tls-key", str(tls / "server.key")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(ready_w,), start_new_session=True, preexec_fn=_end_with_parent)
        finally:
            os.close(ready_w)
        self._ready = ready_r
        self.started = time.monotonic()

    def wait_listening(self, timeout: float = 120) -> None:
        """Until the page server listens (it loads the pages first: CRIU writes to --status-fd then)."""
        try:
            readable, _, _ = select.select([self._ready], [], [], timeout)
            got = os.read(self._ready, 1) if readable else b""
        finally:
            os.close(self._ready)
            self._ready = -1
        if got != b"\0":
            raise RestoreError(f"the page server did not start on {self.endpoint}", details=self.log_tail())

    def wait_done(self, timeout: float) -> float:
        """Until every page is sent; returns the seconds since the server started, or raises."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RestoreError(f"the destination did not take all of the memory from {self.endpoint} within "
                               f"{timeout:.0f}s", details=self.log_tail()) from None
        if code != 0:
            raise RestoreError(f"the page server on {self.endpoint} failed (exit code {code}) before the destination "
                               "had all of the memory", details=self.log_tail())
        return time.monotonic() - self.started

    def stop(self) -> None:
        if self._ready >= 0:
            os.close(self._ready)
            self._ready = -1
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 12) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.work / LOG).read_text(errors="replace").splitlines()[-lines:])
        return ""


def _end_with_parent() -> None:
    """In the page server's child before exec: the kernel kills it if `migrate` dies (even by SIGKILL), so a
    server listening for a destination that will never come is not left behind (PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # linux/prctl.h PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def serving(full: Snapshot, *, store: SnapshotStore, endpoint: str, creds: Credentials) -> Iterator[PageServer]:
    """A PageServer for `full`, stopped (if still running) and its work dir and keys removed on exit."""
    keys = {"ca.pem": creds.ca, "server.pem": creds.server_cert, "server.key": creds.server_key}
    with store.staging(f"{full.manifest.app}-pages") as work, private_files(keys) as tls:
        server = PageServer(full, work=work, tls=tls, endpoint=endpoint, creds=creds)
        try:
            yield server
        finally:
            server.stop()
