"""What real services do that a checkpoint must carry, each with a small app of ours that has exactly that
property (tests/apps/props.py), built, restored and compared with a cold start on real podman and CRIU: a non-root
user on a host whose root lacks CAP_SYS_RESOURCE, file locks, a helper daemon its start script detached, the
kernel objects beside memory (eventfd, timerfd, inotify, POSIX/SysV shared memory, deleted-but-open files, unix
sockets, many threads), the process attributes of a cold start (umask, groups, rlimits, environment, cwd, fds),
and io_uring answered with ENOSYS, as under the engine's default seccomp profile."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BASE_IMAGE, Cli, containers_of
from tests.helpers import http_json
from warmstart.core import sandbox

pytestmark = pytest.mark.podman

APPS = Path(__file__).resolve().parents[1] / "apps"
DAEMON_THEN_SERVE = ["sh", "-c", "python3 /app/props.py --daemonize && exec python3 /app/props.py"]


def _image(tmp: Path, tag: str, user: str | None) -> str:
    (tmp / "props.py").write_text((APPS / "props.py").read_text())
    (tmp / "Containerfile").write_text(
        f"FROM {BASE_IMAGE}\nCOPY props.py /app/props.py\nWORKDIR /app\n" + (f"USER {user}\n" if user else "")
        + 'CMD ["python3", "/app/props.py"]\n')
    subprocess.run(["podman", "build", "-q", "--pull=never", "--label", "io.warmstart.test=props", "-t", tag,
                    str(tmp)], check=True, capture_output=True)
    return tag


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The test app's image as root and with `USER 65534` (nobody, as most production images run)."""
    suffix = uuid.uuid4().hex[:8]
    made = {"root": _image(tmp_path_factory.mktemp("root"), f"localhost/warmstart-test-props:{suffix}", None),
            "nobody": _image(tmp_path_factory.mktemp("nobody"), f"localhost/warmstart-test-props-nobody:{suffix}",
                             "65534:65534")}
    yield made
    subprocess.run(["podman", "rmi", "-f", *made.values()], capture_output=True)


def _build(cli: Cli, app: str, image: str, *env: str, command: list[str] | None = None) -> dict:
    args = ["build", "--name", app, "--image", image, "-p", "8080", "--ready-http", "/healthz", "--json",
            "-e", "BOOT_SECONDS=1"]  # boot work: a restore wins, so `run` restores
    for item in env:
        args += ["-e", item]
    res = cli(*args, *(["--", *command] if command else []), env={"WARMSTART_TRIALS": "1"})
    assert res.returncode == 0, res.stderr
    return res.json


def _start(cli: Cli, app: str, *extra: str) -> tuple[str, dict]:
    """Run an instance (restored unless --cold); its name and GET /state."""
    res = cli("run", app, "--json", *extra)
    assert res.returncode == 0, res.stderr
    want = "cold" if "--cold" in extra else "restored"
    assert res.json["mode"] == want, res.json.get("reason")
    return res.json["name"], http_json(res.json["ports"]["8080/tcp"], "/state")


def _stop(cli: Cli, *names: str) -> None:
    for name in names:
        assert cli("stop", name).returncode == 0


def test_a_non_root_app_is_checkpointed_and_restored_as_its_user(cli: Cli, owned_app: str,
                                                                 images: dict[str, str]) -> None:
    _build(cli, owned_app, images["nobody"])
    name, state = _start(cli, owned_app)
    again, other = _start(cli, owned_app)
    assert state["boot_token"] == other["boot_token"]  # both restored from the one snapshot
    assert (state["uid"], state["euid"], state["gid"]) == (65534, 65534, 65534)
    # Every sandbox container of the app has the hostname its process booted with (a RabbitMQ node's name).
    assert state["hostname"] == other["hostname"] == state["boot_hostname"] == sandbox.hostname_for(owned_app)
    _stop(cli, name, again)
    assert containers_of(owned_app) == []


def test_file_locks_are_dumped_restored_and_recorded(cli: Cli, owned_app: str, images: dict[str, str]) -> None:
    _build(cli, owned_app, images["root"], "LOCKS=1")
    inspected = cli("cache", "inspect", owned_app, "--json").json
    assert inspected["holds"]["file_locks"] == 2, inspected
    first, a = _start(cli, owned_app)
    second, b = _start(cli, owned_app)  # two clones: each holds its own locks in its own container
    assert a["locks"] == b["locks"] == ["FLOCK", "POSIX"]
    assert a["boot_token"] == b["boot_token"]
    _stop(cli, first, second)


def test_a_helper_daemon_detached_by_the_start_script_is_part_of_the_snapshot(
        cli: Cli, owned_app: str, images: dict[str, str]) -> None:
    _build(cli, owned_app, images["root"], command=DAEMON_THEN_SERVE)
    inspected = cli("cache", "inspect", owned_app, "--json").json
    assert inspected["holds"]["processes"] == 2, inspected
    cold, c = _start(cli, owned_app, "--cold")
    name, r = _start(cli, owned_app)
    assert c["helper"]["ppid"] == c["pid"]  # a plain container: reparented to the app, its PID 1
    assert "error" not in r["helper"]
    # Restored: CRIU re-creates the helper's exited session leader as a short-lived helper task, whose exit
    # reparents the helper to the namespace's init before CRIU restores the app's subreaper flag (documented).
    assert r["helper"]["ppid"] in (r["pid"], 1)
    restored_again, r2 = _start(cli, owned_app)
    assert r2["helper"]["token"] == r["helper"]["token"]  # the helper itself was restored, not started again
    _stop(cli, cold, name, restored_again)


def test_kernel_objects_beside_memory_survive_the_restore(cli: Cli, owned_app: str, images: dict[str, str]) -> None:
    _build(cli, owned_app, images["nobody"], "KINDS=1", "LOCKS=1", command=DAEMON_THEN_SERVE)
    name, state = _start(cli, owned_app)
    token = state["boot_token"]
    assert state["kinds"] == {"eventfd": 5, "timerfd_fires": True, "inotify_sees_create": True, "posix_shm": token,
                              "sysv_shm": token, "deleted_file": token, "socketpair": "ping",
                              "threads": state["kinds"]["threads"]}
    assert state["kinds"]["threads"] >= 61
    assert state["uid"] == 65534 and state["locks"] == ["FLOCK", "POSIX"] and "error" not in state["helper"]
    _stop(cli, name)


@pytest.mark.parametrize("variant", ["root", "nobody"])
def test_the_app_sees_the_process_attributes_of_a_cold_start(cli: Cli, owned_app: str, images: dict[str, str],
                                                              variant: str) -> None:
    _build(cli, owned_app, images[variant], "GREETING=hello")
    cold, c = _start(cli, owned_app, "--cold")
    name, r = _start(cli, owned_app)
    keys = ["caps", "uid", "euid", "gid", "groups", "umask", "cwd", "rlimits", "env", "fds_at_start"]
    for state in (c, r):  # each container has its own pipes: compare what each fd is, not its inode
        state["fds_at_start"] = {fd: re.sub(r"\[\d+\]$", "", target) for fd, target in state["fds_at_start"].items()}
    assert {k: r[k] for k in keys} == {k: c[k] for k in keys}
    assert c["umask"] == "0o22" and c["cwd"] == "/app" and c["env"]["GREETING"] == "hello"
    _stop(cli, cold, name)


def test_io_uring_is_answered_as_the_engines_default_profile_does_and_the_service_falls_back(
        cli: Cli, owned_app: str, images: dict[str, str]) -> None:
    # podman's default seccomp profile answers io_uring_setup with ENOSYS; the sandbox (unconfined, for CRIU)
    # gives the app the same answer, so a service that would hold a ring CRIU cannot dump uses plain I/O instead.
    _build(cli, owned_app, images["root"], "IO_URING=1")
    cold, c = _start(cli, owned_app, "--cold")
    name, r = _start(cli, owned_app)
    assert c["io_uring"] == r["io_uring"] == "ENOSYS"
    _stop(cli, cold, name)


def test_a_connection_the_tree_keeps_to_itself_on_loopback_survives_the_restore(
        cli: Cli, owned_app: str, images: dict[str, str]) -> None:
    """A TCP connection with both ends in the app's tree (an Erlang node and its epmd: RabbitMQ's CLI finds the
    node through it) is restored as it was; connections with peers outside are still closed."""
    _build(cli, owned_app, images["root"], "LOOPBACK=1")
    assert cli("cache", "inspect", owned_app, "--json").returncode == 0
    name, state = _start(cli, owned_app)
    assert state["loopback"] == "ping"
    again, state2 = _start(cli, owned_app)
    assert state2["loopback"] == "ping" and state2["boot_token"] == state["boot_token"]
    _stop(cli, name, again)
