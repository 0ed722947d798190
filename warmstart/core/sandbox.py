"""The sandbox restore path: the app runs under warmstart-init (sandbox-init/, a static Go binary) as PID 1 of its
own container, with the host's CRIU prefix and the init bind-mounted read-only, so app images need nothing of ours.

    build:  container CMD = init boot -- APP...;  then `exec init dump --out OUT` (CRIU dump from inside, plus the
            files the app created and its stdio pipe ids) into the snapshot's staging dir, mounted at OUT
    run:    a fresh container of the app's image, CMD = init restore --snapshot SNAP, the snapshot dir mounted
            read-only at SNAP: the container is up (network, ports) before CRIU runs, so a client connecting
            meanwhile is refused at once instead of having its SYN dropped; the init then forwards signals, reaps
            and exits with the app's status

Why this is the default rather than `podman container restore --import`: nothing is untarred or re-read per launch
(the cache keeps the CRIU image dir as it is), one mechanism serves podman and docker, and it works the same for
any image. The whole-container path stays as mode "container" (it moves a container's filesystem too).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from warmstart.core import criu
from warmstart.errors import UsageError

SANDBOX, CONTAINER = "sandbox", "container"
MODES = (SANDBOX, CONTAINER)
MODE_VAR = "WARMSTART_MODE"  # build's default mode, when --mode is not given

INIT = Path(os.environ.get("WARMSTART_INIT", "/opt/warmstart/bin/warmstart-init"))
CRIU_PREFIX = Path(os.environ.get("WARMSTART_CRIU_PREFIX", "/opt/warmstart/criu"))
# The JVM helper's jar (core/jvmhelper.py), mounted like the init when this host has it: a restored JVM has it open.
JVM_HELPER_DIR = Path(os.environ.get("WARMSTART_JVM_HELPER_DIR", "/opt/warmstart/jvm"))
JVM_HELPER_JAR = JVM_HELPER_DIR / "warmstart-crac.jar"
HOLDS_KEYS = ("processes", "file_locks")  # what the init counts in META_FILE before a dump (the manifest's `holds`)
OUT_MOUNT = "/.warmstart/out"  # build: where the init's dump writes (the staging dir)
SNAPSHOT_MOUNT = "/.warmstart/snapshot"  # run: the snapshot dir, read-only
CTL_MOUNT = "/.warmstart/ctl"  # a pre-started sandbox: a private dir of the cache holding the trigger FIFO
TRIGGER = "go"  # the FIFO's name in CTL_MOUNT: one byte written there starts the restore

# A sandbox's secret values reach its init by a channel the engine does not record (never its environment, which
# `podman inspect` shows and the engine stores): the fd named by this variable (sandbox-init/main.go SecretsFdVar)
# holds NAME=VALUE pairs, each ended by a NUL byte, and one more NUL byte after the last (secrets_payload).
SECRETS_FD_VAR = "WARMSTART_SECRETS_FD"


def secrets_payload(secrets: Mapping[str, str]) -> bytes:
    """The bytes an engine hands to the init for `secrets` (a name or value with a NUL byte cannot be an
    environment variable, and is refused where the value enters)."""
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in secrets.items()) + b"\0"


# Files of a sandbox snapshot, as sandbox-init/main.go names them (MetaFile, RootfsFile, ImagesDir, DumpLog).
META_FILE = "sandbox.json"
ROOTFS_FILE = "rootfs.tar"
IMAGES_DIR = "images"
DUMP_LOG = criu.DUMP_LOG  # what our init's `criu dump -o` writes into the staging dir

# The smallest privilege set shown to work for CRIU inside a container here (podman 4.3 / docker 20.10, runc,
# Linux 6.18): without SYS_PTRACE or with the default seccomp profile the dump fails; without NET_ADMIN the
# restore cannot recreate sockets' state; without SYS_TIME it cannot set the time namespace's offsets; without
# IPC_OWNER it cannot read a non-root app's SysV shared memory. The app itself never holds them: warmstart-init
# drops them before it execs the app (sandbox-init/app.go SandboxCaps, pinned to this list by a unit test).
CAP_ADD = ("SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN", "SYS_TIME", "IPC_OWNER")
SECURITY_OPT = ("seccomp=unconfined",)

# What a restoring init logs once the app runs again (main.go restore): a log readiness probe waits for it after a
# restore, since the app's own ready line was printed before the checkpoint and is not printed again.
RESTORED_LINE = r"^warmstart-init: restored pid \d+"

# warmstart-init's exit codes (sandbox-init/main.go), as the launcher explains them.
EXIT_CODES = {
    120: "warmstart-init was called wrongly",
    121: "CRIU could not restore the snapshot in the new container",
    122: "a PID the snapshot needs is already in use in the new container",
    123: "the app could not be started under warmstart-init",
    124: "the dump failed",
    125: "the JVM app's CRaC afterRestore failed (see the container log)",
    126: "CRIU's page daemon died before the lazily restored app's memory was whole (the app was stopped)",
}


@dataclass(frozen=True)
class RunExtras:
    """What a sandbox container needs beyond a plain `run`: our init as entrypoint, root (CRIU), privileges, and
    the app's fixed hostname."""

    hostname: str
    entrypoint: str = str(INIT)
    user: str = "0:0"
    cap_add: tuple[str, ...] = CAP_ADD
    security_opt: tuple[str, ...] = SECURITY_OPT
    network: str = ""  # "none": loopback only (a debug instance); "" the engine's default network
    ip: str = ""  # a fixed address on that network (`run --ip`): a migration that keeps its TCP connections
    mac: str = ""

    @classmethod
    def for_app(cls, app: str) -> RunExtras:
        return cls(hostname=hostname_for(app))


# Set on a restore at the instance's old address (`run --ip`, `migrate --keep-address`): the init restores the
# app's established TCP connections (CRIU --tcp-established, sandbox-init/restore.go) instead of closing them.
KEEP_TCP_VAR = "WARMSTART_KEEP_TCP"
_MAC_RE = re.compile(r"^[0-9a-f][02468ace](?::[0-9a-f]{2}){5}$")  # unicast


def network_address(ip: str | None, mac: str | None) -> tuple[str, str] | None:
    """`run --ip ADDRESS [--mac-address MAC]`, checked where it enters: None when neither is given."""
    import ipaddress

    if not ip:
        if mac:
            raise UsageError("--mac-address needs --ip (the address the connections were made to)")
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise UsageError(f"--ip {ip[:60]!r} is not an IP address") from None
    if address.is_loopback or address.is_multicast or address.is_unspecified:
        raise UsageError(f"--ip {ip}: not an address a container can take")
    if mac and not _MAC_RE.match(mac.lower()):
        raise UsageError(f"--mac-address {mac[:40]!r} is not a unicast MAC address (xx:xx:xx:xx:xx:xx)")
    return str(address), (mac or "").lower()


def hostname_for(app: str) -> str:
    """The hostname of every sandbox container of `app`: its build, trials and restored instances. A process
    keeps the hostname it booted with in memory (an Erlang node is rabbit@HOST, a JVM caches its InetAddress, a
    database writes it to its logs and lock files), and the engine gives each container its own (its ID), so a
    restore into a container named otherwise breaks what the app derived from it: RabbitMQ's CLI, for one,
    reaches rabbit@NEWHOST and is refused. A cold start may have any."""
    label = re.sub(r"[^a-z0-9-]+", "-", app.lower()).strip("-")
    return f"ws-{label}"[:63].rstrip("-")


def missing() -> str:
    """Why this host cannot use the sandbox path ("" when it can)."""
    if not os.access(INIT, os.X_OK):
        return f"{INIT} is missing (scripts/setup-host builds it)"
    if not os.access(CRIU_PREFIX / "bin" / "criu", os.X_OK):
        return f"no self-contained CRIU prefix at {CRIU_PREFIX} (scripts/setup-host installs one)"
    return ""


def tool_mounts() -> list[str]:
    """The init, the CRIU prefix and the JVM helper's dir, read-only at the same paths as on the host (CRIU's
    interpreter path is absolute)."""
    helper = [f"{JVM_HELPER_DIR}:{JVM_HELPER_DIR}:ro"] if JVM_HELPER_JAR.is_file() else []
    return [f"{INIT}:{INIT}:ro", f"{CRIU_PREFIX}:{CRIU_PREFIX}:ro", *helper]


def boot_command(app_command: list[str], *, user: str = "") -> list[str]:
    """The init's arguments for a cold boot under it; `user` is the image's USER, which the app is started as
    (the init itself runs as root, since CRIU needs it)."""
    return ["boot", *(["--user", user] if user and user not in ("0", "root", "0:0") else []), "--", *app_command]


def dump_command(out: str = OUT_MOUNT) -> list[str]:
    return [str(INIT), "dump", "--out", out]


def restore_command(*, wait: bool = False) -> list[str]:
    """The init's arguments to restore; with `wait`, it prepares everything, then waits for the trigger."""
    return ["restore", "--snapshot", SNAPSHOT_MOUNT, *(["--wait", f"{CTL_MOUNT}/{TRIGGER}"] if wait else [])]


def explain_exit(code: int) -> str:
    return EXIT_CODES.get(code, "")


def holds(snapshot_dir: Path) -> dict[str, int]:
    """The counts the init recorded in sandbox.json before the dump (the manifest's `holds`); {} when absent
    (container mode, or an init from before the counts)."""
    try:
        meta = json.loads((snapshot_dir / META_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict):
        return {}
    return {k: v for k in HOLDS_KEYS if isinstance(v := meta.get(k), int) and not isinstance(v, bool) and v >= 0}
