"""Labels and names warmstart stamps on everything it creates, so `ps`, `stop`, prune and test clean-up can
find exactly what is ours and nothing else (the testcontainers `labels.py` idea)."""

from __future__ import annotations

import os
import re

PREFIX = "io.warmstart"
MANAGED = f"{PREFIX}.managed"  # "true" on every container warmstart creates
APP = f"{PREFIX}.app"  # the app name
BUILD_PID = f"{PREFIX}.build-pid"  # on build containers: the warmstart process that owns it (orphans are swept)
OWNER_PID = f"{PREFIX}.owner-pid"  # on what a serve starts (instances, pool): that serve process (orphans are swept)
TRIGGER = f"{PREFIX}.trigger"  # on pre-started sandboxes: the host path of the trigger FIFO (gone once activated)
MODE = f"{PREFIX}.mode"  # "restored" on instances started from a snapshot (their engine may not record it)
INIT = f"{PREFIX}.init"  # "warmstart-init" on sandbox containers: their exit codes 120-124 are the init's
CACHE = f"{PREFIX}.cache"  # the cache dir an instance was launched from: `ps` shows this cache's instances
SNAPSHOT = f"{PREFIX}.snapshot"  # APP:TAG on sandbox instances: the snapshot they were restored from
SESSION = f"{PREFIX}.session"  # $WARMSTART_SESSION when set: lets a test run or CI job remove its own leftovers

BUILD_PREFIX = "wsb-"  # build containers; restored instances inherit the build's labels, so names tell them apart
INSTANCE_PREFIX = "ws-"
INSTANCE = f"{PREFIX}.instance"  # "true" on sandbox and cold instances (named or not); restored whole containers
#                                   keep their build's labels, so those are known by the INSTANCE_PREFIX of their name


def labels_for(app: str) -> dict[str, str]:
    labels = {MANAGED: "true", APP: app}
    session = os.environ.get("WARMSTART_SESSION")
    if session:
        labels[SESSION] = session
    return labels


def build_name(app: str) -> str:
    return f"{BUILD_PREFIX}{app}-{os.urandom(4).hex()}"


def instance_name(app: str) -> str:
    return f"{INSTANCE_PREFIX}{app}-{os.urandom(4).hex()}"


def pid_alive(pid: int) -> bool:
    """Whether the process that owns something we made (BUILD_PID, OWNER_PID, a staging dir's name) still runs:
    only what a dead owner left behind is swept."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # what docker and podman accept as a container name


def validate_instance_name(name: str) -> str:
    """A `run --name`: a container name the engines accept that is not one of our build containers'."""
    from warmstart.errors import UsageError

    if not NAME_RE.match(name) or name.startswith(BUILD_PREFIX):
        raise UsageError(f"invalid instance name {name[:80]!r}: letters, digits, '_', '.', '-' (up to 128), not "
                         f"starting with {BUILD_PREFIX!r}")
    return name


def user_labels(pairs: list[str]) -> dict[str, str]:
    """`run --label KEY=VALUE` pairs; our own io.warmstart.* keys cannot be set or overridden."""
    from warmstart.errors import UsageError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or "\n" in pair:
            raise UsageError(f"invalid --label {pair[:80]!r}: expected KEY=VALUE")
        if key.startswith(PREFIX + "."):
            raise UsageError(f"--label {key}: the {PREFIX}.* labels are warmstart's own")
        out[key] = value
    return out
