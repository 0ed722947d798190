"""Instance verbs as docker and podman users know them, against real podman: logs, exec, ps -q, stop -t."""

from __future__ import annotations

import pytest

from tests.conftest import Cli, containers_of
from tests.helpers import build

pytestmark = pytest.mark.podman


def test_logs_exec_ps_and_a_graceful_stop(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app)
    name = cli("run", owned_app, "--json").json["name"]
    assert cli("ps", "-q", "--app", owned_app).stdout.split() == [name]

    logs = cli("logs", name)
    assert logs.returncode == 0 and "warmstart-init: restored pid" in logs.stdout + logs.stderr
    assert "counter listening" not in logs.stdout + logs.stderr  # the build's boot line is not this instance's

    ran = cli("exec", name, "--", "sh", "-c", "echo from inside; exit 3")
    assert ran.returncode == 3 and ran.stdout.strip() == "from inside"

    for verb in (["logs", "not-ours"], ["exec", "not-ours", "--", "true"], ["stop", "-t", "5", "not-ours"]):
        refused = cli(*verb)
        assert refused.returncode == 2 and "not a warmstart instance: not-ours" in refused.stderr

    # -t: SIGTERM first; the init forwards it to the restored app, which ends by it (128 + 15), not by a kill.
    stopped = cli("stop", "-t", "10", name, "--json").json
    assert stopped == {"stopped": [name], "exit_codes": {name: 143}}
    assert containers_of(owned_app) == []


def test_stop_at_once_by_default(cli: Cli, owned_app: str) -> None:
    build(cli, owned_app)
    name = cli("run", owned_app, "--json").json["name"]
    assert cli("stop", name, "--json").json == {"stopped": [name], "exit_codes": {name: None}}
    assert containers_of(owned_app) == []
    assert cli("stop", "-t", "-1", "--all").returncode == 2
