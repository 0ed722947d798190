"""The JVM helper against real podman/CRIU and a JVM image without Python: an app that registers a jdk.crac
resource by reflection (as frameworks do) sees one beforeCheckpoint before the build's snapshot and one
afterRestore per restored instance; a throwing beforeCheckpoint fails the build naming the resource; the JVM's
once-taken seeds are renewed per clone (the uniqueness gate passes with the helper, fails without); with the helper
off nothing is called and the snapshot still restores."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import Cli, containers_of
from tests.helpers import http_json

pytestmark = pytest.mark.podman
IMAGE = "localhost/warmstart-example-jvm-resource:latest"


def _spec(tmp_path: Path, app: str, extra: str = "") -> Path:
    spec = tmp_path / "warmstart.toml"
    spec.write_text(f'[apps.{app}]\nimage = "{IMAGE}"\nports = [8080]\nready = {{ http = "/healthz" }}\n'
                    f'always_restore = true\n{extra}')
    return spec


def test_crac_resources_are_called_around_the_snapshot_and_each_restore(
    tmp_path: Path, cli: Cli, owned_app: str
) -> None:
    spec = _spec(tmp_path, owned_app, 'uniqueness = "/random"\n')
    built = cli("build", "--name", owned_app, "-f", str(spec), "--json")
    assert built.returncode == 0, built.stderr  # the uniqueness gate passed: two clones drew different numbers
    assert built.json["hooks"][-1] == "exec /opt/warmstart/bin/warmstart-init crac beforeCheckpoint"

    first = cli("run", owned_app, "-f", str(spec), "--json")
    second = cli("run", owned_app, "-f", str(spec), "--json")
    for launched in (first, second):
        assert launched.returncode == 0, launched.stderr
        assert launched.json["mode"] == "restored", launched.json.get("reason")
        # One beforeCheckpoint before the snapshot (both clones inherit it), one afterRestore in each clone.
        assert http_json(launched.json["ports"]["8080/tcp"], "/crac") == {"available": True, "before": 1, "after": 1}
    a = http_json(first.json["ports"]["8080/tcp"], "/random")
    b = http_json(second.json["ports"]["8080/tcp"], "/random")
    assert a["tlr"] != b["tlr"] and a["math"] != b["math"]
    for launched in (first, second):
        assert cli("stop", launched.json["name"]).returncode == 0
    assert containers_of(owned_app) == []


def test_a_throwing_before_checkpoint_fails_the_build_naming_the_resource(
    tmp_path: Path, cli: Cli, owned_app: str
) -> None:
    spec = _spec(tmp_path, owned_app, 'env = { THROW_BEFORE = "1" }\n')
    res = cli("build", "--name", owned_app, "-f", str(spec))
    assert res.returncode == 1
    assert "before_checkpoint hook #1 (exec /opt/warmstart/bin/warmstart-init crac beforeCheckpoint) exited with 1" \
        in res.stderr
    assert "App.beforeCheckpoint: java.lang.IllegalStateException: connection pool refused to close" in res.stderr
    assert cli("cache", "ls", owned_app, "--json").json["snapshots"] == []
    assert containers_of(owned_app) == []


def test_with_the_helper_off_nothing_is_called_and_it_still_restores(
    tmp_path: Path, cli: Cli, owned_app: str
) -> None:
    spec = _spec(tmp_path, owned_app, "jvm_helper = false\n")
    built = cli("build", "--name", owned_app, "-f", str(spec), "--json")
    assert built.returncode == 0, built.stderr
    assert not any("crac" in h for h in built.json["hooks"])
    out = cli("run", owned_app, "-f", str(spec), "--json")
    assert out.returncode == 0, out.stderr
    assert out.json["mode"] == "restored"
    assert http_json(out.json["ports"]["8080/tcp"], "/crac") == {"available": False, "before": 0, "after": 0}
    assert cli("stop", out.json["name"]).returncode == 0

    # Without the helper the clones share the JVM's seeds: the uniqueness gate catches it.
    gated = cli("build", "--name", owned_app, "-f", str(_spec(tmp_path, owned_app,
                                                                 'jvm_helper = false\nuniqueness = "/random"\n')))
    assert gated.returncode == 1 and "answered GET /random identically" in gated.stderr
    assert containers_of(owned_app) == []


def test_spring_boot_suspends_its_pool_and_web_server_around_the_snapshot(cli: Cli) -> None:
    """The Spring Boot example (web, JSON, HikariCP on H2, org.crac) on a stock JDK: Spring's own CRaC support
    stops Tomcat and suspends and empties the pool before the dump, and restarts both after each restore."""
    spec = Path(__file__).resolve().parents[2] / "images/examples/spring-catalog/warmstart.toml"
    try:
        built = cli("build", "-f", str(spec), "--json", timeout=600)
        assert built.returncode == 0, built.stderr
        out = cli("run", "spring-catalog", "-f", str(spec), "--json")
        assert out.returncode == 0, out.stderr
        assert out.json["mode"] == "restored", out.json.get("reason")
        address = out.json["ports"]["8080/tcp"]
        assert http_json(address, "/products/123")["ID"] == 123  # a query through the resumed pool
        stats = http_json(address, "/stats")
        # The app's own CRaC resource, notified after Spring's before the dump: the pool was empty then.
        assert stats["crac"] == {"before": 1, "after": 1, "pool_total_at_checkpoint": 0}
        assert stats["pool"]["total"] >= 1  # refilled after the restore
        log = subprocess.run(["podman", "logs", out.json["name"]], capture_output=True, text=True).stdout
        assert "Resuming Hikari pool" in log and "Tomcat started on port 8080" in log
        assert cli("stop", out.json["name"]).returncode == 0
    finally:
        for name in containers_of("spring-catalog"):
            subprocess.run(["podman", "rm", "-f", name], capture_output=True)
    assert containers_of("spring-catalog") == []
