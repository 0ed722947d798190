"""Untrusted input, fast: every name that becomes a path, every manifest field, cache ownership, symlinks,
registry artifacts and archive members. Each test asserts the exact refusal and that nothing outside the cache
changed. The real-engine counterparts (crafted artifacts in a real registry, the CLI) are in tests/podman."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.unit.fake_engine import FakeEngine
from warmstart.cache.manifest import Manifest
from warmstart.cache.prune import prune
from warmstart.cache.registry import Layer, Reference, _snapshot_layers, credentials, max_artifact_bytes
from warmstart.cache.store import SnapshotStore, parse_ref
from warmstart.core.spec import AppSpec
from warmstart.engines.docker import checkpoint_members
from warmstart.errors import CacheError, ManifestError, RegistryError, SnapshotCorrupt, UsageError

SHA = hashlib.sha256(b"data").hexdigest()


def raw_manifest(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "app": "a", "tag": "t1", "key": "k" * 64, "created_at": "2026-01-01T00:00:00+00:00",
        "warmstart_version": "0", "engine": {"name": "podman"}, "image": {"ref": "i", "id": "x"}, "spec": {},
        "host": {}, "key_inputs": {}, "files": {"checkpoint.tar": {"size": 4, "sha256": SHA}}, "timings": {},
        "schema_version": 1,
    }
    raw.update(over)
    return raw


def snapshot_dir(root: Path, app: str = "a", tag: str = "t1", **over: Any) -> Path:
    """A snapshot entry as a build leaves it, written by hand (so tests can also write bad ones)."""
    d = root / "snapshots" / app / tag
    d.mkdir(parents=True, mode=0o700)
    (d / "checkpoint.tar").write_bytes(b"data")
    (d / "manifest.json").write_text(json.dumps(raw_manifest(app=app, tag=tag, **over)))
    return d


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "cache").open()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the cache that nothing may touch; its listing is compared before and after."""
    d = tmp_path / "outside"
    (d / "victim").mkdir(parents=True)
    (d / "victim" / "manifest.json").write_text(json.dumps(raw_manifest()))
    (d / "victim" / "checkpoint.tar").write_bytes(b"data")
    (d / "precious.txt").write_text("keep me")
    return d


def listing(path: Path) -> list[tuple[str, bytes]]:
    return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file() else b"") for p in path.rglob("*"))


# -- names that become paths -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("ref, message", [
    ("", "invalid app name ''"),
    ("../x", "invalid app name '../x'"),
    ("app:../../../dir", "invalid tag '../../../dir'"),
    ("app:../../../dir/t", "invalid tag '../../../dir/t'"),
    ("app:", "invalid tag ''"),
    ("App", "invalid app name 'App'"),
    ("a/b", "invalid app name 'a/b'"),
    ("app:t/../..", "invalid tag 't/../..'"),
    ("a" * 300, "invalid app name"),
    ("app:" + "t" * 300, "invalid tag"),
    ("app:.hidden", "invalid tag '.hidden'"),
    ("app\x00:t", "invalid app name"),
])
def test_refs_are_validated_where_they_enter(ref: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_ref(ref)


def test_valid_refs_parse() -> None:
    assert parse_ref("shop") == ("shop", None)
    assert parse_ref("shop-1.v2:3ef809887542") == ("shop-1.v2", "3ef809887542")


def test_resolve_with_a_traversal_tag_touches_nothing_outside(store: SnapshotStore, outside: Path) -> None:
    before = listing(outside)
    rel = os.path.relpath(outside / "victim", store.snapshots / "app")
    with pytest.raises(UsageError, match="invalid tag"):
        store.resolve(f"app:{rel}")
    assert listing(outside) == before


def test_app_record_names_are_validated(store: SnapshotStore) -> None:
    with pytest.raises(UsageError, match="invalid app name '../../etc/passwd'"):
        store.load_app("../../etc/passwd")


# -- symlinks and ownership --------------------------------------------------------------------------------------------

def test_symlinked_app_dir_is_neither_listed_nor_pruned(store: SnapshotStore, outside: Path) -> None:
    snapshot_dir(outside / "fake", app="a")  # a real-looking snapshot tree outside the cache
    os.symlink(outside / "fake" / "snapshots" / "a", store.snapshots / "a")
    before = listing(outside)
    assert store.snapshots_of() == [] and store.snapshots_of("a") == [] and store.broken() == []
    result = prune(store, keep=0)
    assert result.removed == [] and listing(outside) == before


def test_get_of_a_symlinked_app_dir_is_refused(store: SnapshotStore, outside: Path) -> None:
    os.symlink(outside, store.snapshots / "a")
    with pytest.raises(CacheError, match="is a symlink"):
        store.get("a", "victim")


def test_symlinked_snapshot_entry_is_not_listed_or_removed(store: SnapshotStore, outside: Path) -> None:
    before = listing(outside)
    (store.snapshots / "a").mkdir(mode=0o700)
    os.symlink(outside / "victim", store.snapshots / "a" / "t1")
    assert store.snapshots_of("a") == [] and store.get("a", "t1") is None
    prune(store, keep=0)
    assert listing(outside) == before


def test_symlinked_checkpoint_file_fails_verification(store: SnapshotStore, outside: Path) -> None:
    d = snapshot_dir(store.root)
    (d / "checkpoint.tar").unlink()
    os.symlink(outside / "victim" / "checkpoint.tar", d / "checkpoint.tar")
    snap = store.get("a", "t1")
    assert snap is not None
    with pytest.raises(SnapshotCorrupt, match="is not a regular file"):
        store.verify(snap)


def test_symlinked_manifest_is_not_read(store: SnapshotStore, outside: Path) -> None:
    d = store.snapshots / "a" / "t1"
    d.mkdir(parents=True, mode=0o700)
    os.symlink(outside / "victim" / "manifest.json", d / "manifest.json")
    assert store.snapshots_of("a") == []
    with pytest.raises(ManifestError, match="cannot read snapshot manifest"):
        store.get("a", "t1")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_cache_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "foreign"
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)
    os.chown(root, 65534, 65534)  # nobody
    with pytest.raises(CacheError, match=r"cache dir refused: .*foreign is owned by uid 65534"):
        SnapshotStore(root).open()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a file as another user")
def test_app_record_planted_by_another_user_is_refused(store: SnapshotStore) -> None:
    record = store.apps / "shop.json"
    record.write_text(json.dumps({"record_version": 1, "spec": {"name": "shop", "image": "evil",
                                                                 "volumes": ["/:/host"]}}))
    os.chown(record, 65534, 65534)
    with pytest.raises(CacheError, match="owned by uid 65534"):
        store.load_app("shop")


def test_world_writable_cache_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "open"
    root.mkdir()
    os.chmod(root, 0o777)
    with pytest.raises(CacheError, match="writable by other users"):
        SnapshotStore(root).open()


def test_symlinked_cache_subdir_is_refused(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "c"
    root.mkdir(mode=0o700)
    os.symlink(outside, root / "snapshots")
    with pytest.raises(CacheError, match="snapshots is a symlink"):
        SnapshotStore(root).open()


# -- manifests ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("files", "checkpoint.tar", "files: expected an object, got str"),
    ("files", {}, "files: does not list checkpoint.tar"),
    ("files", {"checkpoint.tar": {"size": 4, "sha256": ""}}, "files.checkpoint.tar: expected"),
    ("files", {"checkpoint.tar": {"size": "4", "sha256": SHA}}, "files.checkpoint.tar: expected"),
    ("files", {"checkpoint.tar": {"size": -1, "sha256": SHA}}, "files.checkpoint.tar: expected"),
    ("files", {"checkpoint.tar": {"size": 4, "sha256": SHA}, "../../x": {"size": 1, "sha256": SHA}},
     "files: '../../x' is not a plain file name"),
    ("files", {"checkpoint.tar": {"size": 4, "sha256": SHA}, "manifest.json": {"size": 1, "sha256": SHA}},
     "files: 'manifest.json' is not a plain file name"),
    ("host", [], "host: expected an object, got list"),
    ("created_at", "yesterday", "created_at: expected an ISO 8601 time"),
    ("created_at", 5, "created_at: expected a string, got int"),
    ("app", "../../x", "invalid app name"),
    ("tag", "../../../somewhere", "invalid tag"),
    ("app", None, "app: expected a string, got NoneType"),
    ("engine", {"name": 1}, "engine, image and encryption must hold strings only"),
    ("timings", {"x": "slow"}, "timings: expected an object of numbers"),
    ("spec", "x", "spec: expected an object, got str"),
    ("schema_version", "1", "has no integer schema_version"),
    ("schema_version", True, "has no integer schema_version"),
    ("schema_version", 99, "has schema_version 99, newer than this warmstart reads"),
    ("post_copy", "x", "post_copy: expected an object, got str"),
    ("post_copy", {"page_server": "localhost:80"}, "post_copy: expected"),
    ("post_copy", {"page_server": "10.0.0.1:80", "tls": "x"}, "post_copy: expected"),
    ("post_copy", {"page_server": "10.0.0.1:80"}, "post_copy needs schema_version 2 and a sandbox snapshot"),
])
def test_malformed_manifest_fields_are_refused_clearly(field: str, value: Any, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace(".", r"\.").replace("(", r"\(")):
        Manifest.from_raw(raw_manifest(**{field: value}), source="m.json")


def test_manifest_missing_a_field_or_not_an_object() -> None:
    raw = raw_manifest()
    del raw["key"]
    with pytest.raises(ManifestError, match="key: expected a string, got nothing"):
        Manifest.from_raw(raw, source="m.json")
    with pytest.raises(ManifestError, match="is not a JSON object"):
        Manifest.from_raw([1, 2], source="m.json")


def test_manifest_for_another_entry_is_refused(store: SnapshotStore) -> None:
    d = snapshot_dir(store.root, tag="t1")
    (d / "manifest.json").write_text(json.dumps(raw_manifest(tag="other")))
    with pytest.raises(ManifestError, match="describes a:other, not a:t1"):
        store.get("a", "t1")


def test_wrong_typed_manifests_do_not_break_listing_and_are_pruned(store: SnapshotStore) -> None:
    good = snapshot_dir(store.root, tag="good")
    for tag, bad in [("b1", {"files": "x"}), ("b2", {"host": []}), ("b3", {"created_at": "no"})]:
        snapshot_dir(store.root, tag=tag, **bad)
    assert [s.path for s in store.snapshots_of()] == [good]
    result = prune(store, keep=5)
    assert sorted(result.broken_removed) == ["a:b1", "a:b2", "a:b3"]
    assert sorted(p.name for p in (store.snapshots / "a").iterdir()) == ["good"]


def test_unreadable_manifest_is_pruned(store: SnapshotStore) -> None:
    d = snapshot_dir(store.root, tag="junk")
    (d / "manifest.json").write_bytes(b"\xff\xfe not json")
    assert prune(store, keep=1).broken_removed == ["a:junk"]
    assert not d.exists()


def test_verification_cannot_be_switched_off_by_an_empty_file_list(store: SnapshotStore) -> None:
    snapshot_dir(store.root, files={})
    assert store.snapshots_of("a") == []  # refused at load, so never restored


def test_stale_stamp_on_a_full_disk_still_verifies(store: SnapshotStore, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot_dir(store.root)
    snap = store.get("a", "t1")
    assert snap is not None

    def full(path: Path, data: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("warmstart.cache.store.write_private", full)
    store.verify(snap)  # hashes, cannot write the stamp, still passes
    (snap.path / "checkpoint.tar").write_bytes(b"evil")
    with pytest.raises(SnapshotCorrupt, match="does not match its sha256"):
        store.verify(snap)


# -- app records -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "is malformed"),
    ('{"record_version": 1, "spec": "x"}', "is malformed"),
    ('{"record_version": 1, "spec": {"image": "i"}}', "is malformed"),
    ('{"record_version": 9, "spec": {"name": "shop", "image": "i"}}', "newer warmstart"),
    ('{"record_version": "1", "spec": {"name": "shop", "image": "i"}}', "newer warmstart"),
    ('{"record_version": 1, "spec": {"name": "other", "image": "i"}}', "describes app 'other', not 'shop'"),
    ('{"record_version": 1, "spec": {"name": "shop", "image": "i", "probe": "x"}}', "is malformed"),
    ("\xff", "cannot read app record"),
])
def test_malformed_app_records_are_clear_errors(store: SnapshotStore, content: str, message: str) -> None:
    (store.apps / "shop.json").write_bytes(content.encode("latin-1") if content == "\xff" else content.encode())
    with pytest.raises(CacheError, match=message.replace("(", r"\(")):
        store.load_app("shop")


# -- registry references, credentials, artifacts --------------------------------------------------------------------

@pytest.mark.parametrize("ref, message", [
    ("noslash", "expected HOST\\[:PORT\\]/REPOSITORY\\[:TAG\\]"),
    ("reg.example/Team/App:v1", "repository 'Team/App' must be lowercase"),
    ("reg.example/team/app:../../x", "repository 'team/app:\\.\\./\\.\\./x' must be lowercase"),
    ("reg.example/team/app", "no tag"),
    ("reg.example/team/app:-x", "tag '-x' must be"),
    ("bad host/app:v1", "'bad host' is not a HOST\\[:PORT\\]"),
    ("reg.example/team//app:v1", "must be lowercase"),
    ("reg.example/" + "a" * 300 + ":v1", "must be lowercase"),
])
def test_registry_references_are_validated(ref: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        Reference.parse(ref)


def test_valid_registry_references() -> None:
    assert str(Reference.parse("127.0.0.1:5000/warmstart/shop:v1")) == "127.0.0.1:5000/warmstart/shop:v1"
    assert Reference.parse("127.0.0.1:5000/warmstart/shop", default_tag="shop-abc").tag == "shop-abc"
    assert Reference.parse("localhost:5000/a/b:c").loopback is True
    assert Reference.parse("reg.example/a/b:c").loopback is False
    assert Reference.parse("[::1]:5000/a/b:c").registry == "[::1]:5000"


def test_malformed_auth_entry_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {"reg.example": {"auth": "%%%not-base64"}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    monkeypatch.setenv("HOME", str(tmp_path))  # no other auth file is looked at
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.delenv("WARMSTART_REGISTRY_USER", raising=False)
    with pytest.raises(RegistryError, match="credentials for reg.example in .*auth.json are malformed"):
        credentials("reg.example")
    auth.write_text(json.dumps({"auths": ["not", "a", "dict"]}))
    assert credentials("reg.example") is None
    auth.write_text(json.dumps({"auths": {"reg.example": {"auth": "dXNlcjpwYXNz"}}}))  # user:pass
    assert credentials("reg.example") == ("user", "pass")


GOOD_OCI = {
    "config": {"mediaType": "application/vnd.warmstart.snapshot.config.v1+json"},
    "layers": [
        {"digest": "sha256:" + "1" * 64, "size": 900,
         "annotations": {"org.opencontainers.image.title": "manifest.json"}},
        {"digest": "sha256:" + "2" * 64, "size": 5 << 20,
         "annotations": {"org.opencontainers.image.title": "checkpoint.tar"}},
    ],
}


def _oci(mutate: Any) -> dict[str, Any]:
    oci = copy.deepcopy(GOOD_OCI)
    mutate(oci)
    return oci


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o.update(config="x"), "is not a warmstart snapshot"),
    (lambda o: o["config"].update(mediaType="application/vnd.oci.image.config.v1+json"), "is not a warmstart snapshot"),
    (lambda o: o.update(layers="x"), "does not hold exactly"),
    (lambda o: o["layers"].pop(), "does not hold exactly"),
    (lambda o: o["layers"][0]["annotations"].update({"org.opencontainers.image.title": "../../x"}),
     "found a layer titled '../../x'"),
    (lambda o: o["layers"][1]["annotations"].update({"org.opencontainers.image.title": "manifest.json"}),
     "found a layer titled 'manifest.json'"),
    (lambda o: o["layers"][0].update(digest="sha256:../../../etc"), "has no valid sha256 digest"),
    (lambda o: o["layers"][0].update(annotations=None), "found a layer titled 'None'"),
    (lambda o: o["layers"].__setitem__(0, "x"), "found a layer titled 'None'"),
    (lambda o: o["layers"][1].pop("size"), "layer checkpoint.tar declares size None"),
    (lambda o: o["layers"][1].update(size=-1), "layer checkpoint.tar declares size -1"),
    (lambda o: o["layers"][1].update(size=True), "layer checkpoint.tar declares size True"),
    (lambda o: o["layers"][0].update(size=5 << 20), "layer manifest.json declares size 5242880"),
    (lambda o: o["layers"][1].update(size=1 << 63), "layer checkpoint.tar declares size 9223372036854775808"),
    (lambda o: o["layers"][1].update(size=1 << 50), "is 1125899906.8 MB, more than the 34359.7 MB a pull takes"),
])
def test_crafted_oci_manifests_are_refused(mutate: Any, message: str) -> None:
    with pytest.raises(RegistryError, match=message.replace(".", r"\.")):
        _snapshot_layers(_oci(mutate), "reg/x:y")


def test_good_oci_manifest_gives_our_file_names() -> None:
    assert _snapshot_layers(GOOD_OCI, "r") == {"manifest.json": Layer("sha256:" + "1" * 64, 900),
                                               "checkpoint.tar": Layer("sha256:" + "2" * 64, 5 << 20)}


def test_an_artifact_larger_than_the_limit_is_refused_before_downloading(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RegistryError, match="is 5.2 MB, more than the 5.2 MB a pull takes here"):
        _snapshot_layers(GOOD_OCI, "r", limit=5 << 20)  # each layer fits, both together do not
    monkeypatch.setenv("WARMSTART_MAX_ARTIFACT_SIZE", "4M")
    assert max_artifact_bytes() == 4 << 20
    monkeypatch.setenv("WARMSTART_MAX_ARTIFACT_SIZE", "lots")
    with pytest.raises(UsageError, match="WARMSTART_MAX_ARTIFACT_SIZE"):
        max_artifact_bytes()


# -- archive members (docker snapshots) -------------------------------------------------------------------------------

def _tar(*members: tarfile.TarInfo) -> tarfile.TarFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for m in members:
            t.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    buf.seek(0)
    return tarfile.open(fileobj=buf)


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, linkname
    return m


@pytest.mark.parametrize("member, message", [
    (_member("checkpoint/../../x"), "is not a plain relative name"),
    (_member("checkpoint//etc/passwd"), "is not a plain relative name"),
    (_member("checkpoint/./a"), "is not a plain relative name"),
    (_member("checkpoint/link", tarfile.SYMTYPE, "/etc"), "is not a regular file or directory"),
    (_member("checkpoint/hard", tarfile.LNKTYPE, "../../x"), "is not a regular file or directory"),
    (_member("checkpoint/dev", tarfile.CHRTYPE), "is not a regular file or directory"),
])
def test_crafted_archive_members_refuse_the_archive(member: tarfile.TarInfo, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        checkpoint_members(_tar(_member("checkpoint/ok.img"), member))


def test_archive_members_outside_checkpoint_are_ignored_and_names_made_relative() -> None:
    members = checkpoint_members(_tar(_member("docker-config.json"), _member("checkpoint/pages-1.img"),
                                      _member("checkpoint/sub", tarfile.DIRTYPE)))
    assert [m.name for m in members] == ["pages-1.img", "sub"]


# -- the fallback promise ---------------------------------------------------------------------------------------------

def test_spec_file_that_is_not_utf8_is_a_spec_error(tmp_path: Path) -> None:
    from warmstart.core import specfile
    from warmstart.errors import SpecError

    path = tmp_path / "warmstart.toml"
    path.write_bytes(b'[apps.a]\nimage = "\xff\xfe"\n')
    with pytest.raises(SpecError, match="not UTF-8 text"):
        specfile.load(path)


def test_app_known_only_from_a_snapshot_with_a_malformed_spec_is_a_clear_error(store: SnapshotStore) -> None:
    from warmstart.restore.launch import launch

    snapshot_dir(store.root, spec={"name": "a", "image": "img", "ports": 5})
    with pytest.raises(ManifestError, match="its manifest's spec is malformed"):
        launch("a", engine=FakeEngine(), store=store, ports=[])


def test_store_remove_refuses_a_path_outside_the_cache(store: SnapshotStore, outside: Path) -> None:
    from warmstart.cache.store import Snapshot

    before = listing(outside)
    fake = Snapshot(outside / "victim", Manifest.from_raw(raw_manifest(), source="x"))
    with pytest.raises(CacheError, match="is not a snapshot directory"):
        store.remove(fake)
    assert listing(outside) == before


def test_spec_name_in_app_record_must_match(store: SnapshotStore) -> None:
    store.save_app(AppSpec(name="shop", image="i"))
    assert store.load_app("shop") == AppSpec(name="shop", image="i")
