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
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmstart.cache.health import Health
from warmstart.cache.manifest import CHECKPOINT_FILE, FILENAME, SIGNATURE_FILE, FileEntry, Manifest
from warmstart.core import layout, safefs
from warmstart.core.bounded import loads_json
from warmstart.core.labels import pid_alive
from warmstart.core.layout import app_record
from warmstart.core.safefs import write_private
from warmstart.core.spec import AppSpec, validate_app_name, validate_tag
from warmstart.errors import CacheError, ManifestError, SnapshotCorrupt, SnapshotNotFound, UsageError

APP_RECORD_VERSION = 1
APP_RECORD_MAX_BYTES = 1 << 20
HEALTH_FILE = ".health"  # restore failures and circuit state (cache/health.py), advice only
VERIFIED_STAMP = ".verified"  # (inode, size, mtime, ctime) of each file when its sha256 last matched


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

    def signature(self) -> str | None:
        """The snapshot's SIGNATURE_FILE text, or None when it is unsigned."""
        try:
            return safefs.read_owned(self.path / SIGNATURE_FILE, limit=1 << 14)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheError(f"cannot read the signature of snapshot {self.ref}: {exc.strerror or exc}") from exc


def sha256_file(path: Path) -> str:
    import hashlib  # here: `run` reaches its first engine call without it (2 ms)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_key(path: Path) -> list[int]:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise SnapshotCorrupt(f"{path} is not a regular file")
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def parse_ref(ref: str) -> tuple[str, str | None]:
    """APP or APP:TAG, both validated: this is where a snapshot reference from the command line enters, and both
    parts become path components in the cache."""
    app, sep, tag = ref.partition(":")
    validate_app_name(app)
    if sep:
        validate_tag(tag)
    return app, (tag or None)


class SnapshotStore:
    def __init__(self, root: Path) -> None:
        root = Path(os.path.abspath(root))
        # The configured root itself may be a symlink the user made; nothing below it is followed.
        self.root = root.resolve() if root.is_symlink() else root
        root = self.root
        self.apps = root / layout.APPS_DIR
        self.snapshots = root / "snapshots"
        self.quarantine_root = root / "quarantine"
        self.locks = root / "locks"
        self.staging_root = root / ".staging"
        self.sandboxes = root / "sandboxes"  # control dirs of pre-started sandboxes (trigger FIFOs)

    def _dirs(self) -> tuple[Path, ...]:
        return (self.root, self.apps, self.snapshots, self.quarantine_root, self.locks, self.staging_root,
                self.sandboxes)

    def open(self) -> SnapshotStore:
        """Create the layout if needed and check it is ours before anything in it is read: every directory a
        real one (no symlink), owned by this user, writable by no one else. Sweep staging dirs of dead builds."""
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"cache dir {self.root} is not a directory",
                             hint="pass --cache-dir or set $WARMSTART_CACHE")
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                self.root.mkdir(mode=0o700)
            safefs.check_private_dir(self.root)
            os.chmod(self.root, 0o700)
            for d in self._dirs()[1:]:
                with contextlib.suppress(FileExistsError):
                    d.mkdir(mode=0o700)
                safefs.check_private_dir(d)
        except safefs.UnsafePath as exc:
            raise CacheError(
                f"cache dir refused: {exc.strerror}",
                hint="snapshots are restored as they are found, so the cache must be yours alone: use another "
                     "--cache-dir, or fix ownership and mode (chown; chmod 700) after checking its content",
            ) from exc
        except OSError as exc:
            raise CacheError(
                f"cache dir {self.root} cannot be used: {exc.strerror or exc}",
                hint="pass --cache-dir or set $WARMSTART_CACHE to a writable directory",
            ) from exc
        self._sweep_staging()
        return self

    def _sweep_staging(self) -> None:
        for entry in self.staging_root.iterdir():
            parts = entry.name.rsplit("-", 2)
            if len(parts) != 3 or not parts[1].isdigit() or not pid_alive(int(parts[1])):
                if safefs.is_plain_dir(entry):
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        entry.unlink()

    # -- apps ---------------------------------------------------------------------------------------------------------
    def save_app(self, spec: AppSpec) -> None:
        # Secret values are never written: `run` takes them from its own environment.
        from warmstart.security.secretenv import stored_spec  # the build's path only

        data = json.dumps({"record_version": APP_RECORD_VERSION, "spec": stored_spec(spec).to_dict()}, indent=2) + "\n"
        write_private(app_record(self.root, validate_app_name(spec.name)), data)

    def load_app(self, name: str) -> AppSpec | None:
        path = app_record(self.root, validate_app_name(name))
        try:
            raw = loads_json(safefs.read_owned(path, limit=APP_RECORD_MAX_BYTES))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CacheError(f"cannot read app record {path}: {exc}") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("spec"), dict):
            raise CacheError(f"app record {path} is malformed: expected {{\"record_version\": N, \"spec\": {{...}}}}")
        version = raw.get("record_version", 0)
        if not isinstance(version, int) or version > APP_RECORD_VERSION:
            raise CacheError(f"app record {path} was written by a newer warmstart (record_version {version!r})")
        try:
            spec = AppSpec.from_dict(raw["spec"])
        except (KeyError, TypeError, ValueError, AttributeError, UsageError) as exc:
            raise CacheError(f"app record {path} is malformed: {exc}") from exc
        if spec.name != name:
            raise CacheError(f"app record {path} describes app {spec.name!r}, not {name!r}")
        return spec

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
        path = self.staging_root / f"{app}-{os.getpid()}-{os.urandom(4).hex()}"
        path.mkdir(mode=0o700)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish(
        self, staging: Path, manifest: Manifest, *, verified: bool = False,
        signer: Callable[[Manifest], str] | None = None,
    ) -> Snapshot:
        """Hash the staged files into the manifest (unless the caller `verified` them against it already), write
        it (and its signature, with a `signer`), and make the snapshot visible with one rename (replacing an older
        snapshot of the same tag)."""
        for name in snapshot_files(staging):
            f = staging / name
            os.chmod(f, 0o600)
            if not verified:
                manifest.files[name] = FileEntry(size=f.stat().st_size, sha256=sha256_file(f))
        write_private(staging / FILENAME, manifest.to_json())
        if signer is not None:
            write_private(staging / SIGNATURE_FILE, signer(manifest))
        self._stamp(staging, manifest)
        app_dir = self._app_dir(manifest.app, create=True)
        dest = app_dir / validate_tag(manifest.tag)
        if os.path.lexists(dest):
            if not safefs.is_plain_dir(dest):
                raise CacheError(f"{dest} is not a snapshot directory (a symlink or a file): refusing to replace it")
            # One atomic swap: a concurrent `run` sees the old snapshot or the new one, never neither.
            if safefs.exchange(staging, dest):
                shutil.rmtree(staging, ignore_errors=True)
            else:
                old = self.staging_root / f"{manifest.app}-{os.getpid()}-{os.urandom(4).hex()}"
                os.rename(dest, old)
                os.rename(staging, dest)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, dest)
        _fsync_dir(app_dir)
        return Snapshot(dest, manifest)

    def _app_dir(self, app: str, *, create: bool = False) -> Path:
        """snapshots/APP, checked to be a real directory of ours (a symlink there could lead anywhere)."""
        path = self.snapshots / validate_app_name(app)
        if create:
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)
        try:
            safefs.check_private_dir(path)
        except FileNotFoundError:
            raise
        except safefs.UnsafePath as exc:
            raise CacheError(f"cache entry refused: {exc.strerror}", hint="remove it by hand after a look") from exc
        return path

    # -- reading ------------------------------------------------------------------------------------------------------
    def _entries(self, app: str | None) -> Iterator[Path]:
        """Snapshot dirs (of one app, or all) whose names are valid and that are real dirs: symlinks and
        foreign names are never listed, so nothing outside the cache is read or removed through them."""
        if app is not None:
            validate_app_name(app)
        for app_dir in sorted(self.snapshots.iterdir()) if app is None else [self.snapshots / app]:
            try:
                validate_app_name(app_dir.name)
                safefs.check_private_dir(app_dir)
            except (UsageError, OSError):
                continue
            for entry in sorted(app_dir.iterdir()):
                try:
                    validate_tag(entry.name)
                except UsageError:
                    continue
                if safefs.is_plain_dir(entry):
                    yield entry

    def _load(self, entry: Path) -> Snapshot:
        manifest = Manifest.load(entry / FILENAME)
        if (manifest.app, manifest.tag) != (entry.parent.name, entry.name):
            raise ManifestError(f"snapshot manifest {entry / FILENAME} describes {manifest.ref}, not "
                                f"{entry.parent.name}:{entry.name}")
        return Snapshot(entry, manifest)

    def snapshots_of(self, app: str | None = None) -> list[Snapshot]:
        """Snapshots (of one app, or all), newest first; entries with unreadable manifests are skipped (`broken`
        lists them, and prune removes them)."""
        found = []
        for entry in self._entries(app):
            try:
                found.append(self._load(entry))
            except ManifestError:
                continue
        return sorted(found, key=lambda s: (s.manifest.created_at, s.ref), reverse=True)

    def broken(self, app: str | None = None) -> list[Path]:
        """Snapshot dirs whose manifest cannot be read or does not validate."""
        bad = []
        for entry in self._entries(app):
            try:
                self._load(entry)
            except ManifestError:
                bad.append(entry)
        return bad

    def get(self, app: str, tag: str) -> Snapshot | None:
        validate_tag(tag)
        try:
            path = self._app_dir(app) / tag
        except FileNotFoundError:
            return None
        if not safefs.is_plain_dir(path) or not os.path.lexists(path / FILENAME):
            return None
        return self._load(path)

    def resolve(self, ref: str) -> list[Snapshot]:
        """APP:TAG -> that snapshot; APP -> all of the app's, newest first. Raises SnapshotNotFound."""
        app, tag = parse_ref(ref)
        found = [s for s in ([self.get(app, tag)] if tag else self.snapshots_of(app)) if s is not None]
        if not found:
            raise SnapshotNotFound(f"no snapshot {ref!r} in {self.root}")
        return found

    def find_key(self, app: str, key: str) -> Snapshot | None:
        return next((s for s in self.snapshots_of(app) if s.manifest.key == key), None)

    def latest(self, app: str) -> Snapshot | None:
        snaps = self.snapshots_of(app)
        return snaps[0] if snaps else None

    # -- integrity ----------------------------------------------------------------------------------------------------
    def _stamp(self, path: Path, manifest: Manifest) -> None:
        """Record the files' stat keys. Best effort: the stamp only saves re-hashing, so a full disk or a
        read-only cache costs a re-hash next time, never a failed run."""
        stamp = {name: _stat_key(path / name) for name in manifest.files}
        with contextlib.suppress(OSError):
            write_private(path / VERIFIED_STAMP, json.dumps(stamp))

    def contents(self, snapshot: Snapshot) -> dict[str, Any]:
        """What the snapshot holds, decoded with CRIU's decoder (warmstart.cache.contents)."""
        if snapshot.manifest.encryption:
            raise CacheError(f"snapshot {snapshot.ref} is encrypted: its contents are not decoded",
                             hint="its images are ciphertext; restore it with its key instead")
        self.verify(snapshot)  # decode only what matches its digests
        from warmstart.cache.contents import describe_snapshot

        return describe_snapshot(snapshot.path)

    def coredump(self, snapshot: Snapshot, out: Path) -> list[Any]:
        """ELF core files of the snapshot's processes into `out` (warmstart.cache.coredump)."""
        if snapshot.manifest.encryption:
            raise CacheError(f"snapshot {snapshot.ref} is encrypted: no core is written from it",
                             hint="its images are ciphertext; restore it with its key instead")
        self.verify(snapshot)  # decode only what matches its digests
        from warmstart.cache.coredump import write_cores

        return list(write_cores(snapshot.path, out))

    def verify(self, snapshot: Snapshot, *, full: bool = False) -> None:
        """Check every file against the manifest's sha256. Files unchanged (same inode, size, mtime and ctime)
        since they last matched are not re-read, which keeps verification off the restore path's critical time;
        any write to a file changes its ctime and forces a full re-hash. With `full` (a signature is to be
        trusted: the stamp is the cache's own word, and whoever can write the pages can write it too) every file is
        re-hashed, in parallel (about 70 ms per 100 MiB on one core here)."""
        if not snapshot.manifest.files:
            raise SnapshotCorrupt(f"snapshot {snapshot.ref} lists no files in its manifest")
        images = snapshot.path / "images"
        if os.path.lexists(images) and not safefs.is_plain_dir(images):
            raise SnapshotCorrupt(f"snapshot {snapshot.ref}: images is not a directory")
        stamp = {} if full else self._read_stamp(snapshot.path)
        to_hash = []
        for name, entry in snapshot.manifest.files.items():
            try:
                current = _stat_key(snapshot.path / name)
            except FileNotFoundError:
                raise SnapshotCorrupt(f"snapshot {snapshot.ref} is missing {name}") from None
            if stamp.get(name) == current:
                continue
            if current[1] != entry["size"]:
                raise SnapshotCorrupt(f"snapshot {snapshot.ref}: {name} is {current[1]} bytes, manifest says "
                                      f"{entry['size']}")
            to_hash.append(name)
        to_hash.sort(key=lambda n: -snapshot.manifest.files[n]["size"])  # the pages first: they take longest
        for name, digest in _sha256_all(snapshot.path, to_hash):
            if digest != snapshot.manifest.files[name]["sha256"]:
                raise SnapshotCorrupt(f"snapshot {snapshot.ref}: {name} does not match its sha256 in the manifest")
        if to_hash:
            self._stamp(snapshot.path, snapshot.manifest)

    @staticmethod
    def _read_stamp(path: Path) -> dict[str, Any]:
        try:
            stamp = loads_json(safefs.read_owned(path / VERIFIED_STAMP, limit=1 << 16))
        except (OSError, ValueError):
            return {}
        return stamp if isinstance(stamp, dict) else {}

    def health(self, snapshot: Snapshot) -> Health:
        try:
            return Health.from_raw(loads_json(safefs.read_owned(snapshot.path / HEALTH_FILE, limit=1 << 14)))
        except (OSError, ValueError):
            return Health()

    def record_restore(self, snapshot: Snapshot, error: str | None) -> Health:
        """Count a failed restore (`error`) or clear the record after a good one; best effort, like the stamp."""
        before = self.health(snapshot)
        after = before.after_failure(error) if error is not None else Health()
        if after != before:
            with contextlib.suppress(OSError):
                if after == Health():
                    (snapshot.path / HEALTH_FILE).unlink()
                else:
                    write_private(snapshot.path / HEALTH_FILE, json.dumps(after.to_dict()))
        return after

    def add_signature(self, snapshot: Snapshot, text: str) -> None:
        """Sign a published snapshot (push --sign-key): one atomic write beside its manifest."""
        write_private(snapshot.path / SIGNATURE_FILE, text)

    def quarantine(self, snapshot: Snapshot) -> Path:
        """Move a snapshot that failed verification out of the way (kept for inspection until pruned)."""
        dest = self.quarantine_root / f"{snapshot.manifest.app}-{snapshot.manifest.tag}-{int(time.time())}"
        os.rename(snapshot.path, dest)
        return dest

    def remove(self, snapshot: Snapshot) -> None:
        self.remove_dir(snapshot.path)

    def remove_dir(self, path: Path) -> None:
        """Remove a snapshot or quarantine dir: only a real dir directly inside this cache's snapshots/APP/ or
        quarantine/ (never through a symlink); renamed first, so a reader never sees a half-deleted snapshot."""
        inside = path.parent.parent == self.snapshots or path.parent == self.quarantine_root
        if not inside or not safefs.is_plain_dir(path) or not safefs.is_plain_dir(path.parent):
            raise CacheError(f"{path} is not a snapshot directory of {self.root}: not removed")
        trash = self.staging_root / f"rm-{os.getpid()}-{os.urandom(4).hex()}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        if path.parent != self.quarantine_root:
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # the app dir, when it was the last snapshot

    def quarantined(self) -> list[Path]:
        return sorted(p for p in self.quarantine_root.iterdir() if safefs.is_plain_dir(p))


def snapshot_files(staging: Path) -> list[str]:
    """The files a staged snapshot consists of, relative: top-level files and those of its CRIU image dir (made
    0700 here). Anything else (a link, a deeper dir) is refused: a snapshot is flat by construction."""
    names = []
    for f in sorted(staging.iterdir()):
        if f.name in (FILENAME, VERIFIED_STAMP, SIGNATURE_FILE):
            continue
        if f.is_symlink():
            raise CacheError(f"staged snapshot holds a symlink {f.name}: refused")
        if f.is_dir() and f.name == "images":
            os.chmod(f, 0o700)
            for g in sorted(f.iterdir()):
                if g.is_symlink() or not g.is_file():
                    raise CacheError(f"staged snapshot holds {g.relative_to(staging)}, not a plain file: refused")
                names.append(f"images/{g.name}")
        elif f.is_file():
            names.append(f.name)
        else:
            raise CacheError(f"staged snapshot holds {f.name}, not a plain file: refused")
    return names


def _sha256_all(root: Path, names: list[str]) -> Iterator[tuple[str, str]]:
    """(name, sha256) of each file, hashed on every core when there are several (hashlib releases the GIL)."""
    if len(names) < 2:
        yield from ((n, _sha256_owned(root / n)) for n in names)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1)) as pool:
        yield from zip(names, pool.map(lambda n: _sha256_owned(root / n), names), strict=True)


def _sha256_owned(path: Path) -> str:
    import hashlib  # here: `run` reaches its first engine call without it (2 ms)
    digest = hashlib.sha256()
    try:
        with os.fdopen(safefs.open_owned(path), "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise SnapshotCorrupt(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
