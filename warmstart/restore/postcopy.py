"""Restoring a post-copy snapshot (`run` of what `migrate --post-copy` pushed): the init restores lazily and its
page daemon fetches the memory from the source host's page server (migrate/postcopy.py serves it) over TLS, with
the destination's credentials on a tmpfs only until the instance is ready. The names below are the protocol both
sides and sandbox-init/postcopy.go share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from warmstart.cache.manifest import Manifest
from warmstart.core.bounded import loads_json
from warmstart.errors import UsageError
from warmstart.restore.lazypages import LAZY_VAR

REMOTE = "remote"  # sandbox-init/postcopy.go RemoteMode: LAZY_VAR's value for a post-copy restore
PAGE_SERVER_VAR = "WARMSTART_PAGE_SERVER"  # sandbox-init/postcopy.go PageServerVar
TLS_MOUNT = "/.warmstart/postcopy"  # sandbox-init/postcopy.go TLSDir: the destination's credentials, read-only
CA_FILE = "ca.pem"  # sandbox-init/postcopy.go TLSCACert
CLIENT_CERT = "client.pem"  # sandbox-init/postcopy.go TLSClientCert
CLIENT_KEY = "client.key"  # sandbox-init/postcopy.go TLSClientKey
MAX_CREDENTIALS = 64 << 10  # three PEM files of a few hundred bytes each


def destination_credentials(text: str) -> dict[str, str]:
    """The destination's side of Credentials.for_destination, validated (it comes from outside)."""
    try:
        raw = loads_json(text) if len(text) <= MAX_CREDENTIALS else None
    except ValueError:
        raw = None
    if (not isinstance(raw, dict) or set(raw) != {CA_FILE, CLIENT_CERT, CLIENT_KEY}
            or not all(isinstance(v, str) and v.startswith("-----BEGIN ") for v in raw.values())):
        raise UsageError("--post-copy-credentials: expected the JSON that `warmstart migrate --post-copy` writes to "
                         "the --via command's stdin")
    return raw


@contextlib.contextmanager
def private_files(files: dict[str, bytes]) -> Iterator[Path]:
    """`files` (0600) in a private dir on the tmpfs (crypt.plain_dir), so keys are never at rest on disk; removed
    on exit."""
    from warmstart.core.safefs import write_private
    from warmstart.security.crypt import plain_dir

    with plain_dir("postcopy") as path:
        for name, data in files.items():
            write_private(path / name, data)
        yield path


@contextlib.contextmanager
def tls_volume(files: dict[str, str]) -> Iterator[str]:
    """The destination's credentials (private_files) as a read-only volume at TLS_MOUNT, for the time of the
    launch (the page daemon has read them once the instance is ready)."""
    with private_files({name: text.encode() for name, text in files.items()}) as path:
        yield f"{path}:{TLS_MOUNT}:ro"


def restore_env(manifest: Manifest) -> dict[str, str]:
    """The init's environment for restoring a post-copy snapshot (sandbox-init/postcopy.go restoreRemote)."""
    return {LAZY_VAR: REMOTE, PAGE_SERVER_VAR: manifest.post_copy["page_server"]}
