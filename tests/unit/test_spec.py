from __future__ import annotations

import pytest

from warmstart.core.spec import (
    AppSpec,
    PortBinding,
    ProbeSpec,
    make_probe,
    parse_container_port,
    parse_env,
    parse_port_binding,
    validate_app_name,
)
from warmstart.errors import UsageError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080:80", PortBinding(80, "tcp", 8080, "0.0.0.0")),
        ("127.0.0.1:8080:80", PortBinding(80, "tcp", 8080, "127.0.0.1")),
        ("127.0.0.1::80", PortBinding(80, "tcp", 0, "127.0.0.1")),
        ("8080:80/udp", PortBinding(80, "udp", 8080, "0.0.0.0")),
    ],
)
def test_port_bindings_parse_like_podman(text: str, expected: PortBinding) -> None:
    assert parse_port_binding(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8080", "expected HOST_PORT:CONTAINER_PORT"),
        ("a:80", "host port 'a' is not a port number"),
        ("80:0", "container port '0' is not a port number"),
        ("80:70000", "container port '70000'"),
        ("1:2:3:4", "expected HOST_PORT:CONTAINER_PORT"),
        ("80:80/sctp", "protocol must be tcp or udp"),
    ],
)
def test_bad_port_bindings_are_rejected_precisely(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_port_binding(text)


def test_container_port_accepts_tcp_only() -> None:
    assert parse_container_port("8080/tcp") == 8080
    with pytest.raises(UsageError, match="only tcp"):
        parse_container_port("53/udp")


def test_env_parsing() -> None:
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(UsageError, match="expected NAME=VALUE"):
        parse_env(["NOVALUE"])
    with pytest.raises(UsageError, match="expected NAME=VALUE"):
        parse_env(["1BAD=x"])


def test_app_names() -> None:
    assert validate_app_name("my-app.v2") == "my-app.v2"
    for bad in ["", "Upper", "-lead", "a b", "x" * 64]:
        with pytest.raises(UsageError, match="invalid app name"):
            validate_app_name(bad)


def test_probe_defaults_to_the_only_port_and_validates() -> None:
    assert make_probe(ready_http="/h", ready_tcp=None, ports=[80], ready_port=None, timeout=5) == ProbeSpec(
        kind="http", port=80, path="/h", timeout=5
    )
    assert make_probe(ready_http=None, ready_tcp=None, ports=[80], ready_port=None, timeout=5) is None
    with pytest.raises(UsageError, match="needs --ready-port"):
        make_probe(ready_http="/h", ready_tcp=None, ports=[80, 81], ready_port=None, timeout=5)
    with pytest.raises(UsageError, match="not both"):
        make_probe(ready_http="/h", ready_tcp=80, ports=[80], ready_port=None, timeout=5)
    with pytest.raises(UsageError, match="not one of the published ports"):
        make_probe(ready_http=None, ready_tcp=81, ports=[80], ready_port=None, timeout=5)
    with pytest.raises(UsageError, match="greater than 0"):
        make_probe(ready_http="/h", ready_tcp=None, ports=[80], ready_port=None, timeout=0)


def test_app_spec_round_trips() -> None:
    spec = AppSpec(name="a", image="i", command=("x",), env={"K": "v"}, ports=(1,),
                   probe=ProbeSpec(kind="tcp", port=1))
    assert AppSpec.from_dict(spec.to_dict()) == spec
