"""Property-based fuzzing of every reader of outside input: warmstart.toml, manifest.json, app records, registry
references and OCI manifests, archive member names, Kubernetes checkpoint archives, CLI refs (APP[:TAG]), and whole
cache trees (names and manifests) walked by list/broken/prune. Property: a reader returns a value or raises its
WarmstartError (archive members: ValueError, which the docker engine turns into a RestoreError); never any other
exception, and nothing outside the cache is written or removed.

Examples per reader: $WARMSTART_FUZZ_EXAMPLES (default 10,000, the CI profile; e.g. 300 for a quick local run).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_untrusted_input import GOOD_OCI, SHA, raw_manifest
from warmstart.cache.manifest import Manifest
from warmstart.cache.prune import prune
from warmstart.cache.registry import Reference, _snapshot_layers
from warmstart.cache.store import SnapshotStore, parse_ref
from warmstart.core import specfile
from warmstart.engines.docker import checkpoint_members
from warmstart.errors import WarmstartError

EXAMPLES = int(os.environ.get("WARMSTART_FUZZ_EXAMPLES", "10000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
# Strings that look like what an attacker would try, mixed with arbitrary text.
hostile = st.sampled_from(["", ".", "..", "../../x", "a/b", "/etc", "a:b", "x" * 300, "\x00", "t1", "a", "ok-1.2",
                           "checkpoint.tar", "manifest.json", "sha256:" + "0" * 64, SHA]) | st.text(max_size=60)


def _manifest_variant(changes: dict[str, Any]) -> dict[str, Any]:
    raw = raw_manifest()
    raw.update(changes)
    return raw


manifest_dicts = st.dictionaries(st.sampled_from(sorted(raw_manifest())), json_values | hostile, max_size=4).map(
    _manifest_variant) | json_values


@FUZZ
@given(manifest_dicts)
def test_manifest_reader(raw: Any) -> None:
    try:
        m = Manifest.from_raw(raw, source="fuzz")
    except WarmstartError:
        return
    assert "checkpoint.tar" in m.files and all(len(f["sha256"]) == 64 for f in m.files.values())


@FUZZ
@given(hostile)
def test_cli_refs(ref: str) -> None:
    try:
        app, tag = parse_ref(ref)
    except WarmstartError:
        return
    assert "/" not in app and ".." not in app.split(".") and (tag is None or "/" not in tag)


@FUZZ
@given(hostile, st.none() | hostile)
def test_registry_references(ref: str, default_tag: str | None) -> None:
    try:
        parsed = Reference.parse(ref, default_tag=default_tag)
    except WarmstartError:
        return
    assert ".." not in parsed.repository.split("/") and "/" not in parsed.tag


oci_dicts = st.dictionaries(st.sampled_from(["config", "layers", "annotations"]), json_values, max_size=3).map(
    lambda d: {**GOOD_OCI, **d}) | json_values | st.builds(
    lambda title, digest: {**GOOD_OCI, "layers": [
        {"digest": digest, "annotations": {"org.opencontainers.image.title": title}},
        GOOD_OCI["layers"][1]]}, hostile, hostile)


@FUZZ
@given(oci_dicts)
def test_oci_manifests(oci: Any) -> None:
    try:
        layers = _snapshot_layers(oci, "fuzz")
    except WarmstartError:
        return
    assert set(layers) == {"manifest.json", "checkpoint.tar"}


@FUZZ
@given(st.lists(st.tuples(hostile, st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                                                     tarfile.LNKTYPE, tarfile.FIFOTYPE])), max_size=4))
def test_archive_member_names(members: list[tuple[str, bytes]]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind in members:
            info = tarfile.TarInfo("checkpoint/" + name)
            info.type = kind
            t.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as t:
        try:
            taken = checkpoint_members(t)
        except ValueError:
            return
    for m in taken:
        assert not m.name.startswith("/") and ".." not in m.name.split("/") and (m.isfile() or m.isdir())


_KUBE_NAMES = st.sampled_from(["config.dump", "spec.dump", "status.dump", "checkpoint/inventory.img",
                                "checkpoint/pstree.img", "checkpoint/pages-1.img", "rootfs-diff.tar", "dump.log",
                                "checkpoint", "./config.dump", "../x", "/etc/x", "checkpoint/../../x", "a/b/c", ""])
_KUBE_DATA = st.sampled_from([b"", b"{}", b"[]", b"{nope", json.dumps(
    {"id": "1", "rootfsImageName": "a/b:1", "rootfsImageRef": "a/b@sha256:" + "0" * 64}).encode(),
    json.dumps({"mounts": [{"destination": 1}], "annotations": []}).encode(), b"ghp_" + b"a" * 36])


@FUZZ
@given(st.lists(st.tuples(_KUBE_NAMES | hostile, st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                                                                 tarfile.LNKTYPE, tarfile.FIFOTYPE]), _KUBE_DATA),
                max_size=12))
def test_kubernetes_checkpoint_archives(members: list[tuple[str, bytes, bytes]]) -> None:
    from warmstart.cache.kubeimport import import_archive

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with tarfile.open(root / "a.tar", "w", format=tarfile.PAX_FORMAT) as t:
            for name, kind, data in members:
                info = tarfile.TarInfo(name)
                info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
                info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
                t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        store = SnapshotStore(root / "cache").open()
        try:
            import_archive(store, root / "a.tar", ref="fuzz:v1", secrets={})
        except WarmstartError:
            assert not store.snapshots_of() and not any(store.staging_root.iterdir())
        assert sorted(p.name for p in root.iterdir()) == ["a.tar", "cache"]


_TRANSPORT_NAMES = st.sampled_from(["sandbox.json", "images/pages-1.img", "rootfs.tar", "../x", "/etc/x",
                                     "images/../../x", "images", ""])


@FUZZ
@given(st.lists(st.tuples(_TRANSPORT_NAMES | hostile, st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE,
                                                                      tarfile.SYMTYPE, tarfile.LNKTYPE,
                                                                      tarfile.FIFOTYPE]), _KUBE_DATA),
                max_size=6), st.integers(min_value=-3, max_value=3), st.binary(max_size=64))
def test_registry_transport_streams(members: list[tuple[str, bytes, bytes]], size_shift: int, tail: bytes) -> None:
    """A pulled snapshot.tar as it streams in (cache/transport.py): members, sizes and trailing bytes of any
    shape; only RegistryError, and nothing written outside the staging dir."""
    import hashlib

    from warmstart.cache import transport

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
            info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    blob = buf.getvalue() + tail
    files = {"sandbox.json": {"size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()},
             "images/pages-1.img": {"size": 2, "sha256": hashlib.sha256(b"[]").hexdigest()}}
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "stage"
        stage.mkdir()
        try:
            transport.unpack(iter([blob[i:i + 100] for i in range(0, len(blob), 100)]),
                             size=max(0, len(blob) + size_shift), digest=f"sha256:{hashlib.sha256(blob).hexdigest()}",
                             stage=stage, files=files, what="fuzz")
        except WarmstartError:
            pass
        else:
            assert sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file()) == sorted(files)
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["stage"]
        assert all(not p.is_symlink() for p in stage.rglob("*"))


spec_texts = st.text(max_size=200) | st.builds(
    lambda name, key, value: f'[apps.{name}]\nimage = "img"\n{key} = {value}\n',
    st.sampled_from(["a", '"a b"', "x" * 70, "ok"]),
    st.sampled_from(["command", "env", "ports", "volumes", "ready", "warmup", "hooks", "trim", "secret_env",
                     "python_helper", "build", "containerfile", "image", "bogus"]),
    st.sampled_from(['"x"', "1", "[1, 2]", '["a"]', "{ http = 1 }", "{ http = \"/h\", timeout = \"soon\" }",
                     "true", '{ requests = ["GET /"], repeat = -1 }', "[[1]]", '{ a = "b" }']))


@FUZZ
@given(spec_texts)
def test_spec_file_reader(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "warmstart.toml"
        path.write_text(text, errors="surrogateescape") if "\udcff" in text else path.write_bytes(
            text.encode("utf-8", "surrogatepass"))
        try:
            specfile.load(path)
        except WarmstartError:
            return


_SAFE_NAME = hostile.filter(lambda n: n not in ("", ".", "..") and not n.startswith("trap-") and "/" not in n
                           and "\x00" not in n
                            and len(n.encode()) < 200)


@FUZZ
@given(st.lists(st.tuples(_SAFE_NAME, _SAFE_NAME, manifest_dicts, st.booleans()), min_size=1, max_size=3),
       st.sampled_from(["symlink-app", "symlink-entry", "none"]))
def test_cache_trees_are_read_and_pruned_without_leaving_the_cache(
        entries: list[tuple[str, str, Any, bool]], trap: str) -> None:
    """Arbitrary entries (names and manifests) plus symlinks pointing outside; list, broken, get, load_app and
    prune never raise anything but WarmstartError and never touch the outside directory."""
    with tempfile.TemporaryDirectory() as tmp:
        outside = Path(tmp) / "outside"
        (outside / "victim").mkdir(parents=True)
        (outside / "victim" / "manifest.json").write_text(json.dumps(raw_manifest()))
        (outside / "victim" / "checkpoint.tar").write_bytes(b"data")
        store = SnapshotStore(Path(tmp) / "cache").open()
        for app, tag, manifest, with_file in entries:
            d = store.snapshots / app / tag
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            (d / "manifest.json").write_text(json.dumps(manifest))
            if with_file:
                (d / "checkpoint.tar").write_bytes(b"data")
            (store.apps / f"{app}.json").write_text(json.dumps({"record_version": 1, "spec": manifest}))
        if trap == "symlink-app":
            os.symlink(outside, store.snapshots / "trap-app")
        elif trap == "symlink-entry":
            (store.snapshots / "trap-entry").mkdir(mode=0o700)
            os.symlink(outside / "victim", store.snapshots / "trap-entry" / "t1")
        before = sorted(p.name for p in outside.rglob("*"))
        for call in (store.snapshots_of, store.broken, lambda: [store.resolve(f"{a}:{t}") for a, t, _, _ in entries],
                     lambda: [store.load_app(a) for a, _, _, _ in entries],
                     lambda: [store.verify(s) for s in store.snapshots_of()], lambda: prune(store, keep=0)):
            try:
                call()
            except WarmstartError:
                pass
        assert sorted(p.name for p in outside.rglob("*")) == before
        assert (outside / "victim" / "checkpoint.tar").read_bytes() == b"data"
        shutil.rmtree(store.root)


# Shapes meant to crash a parser rather than to be wrong (#29): nesting thousands deep, NaN and infinity, numbers
# beyond a double, NUL bytes; spliced into every document the cache reads and into spec files.
_hostile_json = st.one_of(
    st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 3000).map(lambda n: '{"a": ' * n + "1" + "}" * n),
    st.sampled_from(["NaN", "-Infinity", "Infinity", "1e999", "-1e999", "1" + "0" * 400, '"\\u0000"',
                     '"a\\u0000b"', '{"\\u0000": 1}', "[NaN]"]),
)
# Few distinct shapes: a tenth of the examples covers them many times over.
FUZZ_SHAPES = settings(FUZZ, max_examples=max(1, EXAMPLES // 10))


@FUZZ_SHAPES
@given(st.sampled_from(sorted(raw_manifest()) + ["open_until", "spec"]), _hostile_json)
def test_every_cache_document_refuses_crashing_shapes(field: str, value: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SnapshotStore(Path(tmp) / "cache").open()
        d = store.snapshots / "a" / "t1"
        d.mkdir(parents=True, mode=0o700)
        (d / "checkpoint.tar").write_bytes(b"data")
        good = json.dumps(raw_manifest())
        (d / "manifest.json").write_text(good)
        doc = '{"' + field + '": ' + value + "}"
        (d / ".health").write_text(doc)
        (d / ".verified").write_text(doc)
        (store.apps / "a.json").write_text('{"record_version": 1, "spec": ' + value + "}")
        assert [s.ref for s in store.snapshots_of()] == ["a:t1"]  # the manifest is fine; advice files never break it
        snap = store.snapshots_of()[0]
        assert store.health(snap).circuit() != "open"
        store.verify(snap)  # a crafted stamp only costs a re-hash
        (d / "manifest.json").write_text(good[:-1] + ', "' + field + '": ' + value + "}")
        for call in (store.snapshots_of, store.broken, lambda: store.load_app("a"), lambda: prune(store, keep=0)):
            try:
                call()
            except WarmstartError:
                pass


@FUZZ_SHAPES
@given(st.sampled_from(["interval", "timeout"]),
       st.sampled_from(["nan", "inf", "-inf", "1e308", "1e300", '"9999999999d"', "0", "-1", '"0ms"'])
       | st.integers(1, 3000).map(lambda n: "[" * n + "]" * n))
def test_spec_files_refuse_crashing_shapes(key: str, value: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "warmstart.toml"
        path.write_text(f'[apps.a]\nimage = "i"\nports = [8080]\n[apps.a.ready]\nhttp = "/"\n{key} = {value}\n')
        try:
            specfile.load(path)
        except WarmstartError:
            return
        raise AssertionError(f"{key} = {value[:40]} was accepted")
