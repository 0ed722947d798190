"""CI's fast subset of the zoo (benchmarks/zoo.py; the full run is `scripts/zoo`): real third-party services,
marked `fast = true` in images/zoo/zoo.toml, each built, started cold, restored, checked with its own client
(data written before the checkpoint) and loaded with its own benchmark tool, exactly as the zoo run does.
The zoo's base image comes from `images/build-images --zoo` (scripts/test runs it)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from benchmarks import zoo
from tests.conftest import containers_of

pytestmark = pytest.mark.podman

ZOO = tomllib.loads((zoo.ZOO / "zoo.toml").read_text())
SPECS = tomllib.loads(zoo.SPEC.read_text())["apps"]
FAST = [name for name, entry in ZOO.items() if entry.get("fast")]
BASE = "localhost/warmstart-base-zoo:bookworm"


@pytest.fixture(scope="module", autouse=True)
def _zoo_base() -> None:
    if subprocess.run(["podman", "image", "exists", BASE]).returncode != 0:
        pytest.fail(f"{BASE} is missing: run images/build-images --zoo (scripts/test does)")


def test_the_fast_subset_covers_a_database_under_its_own_user_a_store_with_a_unix_socket_and_a_web_server() -> None:
    assert {"postgres", "redis", "nginx"} <= set(FAST)


@pytest.mark.parametrize("service", FAST)
def test_a_real_service_restores_and_serves_its_own_client_and_load(
        service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARMSTART_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WARMSTART_TRIALS", "1")  # the policy's figures are not what this test is about
    out = zoo.run_service(service, ZOO[service], SPECS[service], zoo.forced_spec(tmp_path))
    assert out.built, out.note
    assert out.mode == "restored", out.note
    assert out.cold_s is not None and out.restored_s is not None, out  # an outside client got its answer both ways
    assert out.check == "ok", out
    assert out.load == "ok", out
    assert out.policy in ("restore", "cold") and out.trial_cold_s and out.trial_restored_s, out
    assert out.holds.get("processes", 0) >= 1, out
    assert containers_of(service) == []
