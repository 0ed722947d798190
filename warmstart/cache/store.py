"""The local snapshot store.

Layout (dirs 0700, files 0600: snapshots hold process memory, so they are treated as secrets):

    ROOT/apps/APP.json                      the app's spec, for cold starts (written by a successful build)
    ROOT/snapshots/APP/SNAPSHOT_ID/         one published snapshot: checkpoint.tar + manifest.json
    ROOT/.staging/APP-PID-RANDOM/           a snapshot being written; never read as an entry

A snapshot becomes visible only through one rename of a complete staging dir, so a build that dies at any point
leaves nothing half-written in `snapshots/`; staging dirs of dead processes are swept when the store opens.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from warmstart.cache.manifest import CHECKPOINT_FILE, FILENAME, FileEntry, Manifest
from warmstart.errors import CacheError, ManifestError
from warmstart.spec import AppSpec

ENV_VAR = "WARMSTART_CACHE"
APP_RECORD_VERSION = 1


def default_cache_dir() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    if os.geteuid() == 0:
        return Path("/var/lib/warmstart")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "warmstart"


@dataclass(frozen=True)
class Snapshot:
    path: Path
    manifest: Manifest

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def id(self) -> str:
        return self.manifest.snapshot_id


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SnapshotStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.apps = root / "apps"
        self.snapshots = root / "snapshots"
        self.staging_root = root / ".staging"

    def open(self) -> SnapshotStore:
        """Create the layout if needed and check it is usable; sweep staging dirs left by dead builds."""
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"cache dir {self.root} is not a directory", hint="pass --cache-dir or set $WARMSTART_CACHE")
        try:
            for d in (self.root, self.apps, self.snapshots, self.staging_root):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
        except OSError as exc:
            raise CacheError(
                f"cache dir {self.root} cannot be used: {exc.strerror or exc}",
                hint="pass --cache-dir or set $WARMSTART_CACHE to a writable directory",
            ) from exc
        for d in (self.root, self.apps, self.snapshots, self.staging_root):
            if not os.access(d, os.R_OK | os.W_OK | os.X_OK):
                raise CacheError(f"cache dir {d} is not readable and writable by this user")
        self._sweep_staging()
        return self

    def _sweep_staging(self) -> None:
        for entry in self.staging_root.iterdir():
            pid = entry.name.rsplit("-", 2)[-2] if entry.name.count("-") >= 2 else ""
            if not pid.isdigit() or not _pid_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)

    # -- apps ---------------------------------------------------------------------------------------------------------
    def save_app(self, spec: AppSpec) -> None:
        data = json.dumps({"record_version": APP_RECORD_VERSION, "spec": spec.to_dict()}, indent=2) + "\n"
        _write_private(self.apps / f"{spec.name}.json", data)

    def load_app(self, name: str) -> AppSpec | None:
        path = self.apps / f"{name}.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CacheError(f"cannot read app record {path}: {exc}") from exc
        if raw.get("record_version", 0) > APP_RECORD_VERSION:
            raise CacheError(f"app record {path} was written by a newer warmstart (record_version {raw['record_version']})")
        try:
            return AppSpec.from_dict(raw["spec"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CacheError(f"app record {path} is malformed: {exc}") from exc

    # -- snapshots ----------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def staging(self, app: str) -> Iterator[Path]:
        """A private dir to write a snapshot into; removed on any exit unless published meanwhile."""
        path = self.staging_root / f"{app}-{os.getpid()}-{secrets.token_hex(4)}"
        path.mkdir(mode=0o700)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish(self, staging: Path, manifest: Manifest) -> Snapshot:
        """Hash the staged files into the manifest, write it, and make the snapshot visible with one rename."""
        for f in staging.iterdir():
            if f.is_file():
                os.chmod(f, 0o600)
                manifest.files[f.name] = FileEntry(size=f.stat().st_size, sha256=sha256_file(f))
        _write_private(staging / FILENAME, manifest.to_json())
        app_dir = self.snapshots / manifest.app
        app_dir.mkdir(mode=0o700, exist_ok=True)
        dest = app_dir / manifest.snapshot_id
        os.rename(staging, dest)
        _fsync_dir(app_dir)
        return Snapshot(dest, manifest)

    def list(self, app: str) -> list[Snapshot]:
        """The app's snapshots, newest first; entries with unreadable manifests are skipped."""
        found = []
        app_dir = self.snapshots / app
        if not app_dir.is_dir():
            return []
        for entry in app_dir.iterdir():
            try:
                found.append(Snapshot(entry, Manifest.load(entry / FILENAME)))
            except ManifestError:
                continue
        return sorted(found, key=lambda s: (s.manifest.created_at, s.id), reverse=True)

    def latest(self, app: str) -> Snapshot | None:
        snaps = self.list(app)
        return snaps[0] if snaps else None

    def remove(self, snapshot: Snapshot) -> None:
        shutil.rmtree(snapshot.path, ignore_errors=True)


def new_snapshot_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def _write_private(path: Path, data: str) -> None:
    """Write atomically (temp file + rename) with mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
