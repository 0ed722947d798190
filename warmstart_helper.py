"""In-app helper for Python services snapshotted by warmstart (the spirit of Lambda SnapStart's runtime hooks).

Standard library only, one file: copy it into your image or `pip install warmstart` there. In the app:

    import warmstart_helper

    @warmstart_helper.register_before_checkpoint
    def close_pool() -> None:
        pool.close()            # connections to other hosts cannot survive a snapshot

    @warmstart_helper.register_after_restore
    def reopen_pool() -> None:
        pool.open()

    warmstart_helper.install()  # once at start; idempotent

and `python_helper = true` in the app's warmstart.toml. Before the checkpoint warmstart runs
`python3 -m warmstart_helper before_checkpoint` in the container, which asks the app (over an abstract Unix
socket) to run the before-hooks and waits for them; with `trim.python = true` it then runs
`python3 -m warmstart_helper trim`: `gc.collect()` plus glibc's `malloc_trim(0)` inside the app. After a restore
the new container's init asks the app over the same socket to run the after-restore steps and waits for them
before the instance counts as ready (a whole-container restore, which has no init of ours, sends SIGUSR2
instead). The first after-restore steps are always `import_secrets` (the values of `secret_env`, which the snapshot
never held, from the init) and `reseed`: clones of one snapshot would otherwise share the state of `random` (and
of numpy's global generator) and produce the same "random" numbers. `uuid.uuid4()` and `secrets` read the kernel's
generator and need nothing.
"""

from __future__ import annotations

import ctypes
import gc
import os
import random
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable

# Secrets: the snapshot is taken without them (the app's `secret_env`); after a restore the container's init
# serves their values on this abstract socket as NAME=VALUE pairs ended by NUL bytes (sandbox-init/main.go).
__all__ = ["import_secrets", "install", "register_after_restore", "register_before_checkpoint", "reseed", "trim"]

SECRETS_SOCKET = "\0warmstart-secrets"
SECRET_NAMES_VAR = "WARMSTART_SECRET_NAMES"
SOCKET_NAME = "\0warmstart-helper"  # abstract socket: no file to leave behind, private to the network namespace
RESTORE_SIGNAL = signal.SIGUSR2

Hook = Callable[[], None]
_before: list[Hook] = []
_after: list[Hook] = []
_installed = False
_lock = threading.Lock()


def register_before_checkpoint(fn: Hook) -> Hook:
    _before.append(fn)
    return fn


def register_after_restore(fn: Hook) -> Hook:
    _after.append(fn)
    return fn


def reseed() -> None:
    """Give this process fresh randomness from the kernel (clones of one snapshot must not share it)."""
    random.seed(os.urandom(32))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(int.from_bytes(os.urandom(4), "little"))


def trim() -> None:
    """Free what can be freed so the snapshot (and every restore) is smaller."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def run_before_checkpoint() -> None:
    with _lock:
        for fn in _before:
            fn()


def import_secrets() -> list[str]:
    """Put the secrets the restoring init serves into os.environ (no-op outside a restored sandbox); returns
    their names. Read them from os.environ in your own after-restore hooks, which run after this."""
    names = [n for n in os.environ.get(SECRET_NAMES_VAR, "").split(",") if n]
    if not names:
        return []
    data = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        try:
            conn.connect(SECRETS_SOCKET)
        except OSError:  # started cold: the values are in the environment already
            return []
        while chunk := conn.recv(65536):
            data += chunk
    got = []
    for pair in data.split(b"\0"):
        name, sep, value = pair.decode().partition("=")
        if sep and name in names:
            os.environ[name] = value
            got.append(name)
    return got


def run_after_restore() -> None:
    with _lock:
        import_secrets()
        reseed()
        for fn in _after:
            fn()


COMMANDS: dict[str, Hook] = {
    "before_checkpoint": run_before_checkpoint,
    "after_restore": run_after_restore,
    "trim": trim,
}


def _serve(server: socket.socket) -> None:
    while True:
        conn, _ = server.accept()
        with conn:
            try:
                command = conn.recv(1024).decode().strip()
                COMMANDS[command]()
                conn.sendall(b"ok\n")
            except Exception:  # report to the caller, keep serving
                conn.sendall(("error: " + traceback.format_exc(limit=3)).encode())


_restored = threading.Event()


def _after_restore_worker() -> None:
    """Runs the after-restore hooks when SIGUSR2 arrives. Not in the signal handler itself: a handler runs in
    the main thread between any two bytecodes, so a hook's exception would surface in whatever the app was
    doing, and a hook taking a lock the interrupted code holds would deadlock."""
    while True:
        _restored.wait()
        _restored.clear()
        try:
            run_after_restore()
        except Exception:  # reported, never raised into the app
            sys.stderr.write("warmstart_helper: after_restore hook failed:\n" + traceback.format_exc(limit=5))
            sys.stderr.flush()


def install() -> None:
    """Listen for warmstart's triggers: the socket (before_checkpoint, after_restore) and SIGUSR2 (after_restore)."""
    global _installed
    if _installed:
        return
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(SOCKET_NAME)
    server.listen(4)
    threading.Thread(target=_serve, args=(server,), name="warmstart-helper", daemon=True).start()
    if threading.current_thread() is threading.main_thread():
        threading.Thread(target=_after_restore_worker, name="warmstart-helper-restore", daemon=True).start()
        signal.signal(RESTORE_SIGNAL, lambda signum, frame: _restored.set())
    _installed = True


def _main(argv: list[str]) -> int:
    """`python3 -m warmstart_helper before_checkpoint | after_restore | trim`: trigger the app and wait."""
    if len(argv) != 1 or argv[0] not in COMMANDS:
        print(f"usage: python3 -m warmstart_helper {' | '.join(COMMANDS)}", file=sys.stderr)
        return 2
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.connect(SOCKET_NAME)
        except OSError as exc:
            print(f"warmstart_helper: the app is not listening ({exc}): does it call warmstart_helper.install()?",
                  file=sys.stderr)
            return 3
        conn.sendall(argv[0].encode())
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    text = reply.decode(errors="replace").strip()
    if text != "ok":
        print(f"warmstart_helper: {text}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
