"""The capabilities the sandbox adds for CRIU are the ones warmstart-init takes away from the app again: one list
in Python (what the container gets), one in Go (what exec-app drops), pinned equal here; and the other values the
init and warmstart share."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from warmstart.core import sandbox
from warmstart.errors import UsageError

APP_GO = Path(__file__).resolve().parents[2] / "sandbox-init" / "app.go"


def test_the_init_drops_exactly_the_capabilities_the_sandbox_adds() -> None:
    source = APP_GO.read_text()
    block = source[source.index("var SandboxCaps"):source.index("}", source.index("var SandboxCaps"))]
    dropped = set(re.findall(r'"([A-Z_]+)": \d+', block))
    assert dropped == set(sandbox.CAP_ADD)


def test_the_keep_tcp_variable_is_the_one_the_init_reads() -> None:
    source = (APP_GO.parent / "restore.go").read_text()
    assert f'KeepTCPVar = "{sandbox.KEEP_TCP_VAR}"' in source


@pytest.mark.parametrize(("ip", "mac", "expected"), [
    ("10.88.5.7", None, ("10.88.5.7", "")),
    ("10.88.5.7", "0A:58:0a:58:05:07", ("10.88.5.7", "0a:58:0a:58:05:07")),
    ("fd00::7", "", ("fd00::7", "")),
    (None, None, None),
])
def test_a_fixed_address_is_checked_where_it_enters(ip: str | None, mac: str | None,
                                                     expected: tuple[str, str] | None) -> None:
    assert sandbox.network_address(ip, mac) == expected


@pytest.mark.parametrize(("ip", "mac", "why"), [
    ("10.88.5", None, "not an IP address"),
    ("127.0.0.1", None, "not an address a container can take"),
    ("0.0.0.0", None, "not an address a container can take"),
    ("10.88.5.7", "01:00:5e:00:00:01", "not a unicast MAC"),  # multicast bit
    ("10.88.5.7", "0a:58:0a:58:05", "not a unicast MAC"),
    ("10.88.5.7", "0a:58:0a:58:05:07;rm", "not a unicast MAC"),
    (None, "0a:58:0a:58:05:07", "needs --ip"),
])
def test_a_bad_fixed_address_is_refused_in_one_line(ip: str | None, mac: str | None, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        sandbox.network_address(ip, mac)
