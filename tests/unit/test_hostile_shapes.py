"""Input shaped to hang or crash a reader (#29): a FIFO where a file belongs, documents nested thousands deep, NaN,
infinity and huge numbers where seconds belong, NUL bytes in strings that would reach the OS. Each is refused with
one line, at once; the CLI cases run the real `warmstart` command and check that it exits with a usage or cache
error (never 70, the internal-error code) within a few seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.test_untrusted_input import snapshot_dir
from warmstart.cache.health import COOLDOWN_SECONDS, Health
from warmstart.cache.manifest import Manifest
from warmstart.cache.store import SnapshotStore
from warmstart.core import bounded, specfile
from warmstart.core.spec import make_probe
from warmstart.errors import CacheError, ManifestError, SpecError, UsageError
from warmstart.serve.front import Front, ServeOptions

DEEP = "[" * 100_000 + "]" * 100_000
INTERNAL_ERROR = 70


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "cache").open()


def _cli(*args: str, cache: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warmstart", *args], capture_output=True, text=True, timeout=20,
                          cwd=cwd, env={**os.environ, "WARMSTART_CACHE": str(cache), "WARMSTART_ENGINE": "podman"})


# -- FIFOs where files belong ----------------------------------------------------------------------------------------

def test_a_fifo_as_a_manifest_is_skipped_not_waited_on(store: SnapshotStore) -> None:
    good = snapshot_dir(store.root, tag="good")
    fifo = snapshot_dir(store.root, tag="fifo")
    (fifo / "manifest.json").unlink()
    os.mkfifo(fifo / "manifest.json")
    start = time.monotonic()
    assert [s.path for s in store.snapshots_of("a")] == [good]
    assert time.monotonic() - start < 5  # a blocking open would never return
    with pytest.raises(ManifestError, match="not a regular file"):
        Manifest.load(fifo / "manifest.json")


def test_cache_ls_and_prune_with_a_fifo_manifest_answer_at_once(store: SnapshotStore) -> None:
    fifo = snapshot_dir(store.root, tag="fifo")
    (fifo / "manifest.json").unlink()
    os.mkfifo(fifo / "manifest.json")
    listed = _cli("cache", "ls", "--json", cache=store.root)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["snapshots"] == []
    pruned = _cli("cache", "prune", "--keep", "5", "--json", cache=store.root)
    assert pruned.returncode == 0, pruned.stderr
    assert "a:fifo" in pruned.stdout


def test_a_fifo_as_an_app_record_or_spec_file_is_refused(store: SnapshotStore, tmp_path: Path) -> None:
    os.mkfifo(store.apps / "shop.json")
    with pytest.raises(CacheError, match="not a regular file"):
        store.load_app("shop")
    os.mkfifo(tmp_path / "warmstart.toml")
    with pytest.raises(SpecError, match="not a regular file"):
        specfile.load(tmp_path / "warmstart.toml")


def test_a_fifo_as_the_stamp_or_health_record_reads_as_none(store: SnapshotStore) -> None:
    d = snapshot_dir(store.root)
    os.mkfifo(d / ".health")
    snap = store.get("a", "t1")
    assert snap is not None
    assert store.health(snap) == Health()


# -- nesting, NUL bytes and non-finite numbers in documents ------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    (DEEP, "nested deeper than 32"),
    ("[" * 40 + "]" * 40, "nested deeper than 32"),
    ('{"a": NaN}', "NaN is not a number JSON allows"),
    ('{"a": -Infinity}', "-Infinity is not a number JSON allows"),
    ('{"a": 1e999}', "inf is not a finite number"),
    ('{"a\\u0000": 1}', "a key holds a NUL byte"),
    ('["x\\u0000y"]', "a string holds a NUL byte"),
])
def test_bounded_json_refuses_hostile_shapes(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bounded.loads_json(text)


def test_bounded_json_accepts_ordinary_documents() -> None:
    assert bounded.loads_json('{"a": [1, 2.5, {"b": "c"}], "d": null}') == {"a": [1, 2.5, {"b": "c"}], "d": None}


def test_a_deep_manifest_is_a_manifest_error(store: SnapshotStore) -> None:
    d = snapshot_dir(store.root)
    (d / "manifest.json").write_text(DEEP)
    with pytest.raises(ManifestError, match="nested deeper"):
        Manifest.load(d / "manifest.json")
    assert store.snapshots_of("a") == []


def test_a_deep_app_record_is_a_cache_error(store: SnapshotStore) -> None:
    (store.apps / "shop.json").write_text(DEEP)
    with pytest.raises(CacheError, match="nested deeper"):
        store.load_app("shop")


@pytest.mark.parametrize("body, message", [
    ("x = " + "[" * 5000 + "]" * 5000, "nested deeper"),
    ('[apps.a]\nimage = "i\\u0000x"\n', "NUL byte"),
    ('[apps.a]\nimage = "i"\nports = [8080]\n[apps.a.ready]\nhttp = "/"\ninterval = nan\n', "not a finite number"),
    ('[apps.a]\nimage = "i"\nports = [8080]\n[apps.a.ready]\nhttp = "/"\ninterval = inf\n', "not a finite number"),
    ('[apps.a]\nimage = "i"\nports = [8080]\n[apps.a.ready]\nhttp = "/"\ninterval = 1e300\n', "more than a year"),
    ('[apps.a]\nimage = "i"\nports = [8080]\n[apps.a.ready]\nhttp = "/"\ntimeout = "99999999d"\n',
     "more than a year"),
])
def test_hostile_spec_files_are_spec_errors(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "warmstart.toml"
    path.write_text(body)
    with pytest.raises(SpecError, match=message):
        specfile.load(path)


def test_a_huge_spec_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "warmstart.toml"
    path.write_text("# " + "x" * (specfile.MAX_BYTES + 1))
    with pytest.raises(SpecError, match="larger than"):
        specfile.load(path)


# -- seconds from flags and records --------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0.0, 1e300])
def test_ready_timeout_must_be_finite_and_in_range(value: float) -> None:
    with pytest.raises(UsageError, match="--ready-timeout"):
        make_probe(ready_http="/", ready_tcp=None, ports=[8080], ready_port=None, timeout=value)


@pytest.mark.parametrize("field", ["idle", "wait_timeout", "conn_idle"])
def test_serve_durations_must_be_finite(field: str) -> None:
    from tests.unit.fake_engine import FakeEngine

    opts = ServeOptions(app="a", listen_host="127.0.0.1", listen_port=1, **{field: float("nan")})  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="expected a finite number of seconds"):
        Front(opts, engine=FakeEngine(), store=None, spec=None, emit=lambda _: None)  # type: ignore[arg-type]


def test_cli_nan_durations_are_usage_errors(tmp_path: Path) -> None:
    for args in (["build", "--name", "a", "--image", "i", "-p", "8080", "--ready-http", "/", "--ready-timeout", "nan"],
                 ["serve", "a", "--idle", "nan"],
                 ["exec", "x", "--timeout", "inf", "--", "true"]):
        res = _cli(*args, cache=tmp_path / "cache", cwd=tmp_path)
        assert res.returncode not in (0, INTERNAL_ERROR), (args, res.stderr)
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) <= 2, res.stderr
        assert "finite number of seconds" in res.stderr, res.stderr


@pytest.mark.parametrize("until", [1e300, 10**400, float("inf"), -5, "soon", True])
def test_a_health_record_cannot_hold_the_breaker_open_for_ever(store: SnapshotStore, until: object) -> None:
    d = snapshot_dir(store.root)
    text = json.dumps({"consecutive_failures": 3, "last_error": "x", "open_until": until}) if until != 10**400 else \
        '{"consecutive_failures": 3, "last_error": "x", "open_until": 1' + "0" * 400 + "}"
    (d / ".health").write_text(text)
    snap = store.get("a", "t1")
    assert snap is not None
    health = store.health(snap)
    assert health.open_until <= time.time() + COOLDOWN_SECONDS
    assert health.circuit() != "open"


def test_a_rewritten_stamp_fools_the_shortcut_but_not_a_full_verify(store: SnapshotStore) -> None:
    """The stamp is the cache's own record; under a trust policy `run` verifies in full (restore/launch.py)."""
    from warmstart.cache.store import VERIFIED_STAMP, _stat_key
    from warmstart.errors import SnapshotCorrupt

    d = snapshot_dir(store.root)
    snap = store.get("a", "t1")
    assert snap is not None
    store.verify(snap)
    (d / "checkpoint.tar").write_bytes(b"evil")  # same size
    stamp = json.loads((d / VERIFIED_STAMP).read_text())
    stamp["checkpoint.tar"] = _stat_key(d / "checkpoint.tar")
    (d / VERIFIED_STAMP).write_text(json.dumps(stamp))
    store.verify(snap)  # the shortcut: what the stamp vouches for is not re-read
    with pytest.raises(SnapshotCorrupt, match="checkpoint.tar does not match its sha256"):
        store.verify(snap, full=True)
