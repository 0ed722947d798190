"""Use case `entrypoint`: a container ENTRYPOINT that restores the app from a snapshot in a mounted directory, or
boots it cold, waits until it is ready, snapshots it into that directory and keeps serving (the Open Liberty
InstantOn / CRaC way: the platform starts the container, the container decides).

    ENTRYPOINT ["python3", "-m", "warmstart.entrypoint", "--snapshot-dir", "/snapshots", "--ready-http", "/healthz",
                "--port", "8080", "--"]
    CMD ["python3", "/app/app.py"]

Runs with the standard library plus warmstart's stdlib-only modules and tenacity (copied into the image), so app
images need no pip install. Layout of the snapshot dir (shared by any number of containers):

    DIR/current -> snap-ID        a symlink, switched atomically when a snapshot is complete
    DIR/snap-ID/images/           CRIU images;  DIR/snap-ID/manifest.json: key, pids, stdio, sha256 of every image

PID collisions: the restored tree needs its old PIDs free. The app is started at a reserved PID (300 and up, via
ns_last_pid or, without the privilege, by burning PIDs), far above what the wrapper and CRIU use in a fresh PID
namespace; if a needed PID is taken anyway, the wrapper starts cold and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmstart.cache.store import sha256_file
from warmstart.engines.process import CriuProcess, external_stdio
from warmstart.errors import WarmstartError

SCHEMA_VERSION = 1
CURRENT = "current"
MANIFEST = "manifest.json"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
PR_SET_CHILD_SUBREAPER = 36


def log(message: str) -> None:
    print(f"warmstart-entrypoint: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Options:
    snapshot_dir: Path
    command: list[str]
    ready_http: str | None = None
    ready_tcp: bool = False
    port: int = 8080
    timeout: float = 120.0
    pid_base: int = 300
    snapshot: bool = True
    identity: str = ""  # what the app is: $WARMSTART_IMAGE (set it in the Containerfile) and the command


def snapshot_key(opts: Options, criu_version: str) -> str:
    material = json.dumps({"command": opts.command, "identity": opts.identity, "criu": criu_version,
                           "format": SCHEMA_VERSION}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def _tree_pids(root: int) -> list[int]:
    """The pids (and thread ids) of a process tree: what a restore will need free."""
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError):
            pids += [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return sorted(set(pids))


def reserve_pids(base: int) -> str:
    """Make the next process get a PID >= base. Returns how."""
    try:
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(base - 1))
        return "ns_last_pid"
    except OSError:
        pass
    for _ in range(base + 100):  # without the privilege: use up PIDs until the counter passes base
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        if pid >= base - 1:
            return "burned"
    return "not reserved"


def _wait_ready(opts: Options, pid: int) -> None:
    from warmstart.probes import make_check, wait_ready
    from warmstart.spec import ProbeSpec

    if opts.ready_http:
        probe = ProbeSpec(kind="http", port=opts.port, path=opts.ready_http, timeout=opts.timeout)
    else:
        probe = ProbeSpec(kind="tcp", port=opts.port, timeout=opts.timeout)
    check = make_check(probe, engine=None, container="", address=("127.0.0.1", opts.port))  # type: ignore[arg-type]

    def alive() -> str | None:  # /proc, not waitpid: the supervisor must still see the exit status
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return "gone"
        return "exited" if state in ("Z", "X") else None

    wait_ready(probe, check=check, alive=alive, diagnostics=lambda: (alive() or "running", ""))


class Snapshots:
    """The shared snapshot dir: read the current snapshot, publish a new one atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def current(self) -> tuple[Path, dict[str, Any]] | None:
        link = self.root / CURRENT
        try:
            target = self.root / os.readlink(link)
            return target, json.loads((target / MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def publish(self, staged: Path) -> Path:
        final = self.root / f"snap-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        os.rename(staged, final)
        tmp_link = self.root / f".current-{secrets.token_hex(4)}"
        os.symlink(final.name, tmp_link)
        os.rename(tmp_link, self.root / CURRENT)  # atomic switch: readers see the old or the new, never half
        for old in self.root.glob("snap-*"):
            if old != final and old.name != os.readlink(self.root / CURRENT):
                with contextlib.suppress(OSError):
                    if time.time() - old.stat().st_mtime > 60:  # a reader may still be restoring from it
                        shutil.rmtree(old)
        return final


def why_not_restorable(opts: Options, snap: tuple[Path, dict[str, Any]] | None, key: str) -> str:
    if snap is None:
        return f"no snapshot in {opts.snapshot_dir}"
    path, m = snap
    if m.get("schema_version", 0) > SCHEMA_VERSION:
        return f"snapshot {path.name} has a newer format ({m.get('schema_version')})"
    if m.get("key") != key:
        return f"snapshot {path.name} is for another image or command (key differs)"
    taken = [p for p in m.get("pids", []) if os.path.exists(f"/proc/{p}")]
    if taken:
        return f"PID collision: PIDs {taken[:5]} that snapshot {path.name} needs are in use"
    for name, entry in m.get("files", {}).items():
        f = path / "images" / name
        if not f.is_file() or f.stat().st_size != entry["size"] or sha256_file(f) != entry["sha256"]:
            return f"snapshot {path.name} is damaged: images/{name} does not match its manifest"
    return ""


def _forward_signals(pid: int) -> None:
    """PID 1 ignores signals it has no handler for: pass them all on to the app."""
    for sig in FORWARDED:
        signal.signal(sig, lambda s, f: os.kill(pid, s))


def _supervise(pid: int) -> int:
    """Reap orphans (we may be PID 1) until the app exits; return its exit code."""
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        if done == pid:
            return os.waitstatus_to_exitcode(status) if status >= 0 else 1


def _signal_exit_code(code: int) -> int:
    return 128 - code if code < 0 else code


def run(opts: Options) -> int:
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # restored trees are reparented to us
    opts.snapshot_dir.mkdir(parents=True, exist_ok=True)
    criu = CriuProcess()
    key = snapshot_key(opts, criu.version())
    snaps = Snapshots(opts.snapshot_dir)
    snap = snaps.current()
    reason = why_not_restorable(opts, snap, key)
    if not reason and snap is not None:
        path, m = snap
        work = Path(tempfile.mkdtemp(prefix="warmstart-restore-"))
        try:
            t = time.monotonic()
            inherit = {fd: m["stdio"][str(fd)] for fd in (1, 2) if str(fd) in m.get("stdio", {})}
            pid = criu.restore(images=path / "images", workdir=work, inherit=inherit)
            _forward_signals(pid)
            log(f"restored pid {pid} from {path.name} in {time.monotonic() - t:.2f}s")
            return _signal_exit_code(_supervise(pid))
        except WarmstartError as exc:
            reason = f"restore failed: {exc}" + (f"\n{exc.details}" if exc.details else "")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log(f"starting cold: {reason}")
    how = reserve_pids(opts.pid_base)
    app = subprocess.Popen(opts.command, stdin=subprocess.DEVNULL, start_new_session=True)
    _forward_signals(app.pid)
    log(f"app pid {app.pid} (PIDs reserved by {how})")
    if opts.snapshot:
        try:
            _wait_ready(opts, app.pid)
            _snapshot(opts, snaps, criu, key, app.pid)
        except WarmstartError as exc:
            log(f"no snapshot taken: {exc}")
    return _signal_exit_code(_supervise(app.pid))


def _snapshot(opts: Options, snaps: Snapshots, criu: CriuProcess, key: str, pid: int) -> None:
    staged = opts.snapshot_dir / f".staging-{os.getpid()}-{secrets.token_hex(4)}"
    (staged / "images").mkdir(parents=True)
    try:
        t = time.monotonic()
        pids = _tree_pids(pid)
        criu.dump(pid=pid, images=staged / "images", workdir=staged, leave_running=True)
        files = {f.name: {"size": f.stat().st_size, "sha256": sha256_file(f)} for f in (staged / "images").iterdir()}
        manifest = {"schema_version": SCHEMA_VERSION, "key": key, "command": opts.command,
                    "identity": opts.identity, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "pids": pids, "stdio": {str(fd): p for fd, p in external_stdio().items()}, "files": files}
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        for log_file in ("dump.log",):
            with contextlib.suppress(OSError):
                (staged / log_file).unlink()
        final = snaps.publish(staged)
        log(f"snapshot {final.name} taken in {time.monotonic() - t:.2f}s")
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def _pid_base(text: str) -> int:
    if not text.isdigit() or not 2 <= int(text) <= 4_000_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a PID (2-4000000)")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warmstart entrypoint", description=__doc__.splitlines()[0])
    parser.add_argument("--snapshot-dir", type=Path, default=Path(os.environ.get("WARMSTART_SNAPSHOT_DIR", "/snapshots")))
    parser.add_argument("--ready-http", metavar="PATH")
    parser.add_argument("--ready-tcp", action="store_true", help="ready when --port accepts TCP")
    parser.add_argument("--port", type=_port, default=8080)
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--pid-base", type=_pid_base, default=300)
    parser.add_argument("--no-snapshot", action="store_true", help="never checkpoint (restore only)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the app's command after --")
    opts = Options(snapshot_dir=args.snapshot_dir, command=command, ready_http=args.ready_http,
                   ready_tcp=args.ready_tcp, port=args.port, timeout=args.ready_timeout, pid_base=args.pid_base,
                   snapshot=not args.no_snapshot, identity=os.environ.get("WARMSTART_IMAGE", ""))
    try:
        return run(opts)
    except WarmstartError as exc:
        log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
