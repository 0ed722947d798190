"""The spec file validator: every malformed file is refused with the file, the key path and the expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from warmstart.core import specfile
from warmstart.core.spec import HookSpec, HttpCall, ProbeSpec, TrimSpec
from warmstart.errors import SpecError

GOOD = """
[apps.shop]
image = "localhost/shop:1"
command = "python3 -u app.py --port 8080"
env = { A = "1", TOKEN = "s" }
secret_env = ["TOKEN"]
ports = [8080, 9090]

[apps.shop.ready]
http = "/healthz"
port = 8080
status = "200-204"
body = "ok"
timeout = "30s"
interval = "100ms"
successes = 2

[apps.shop.warmup]
requests = ["GET /a", { method = "post", path = "/b", body = "{}", port = 9090 }]
duration = "2m"
command = ["sh", "-c", "true"]

[[apps.shop.hooks.before_checkpoint]]
http = "POST /close"
port = 8080
[[apps.shop.hooks.before_checkpoint]]
exec = "sync"
timeout = 5

[[apps.shop.hooks.after_restore]]
signal = "usr1"

[apps.shop.trim]
jvm = true

[apps.worker]
image = "localhost/worker:1"
ports = [7000]
ready = { tcp = 7000 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "warmstart.toml"
    path.write_text(text)
    return path


def test_a_full_spec_parses_into_apps_in_file_order(tmp_path: Path) -> None:
    apps = specfile.load(write(tmp_path, GOOD))
    assert list(apps) == ["shop", "worker"]
    shop = apps["shop"]
    assert shop.command == ("python3", "-u", "app.py", "--port", "8080")
    assert shop.probe == ProbeSpec(kind="http", port=8080, path="/healthz", status=(200, 204), body="ok",
                                   timeout=30, interval=0.1, successes=2)
    assert shop.warmup is not None and shop.warmup.duration == 120
    assert shop.warmup.requests == (HttpCall("GET", "/a", None, 8080), HttpCall("POST", "/b", "{}", 9090))
    assert shop.before_checkpoint[0] == HookSpec(kind="http", call=HttpCall("POST", "/close", None, 8080))
    assert shop.before_checkpoint[1] == HookSpec(kind="exec", command=("sync",), timeout=5)
    assert shop.after_restore == (HookSpec(kind="signal", signal="SIGUSR1"),)
    assert shop.trim == TrimSpec(jvm=True) and shop.secret_env == ("TOKEN",)
    assert apps["worker"].probe == ProbeSpec(kind="tcp", port=7000)


BAD = [
    ("[apps.a]\nimage = 'i'\ncolour = 'red'\n", "apps.a.colour: unknown key (expected one of:"),
    ("[apps.a]\nimage = 3\n", "apps.a.image: expected a non-empty string, got an integer (3)"),
    ("[apps.a]\nimage = 'i'\nports = [8080, 70000]\n", "apps.a.ports[1]: port 70000 is out of range (1-65535)"),
    ("[apps.a]\nimage = 'i'\nports = '8080'\n", "apps.a.ports: expected a list of port numbers, got a string"),
    ("[apps.a]\nimage = 'i'\nports = [80]\nready = { http = '/', timeout = 'soon' }\n",
     "apps.a.ready.timeout: expected a duration like \"30s\""),
    ("[apps.a]\nimage = 'i'\nports = [80]\nready = { http = '/', tcp = 80 }\n",
     "apps.a.ready: expected exactly one of http, tcp, exec, log; got ['http', 'tcp']"),
    ("[apps.a]\nimage = 'i'\nports = [80]\nready = { http = 'healthz' }\n",
     "apps.a.ready.http: expected a path starting with '/'"),
    ("[apps.a]\nimage = 'i'\nports = [80]\nready = { http = '/', status = '200-700' }\n",
     "apps.a.ready.status: status range 200-700 is not within 100-599"),
    ("[apps.a]\nimage = 'i'\nports = [80]\nready = { log = '(unclosed' }\n",
     "apps.a.ready.log: invalid regular expression"),
    ("[apps.a]\nimage = 'i'\nports = [80, 81]\nready = { http = '/' }\n",
     "apps.a.ready.port: needed: the app publishes 2 ports [80, 81], say which"),
    ("[apps.a]\nimage = 'i'\nenv = { A = 1 }\n", "apps.a.env.A: expected a string, got an integer (1)"),
    ("[apps.a]\nimage = 'i'\nsecret_env = ['B-C']\n", "apps.a.secret_env: 'B-C' is not an environment variable name"),
    ("[apps.a]\ncommand = 'x'\n", "apps.a: needs `image` (a local image) or `build`"),
    ("[apps.A]\nimage = 'i'\n", "apps.A: invalid app name"),
    ("[apps.a]\nimage = 'i'\nports = [80]\nwarmup = { requests = ['GET /'], repeat = 0 }\n",
     "apps.a.warmup.repeat: 0 is out of range (1-1000000)"),
    ("[apps.a]\nimage = 'i'\nports = [80]\nwarmup = { requests = ['FETCH /'] }\n",
     "apps.a.warmup.requests[0].method: expected one of GET"),
    ("[apps.a]\nimage = 'i'\n[[apps.a.hooks.before_checkpoint]]\nsignal = 'not a signal'\n",
     "apps.a.hooks.before_checkpoint[0].signal: expected a signal name like SIGUSR2"),
    ("[apps.a]\nimage = 'i'\n[apps.a.hooks]\nafter_restore = 'x'\n",
     "apps.a.hooks.after_restore: expected a list of hooks"),
    ("[apps.a]\nimage = 'i'\ntrim = { python = true }\n", "apps.a.trim.python: needs python_helper = true"),
    ("[apps.a]\nimage = 'i'\ntrim = { jvm = 'yes' }\n", "apps.a.trim.jvm: expected true or false, got a string"),
    ("[apps.a]\nimage = 'i'\nvolumes = ['data']\n", "apps.a.volumes[0]: expected HOST_PATH:CONTAINER_PATH"),
    ("[apps.a]\nimage = 'i'\ncommand = []\n", "apps.a.command: command is empty"),
    ("[apps.a]\nimage = 'i'\nbuild = 'nowhere'\n", "apps.a.build: "),
    ("[apps.a]\nimage = 'i'\nports = [80]\nready = { tcp = 81 }\n",
     "apps.a.ready.tcp: 81 is not one of the app's ports [80]"),
    ("[apps.a]\nimage = 'i'\nports = [80]\nready = { exec = 'true', body = 'x' }\n",
     "apps.a.ready.body: only applies to http probes"),
    ("apps = 3\n", "apps: expected a table of apps, got an integer (3)"),
    ("[other]\n", ": other: unknown key"),
    ("", "apps: no apps defined"),
    ("[apps.a\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_malformed_files_are_refused_precisely(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        specfile.load(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        specfile.load(tmp_path / "nope.toml")


def test_durations() -> None:
    r = specfile._Reader(Path("f"))
    assert [r.duration(v, "k") for v in [1, 2.5, "3s", "250ms", "2m", "1h", " 4 s "]] == [1, 2.5, 3, 0.25, 120,
                                                                                          3600, 4]
    for bad in ["", "1w", "-1s", True, 0]:
        with pytest.raises(SpecError):
            r.duration(bad, "k")


def test_uniqueness_is_a_path(tmp_path: Path) -> None:
    from warmstart.core import specfile
    from warmstart.errors import SpecError

    path = tmp_path / "warmstart.toml"
    path.write_text('[apps.a]\nimage = "i"\nports = [8080]\nuniqueness = "/id"\n')
    assert specfile.load(path)["a"].uniqueness == "/id"
    path.write_text('[apps.a]\nimage = "i"\nports = [8080]\nuniqueness = "id"\n')
    with pytest.raises(SpecError, match="apps.a.uniqueness: expected a path starting with '/'"):
        specfile.load(path)
