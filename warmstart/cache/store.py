"""The local snapshot store.

Layout (dirs 0700, files 0600: snapshots hold process memory, so they are treated as secrets):

    ROOT/apps/APP.json                  the app's spec, for cold starts (written by a successful build)
    ROOT/snapshots/APP/TAG/             one published snapshot: checkpoint.tar, manifest.json, .verified
    ROOT/quarantine/APP-TAG-TIME/       snapshots that failed verification, kept for inspection until pruned
    ROOT/locks/APP-KEY.lock             flock held while a key is being built (one build per key)
    ROOT/.staging/APP-PID-RANDOM/       a snapshot being written; never read as an entry

A snapshot becomes visible only through one rename of a complete staging dir, so a build that dies at any point
(even SIGKILL) leaves nothing half-written in `snapshots/`; staging dirs of dead processes are swept when the
store opens.
"""

from __future__ import annotations

import contextlib
import fcntl
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
from warmstart.errors import CacheError, ManifestError, SnapshotCorrupt, SnapshotNotFound
from warmstart.spec import AppSpec

ENV_VAR = "WARMSTART_CACHE"
APP_RECORD_VERSION = 1
VERIFIED_STAMP = ".verified"  # (inode, size, mtime, ctime) of each file when its sha256 last matched


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
    def ref(self) -> str:
        return self.manifest.ref

    @property
    def size(self) -> int:
        return sum(f["size"] for f in self.manifest.files.values())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parse_ref(ref: str) -> tuple[str, str | None]:
    """APP or APP:TAG."""
    app, _, tag = ref.partition(":")
    return app, (tag or None)


class SnapshotStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.apps = root / "apps"
        self.snapshots = root / "snapshots"
        self.quarantine_root = root / "quarantine"
        self.locks = root / "locks"
        self.staging_root = root / ".staging"

    def _dirs(self) -> tuple[Path, ...]:
        return (self.root, self.apps, self.snapshots, self.quarantine_root, self.locks, self.staging_root)

    def open(self) -> SnapshotStore:
        """Create the layout if needed and check it is usable; sweep staging dirs left by dead builds."""
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"cache dir {self.root} is not a directory", hint="pass --cache-dir or set $WARMSTART_CACHE")
        try:
            for d in self._dirs():
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
        except OSError as exc:
            raise CacheError(
                f"cache dir {self.root} cannot be used: {exc.strerror or exc}",
                hint="pass --cache-dir or set $WARMSTART_CACHE to a writable directory",
            ) from exc
        for d in self._dirs():
            if not os.access(d, os.R_OK | os.W_OK | os.X_OK):
                raise CacheError(f"cache dir {d} is not readable and writable by this user")
        self._sweep_staging()
        return self

    def _sweep_staging(self) -> None:
        for entry in self.staging_root.iterdir():
            parts = entry.name.rsplit("-", 2)
            if len(parts) != 3 or not parts[1].isdigit() or not pid_alive(int(parts[1])):
                shutil.rmtree(entry, ignore_errors=True)

    # -- apps ---------------------------------------------------------------------------------------------------------
    def save_app(self, spec: AppSpec) -> None:
        data = json.dumps({"record_version": APP_RECORD_VERSION, "spec": spec.to_dict()}, indent=2) + "\n"
        write_private(self.apps / f"{spec.name}.json", data)

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

    # -- building -----------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, app: str, key: str) -> Iterator[None]:
        """Exclusive while one key of one app is built; the kernel drops it if the holder dies."""
        fd = os.open(self.locks / f"{app}-{key[:16]}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def staging(self, app: str) -> Iterator[Path]:
        """A private dir to write a snapshot into; removed on any exit unless published meanwhile."""
        path = self.staging_root / f"{app}-{os.getpid()}-{secrets.token_hex(4)}"
        path.mkdir(mode=0o700)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish(self, staging: Path, manifest: Manifest, *, verified: bool = False) -> Snapshot:
        """Hash the staged files into the manifest (unless the caller `verified` them against it already), write
        it, and make the snapshot visible with one rename (replacing an older snapshot of the same tag)."""
        for f in sorted(staging.iterdir()):
            if f.is_file() and f.name not in (FILENAME, VERIFIED_STAMP):
                os.chmod(f, 0o600)
                if not verified:
                    manifest.files[f.name] = FileEntry(size=f.stat().st_size, sha256=sha256_file(f))
        write_private(staging / FILENAME, manifest.to_json())
        self._stamp(staging, manifest)
        app_dir = self.snapshots / manifest.app
        app_dir.mkdir(mode=0o700, exist_ok=True)
        dest = app_dir / manifest.tag
        if dest.exists():
            old = self.staging_root / f"{manifest.app}-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(dest, old)
            os.rename(staging, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, dest)
        _fsync_dir(app_dir)
        return Snapshot(dest, manifest)

    # -- reading ------------------------------------------------------------------------------------------------------
    def list(self, app: str | None = None) -> list[Snapshot]:
        """Snapshots (of one app, or all), newest first; entries with unreadable manifests are skipped."""
        found = []
        app_dirs = [self.snapshots / app] if app else sorted(self.snapshots.iterdir())
        for app_dir in app_dirs:
            if not app_dir.is_dir():
                continue
            for entry in app_dir.iterdir():
                try:
                    found.append(Snapshot(entry, Manifest.load(entry / FILENAME)))
                except ManifestError:
                    continue
        return sorted(found, key=lambda s: (s.manifest.created_at, s.ref), reverse=True)

    def get(self, app: str, tag: str) -> Snapshot | None:
        path = self.snapshots / app / tag
        if not (path / FILENAME).exists():
            return None
        return Snapshot(path, Manifest.load(path / FILENAME))

    def resolve(self, ref: str) -> list[Snapshot]:
        """APP:TAG -> that snapshot; APP -> all of the app's, newest first. Raises SnapshotNotFound."""
        app, tag = parse_ref(ref)
        found = [s for s in ([self.get(app, tag)] if tag else self.list(app)) if s is not None]
        if not found:
            raise SnapshotNotFound(f"no snapshot {ref!r} in {self.root}")
        return found

    def find_key(self, app: str, key: str) -> Snapshot | None:
        return next((s for s in self.list(app) if s.manifest.key == key), None)

    def latest(self, app: str) -> Snapshot | None:
        snaps = self.list(app)
        return snaps[0] if snaps else None

    # -- integrity ----------------------------------------------------------------------------------------------------
    def _stamp(self, path: Path, manifest: Manifest) -> None:
        stamp = {name: _stat_key(path / name) for name in manifest.files}
        write_private(path / VERIFIED_STAMP, json.dumps(stamp))

    def verify(self, snapshot: Snapshot) -> None:
        """Check every file against the manifest's sha256. Files unchanged (same inode, size, mtime and ctime)
        since they last matched are not re-read, which keeps verification off the restore path's critical time;
        any write to a file changes its ctime and forces a full re-hash."""
        try:
            stamp = json.loads((snapshot.path / VERIFIED_STAMP).read_text())
        except (OSError, ValueError):
            stamp = {}
        changed = False
        for name, entry in snapshot.manifest.files.items():
            path = snapshot.path / name
            try:
                current = _stat_key(path)
            except FileNotFoundError:
                raise SnapshotCorrupt(f"snapshot {snapshot.ref} is missing {name}") from None
            if stamp.get(name) == current:
                continue
            if current[1] != entry["size"]:
                raise SnapshotCorrupt(f"snapshot {snapshot.ref}: {name} is {current[1]} bytes, manifest says "
                                      f"{entry['size']}")
            if sha256_file(path) != entry["sha256"]:
                raise SnapshotCorrupt(f"snapshot {snapshot.ref}: {name} does not match its sha256 in the manifest")
            changed = True
        if changed:
            self._stamp(snapshot.path, snapshot.manifest)

    def quarantine(self, snapshot: Snapshot) -> Path:
        """Move a snapshot that failed verification out of the way (kept for inspection until pruned)."""
        dest = self.quarantine_root / f"{snapshot.manifest.app}-{snapshot.manifest.tag}-{int(time.time())}"
        os.rename(snapshot.path, dest)
        return dest

    def remove(self, snapshot: Snapshot) -> None:
        # Rename first, so a reader never sees a half-deleted snapshot.
        trash = self.staging_root / f"rm-{os.getpid()}-{secrets.token_hex(4)}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(snapshot.path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(OSError):
            snapshot.path.parent.rmdir()  # the app dir, when it was the last snapshot

    def quarantined(self) -> list[Path]:
        return sorted(self.quarantine_root.iterdir())


def write_private(path: Path, data: str) -> None:
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
