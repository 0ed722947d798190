"""A test service with exactly the process properties that real services have and that each need something of a
checkpoint: it reports them on GET /state, so a test compares a cold start, the build and a restore.

BOOT_SECONDS (default 0) of boot work before it serves, so that a restore wins and `run` restores.
Always: GET /healthz (ready), GET / (a boot token and a counter, proof of a restore), GET /state: the process's
attributes (uid, gids, capabilities, umask, cwd, rlimits, environment, the fds it was started with) as the image
gives them.
LOCKS=1      holds an flock(2) lock and a POSIX (fcntl) record lock on files under /tmp, as embedded databases do.
KINDS=1      holds what CRIU must dump besides memory: eventfd, timerfd, inotify, POSIX and SysV shared memory,
             a deleted-but-open file, a unix socket pair, and 60 extra threads.
IO_URING=1   sets up an io_uring instance where the kernel lets it (what CRIU cannot dump), and falls back to plain
             I/O on ENOSYS, as MariaDB, Tokio and libuv do; /state says which ("fd N" or the errno's name).
LOOPBACK=1   keeps a TCP connection open to a server of its own on 127.0.0.1 (as an Erlang node does to its epmd,
             or a worker to its local broker); /state says whether it still carries an echo.
`props.py --daemonize` starts the helper daemon (a unix-socket echo server that detaches with a double fork and
setsid, as `-daemon` helpers do) and returns; the service then reports whether its helper answers.
"""

import ctypes
import errno
import fcntl
import json
import mmap
import os
import resource
import secrets
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HELPER_SOCKET = "/tmp/props-helper.sock"
FDS_AT_START = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in map(int, os.listdir("/proc/self/fd"))
                if os.path.exists(f"/proc/self/fd/{fd}")}
BOOT_TOKEN = secrets.token_hex(8)
BOOT_HOSTNAME = socket.gethostname()  # what a service derives from its host name at boot (a node name, a log file)
STATE = {"count": 0}
libc = ctypes.CDLL(None, use_errno=True)


def daemonize() -> None:
    if os.fork():
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    token = secrets.token_hex(8)
    server = socket.socket(socket.AF_UNIX)
    if os.path.exists(HELPER_SOCKET):
        os.unlink(HELPER_SOCKET)
    server.bind(HELPER_SOCKET)
    server.listen(8)
    while True:
        conn, _ = server.accept()
        conn.sendall(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "token": token}).encode())
        conn.close()


def helper() -> dict:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(HELPER_SOCKET)
            return json.loads(s.recv(4096))
    except OSError as exc:
        return {"error": str(exc)}


def attributes() -> dict:
    mask = os.umask(0)
    os.umask(mask)
    limits = {name: resource.getrlimit(getattr(resource, name)) for name in dir(resource) if name.startswith("RLIMIT_")}
    env = {k: v for k, v in os.environ.items() if k != "HOSTNAME"}  # the container's id: differs per container
    with open("/proc/self/status") as f:
        caps = {k: v.strip() for k, _, v in (line.partition(":") for line in f) if k.startswith("Cap")}
    return {"caps": caps, "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
            "groups": sorted(os.getgroups()), "umask": oct(mask), "cwd": os.getcwd(), "rlimits": limits, "env": env,
            "fds_at_start": FDS_AT_START}


class Kinds:
    """Everything of KINDS=1, made at boot and checked on every /state."""

    def __init__(self) -> None:
        self.efd = os.eventfd(5, os.EFD_NONBLOCK)
        self.tfd = libc.timerfd_create(1, os.O_NONBLOCK)  # CLOCK_MONOTONIC
        spec = (ctypes.c_long * 4)(0, 10_000_000, 0, 10_000_000)  # every 10 ms
        assert libc.timerfd_settime(self.tfd, 0, spec, None) == 0
        self.watched = f"/tmp/props-watched-{os.getpid()}"
        os.makedirs(self.watched, exist_ok=True)
        self.ifd = libc.inotify_init1(os.O_NONBLOCK)
        assert libc.inotify_add_watch(self.ifd, self.watched.encode(), 0x100) >= 0  # IN_CREATE
        self.posix_fd = os.open("/dev/shm/props-posix", os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self.posix_fd, 4096)
        self.posix = mmap.mmap(self.posix_fd, 4096)
        self.posix[:16] = BOOT_TOKEN.encode()
        libc.shmat.restype = ctypes.c_void_p
        self.shmid = libc.shmget(0, 4096, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
        self.sysv = libc.shmat(self.shmid, None, 0)
        ctypes.memmove(self.sysv, BOOT_TOKEN.encode(), 16)
        self.deleted = os.open("/tmp/props-deleted", os.O_RDWR | os.O_CREAT, 0o600)
        os.write(self.deleted, BOOT_TOKEN.encode())
        os.unlink("/tmp/props-deleted")
        self.pair = socket.socketpair()
        self.stop = threading.Event()
        for _ in range(60):
            threading.Thread(target=self.stop.wait, daemon=True).start()

    def check(self) -> dict:
        value = os.eventfd_read(self.efd)
        os.eventfd_write(self.efd, value)
        time.sleep(0.03)
        ticks = ctypes.c_uint64(0)
        fired = libc.read(self.tfd, ctypes.byref(ticks), 8) == 8 and ticks.value > 0
        os.close(os.open(f"{self.watched}/{secrets.token_hex(4)}", os.O_CREAT | os.O_WRONLY, 0o600))
        time.sleep(0.01)
        try:
            inotify = len(os.read(self.ifd, 4096)) > 0
        except BlockingIOError:
            inotify = False
        self.pair[0].sendall(b"ping")
        return {"eventfd": value, "timerfd_fires": fired, "inotify_sees_create": inotify,
                "posix_shm": bytes(self.posix[:16]).decode(), "sysv_shm": ctypes.string_at(self.sysv, 16).decode(),
                "deleted_file": os.pread(self.deleted, 16, 0).decode(), "socketpair": self.pair[1].recv(4).decode(),
                "threads": threading.active_count()}


def locks() -> dict:
    lock_path, record_path = "/tmp/props-flock", "/tmp/props-record"
    flock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(flock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    record_fd = os.open(record_path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(record_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return {"flock": flock_fd, "record": record_fd}


def held_locks() -> list[str]:
    """The kinds of this process's entries in /proc/locks ("FLOCK", "POSIX")."""
    with open("/proc/locks") as f:
        return sorted(line.split()[1] for line in f if len(line.split()) > 4 and line.split()[4] == str(os.getpid()))


class Loopback:
    """LOOPBACK=1: an echo server on 127.0.0.1 and one connection to it, opened at boot and kept."""

    def __init__(self) -> None:
        server = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._serve, args=(server,), daemon=True).start()
        self.conn = socket.create_connection(server.getsockname(), timeout=2)

    @staticmethod
    def _serve(server: socket.socket) -> None:
        conn, _ = server.accept()
        while data := conn.recv(64):
            conn.sendall(data)

    def check(self) -> str:
        try:
            self.conn.sendall(b"ping")
            return self.conn.recv(64).decode()
        except OSError as exc:
            return f"error: {exc}"


def io_uring() -> str:
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(425, 8, params)  # io_uring_setup(8 entries)
    if fd < 0:
        return errno.errorcode.get(ctypes.get_errno(), "unknown")
    return f"fd {fd}"


def main() -> None:
    if sys.argv[1:] == ["--daemonize"]:
        daemonize()
        return
    kinds = Kinds() if os.environ.get("KINDS") == "1" else None
    if os.environ.get("LOCKS") == "1":
        locks()
    ring = io_uring() if os.environ.get("IO_URING") == "1" else None
    loop = Loopback() if os.environ.get("LOOPBACK") == "1" else None
    time.sleep(float(os.environ.get("BOOT_SECONDS", "0")))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            STATE["count"] += 1
            if self.path == "/healthz":
                body: dict = {"ok": True}
            elif self.path == "/state":
                body = {"boot_token": BOOT_TOKEN, "pid": os.getpid(), **attributes(),
                        "boot_hostname": BOOT_HOSTNAME, "hostname": socket.gethostname(), "locks": held_locks(),
                        "helper": helper() if os.path.exists(HELPER_SOCKET) else None,
                        "kinds": kinds.check() if kinds else None, "io_uring": ring,
                        "loopback": loop.check() if loop else None}
            else:
                body = {"boot_token": BOOT_TOKEN, "count": STATE["count"], "pid": os.getpid()}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()


if __name__ == "__main__":
    main()
