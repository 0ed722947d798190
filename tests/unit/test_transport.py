"""The registry payload's one-pass path (warmstart/cache/transport.py): the tar streamed out is an ordinary tar
of exactly the snapshot's files, and the streaming unpack takes back exactly that and refuses everything else,
leaving only staging files behind (which registry.py discards)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from warmstart.cache import transport
from warmstart.errors import RegistryError


def _snapshot(root: Path) -> dict[str, dict[str, object]]:
    (root / "images").mkdir(parents=True)
    files = {"sandbox.json": b"{}", "rootfs.tar": b"r" * 1000, "images/pages-1.img": os.urandom(3 * 512 + 7),
             "images/empty.img": b""}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return {n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()}


def _blob(pieces: Iterator[bytes]) -> bytes:
    return b"".join(pieces)


def _chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    return (data[i:i + size] for i in range(0, len(data), size))


def test_round_trip(tmp_path: Path) -> None:
    files = _snapshot(tmp_path / "src")
    blob = _blob(transport.tar_stream(tmp_path / "src", files))
    assert len(blob) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:  # an ordinary tar: owner root, 0600, no times
        members = tar.getmembers()
        assert sorted(m.name for m in members) == sorted(files)
        assert {(m.uid, m.mode, m.mtime) for m in members} == {(0, 0o600, 0)}
    stage = tmp_path / "stage"
    stage.mkdir()
    transport.unpack(_chunks(blob), size=len(blob), digest=f"sha256:{hashlib.sha256(blob).hexdigest()}",
                     stage=stage, files=files, what="pulled snapshot r")
    for name in files:
        assert (stage / name).read_bytes() == (tmp_path / "src" / name).read_bytes()
        assert (stage / name).stat().st_mode & 0o777 == 0o600
    assert _blob(transport.tar_stream(tmp_path / "src", files)) == blob  # the bytes depend on the files only


def _tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("case, message", [
    ("unlisted", "holds '../outside', which its manifest does not list"),
    ("symlink", "holds 'images/pages-1.img', which its manifest does not list"),
    ("twice", "holds 'sandbox.json', which its manifest does not list"),
    ("wrong-size", "holds 'sandbox.json', which its manifest does not list as a file of that size"),
    ("missing", "lacks ['images/pages-1.img']"),
    ("altered", "pulled snapshot r: sandbox.json does not match the snapshot manifest"),
    ("past-size", "runs past its declared"),
    ("short", "bytes, its descriptor says"),
    ("digest", "does not match its digest"),
    ("not-a-tar", "its payload is not a readable tar"),
])
def test_refusals(tmp_path: Path, case: str, message: str) -> None:
    files = {"sandbox.json": {"size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()},
             "images/pages-1.img": {"size": 4, "sha256": hashlib.sha256(b"page").hexdigest()}}
    good = [_file("sandbox.json", b"{}"), _file("images/pages-1.img", b"page")]
    link = tarfile.TarInfo("images/pages-1.img")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    entries = {"unlisted": [*good, _file("../outside", b"evil")], "symlink": [good[0], (link, b"")],
               "twice": [good[0], *good], "wrong-size": [_file("sandbox.json", b"{} "), good[1]],
               "missing": good[:1], "altered": [_file("sandbox.json", b"[]"), good[1]]}.get(case, good)
    blob = b"garbage" * 200 if case == "not-a-tar" else _tar(entries)
    size = {"past-size": len(blob) - 1, "short": len(blob) + 1}.get(case, len(blob))
    digest = "sha256:" + ("0" * 64 if case == "digest" else hashlib.sha256(blob).hexdigest())
    stage = tmp_path / "stage"
    stage.mkdir()
    with pytest.raises(RegistryError, match=message.replace("[", r"\[").replace("]", r"\]")):
        transport.unpack(_chunks(blob, 333), size=size, digest=digest, stage=stage, files=files,
                         what="pulled snapshot r")
    assert not (tmp_path / "outside").exists()
    assert all(p.is_file() or p.is_dir() for p in stage.rglob("*"))  # no link was made


def test_a_file_that_changes_while_pushed_is_refused(tmp_path: Path) -> None:
    files = _snapshot(tmp_path / "src")
    pieces = transport.tar_stream(tmp_path / "src", files)
    next(pieces)  # the first header: its size is taken
    (tmp_path / "src" / "images" / "empty.img").write_bytes(b"grown")
    with pytest.raises(RegistryError, match="changed while it was being pushed"):
        list(pieces)


class _Resp:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code, self.headers = status, headers

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise requests.HTTPError(f"{self.status_code} Client Error")


class _Auth:
    def __init__(self, token: str | None) -> None:
        self.token = token

    def get_auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class _Client:
    """Just what transport.upload uses of an oras client: a registry that answers as told and records the calls."""

    prefix, headers = "http", {"User-Agent": "test"}

    def __init__(self, patch: _Resp, token: str | None = "t0ken") -> None:
        self.patch, self.calls = patch, []  # type: list[tuple[str, str, dict[str, str], bytes]]
        self.auth = _Auth(token)

    def do_request(self, url: str, method: str, data: object = None, headers: dict[str, str] | None = None) -> _Resp:
        body = b"".join(data) if data is not None and not isinstance(data, bytes) else (data or b"")  # type: ignore[arg-type]
        self.calls.append((method, url, dict(headers or {}), body))
        if method == "POST":
            return _Resp(202, {"Location": "/v2/r/blobs/uploads/1"})
        return self.patch if method == "PATCH" else _Resp(201, {})

    def _get_location(self, resp: _Resp, container: object) -> str:
        return "http://reg" + resp.headers.get("Location", "")


class _Container:
    def upload_blob_url(self) -> str:
        return "reg/v2/r/blobs/uploads/"


def test_upload_streams_once_with_the_credentials_and_names_the_digest() -> None:
    client = _Client(_Resp(202, {"Location": "/v2/r/blobs/uploads/1?state=x", "Range": "0-9"}))
    digest, size = transport.upload(client, _Container(), iter([b"01234", b"56789"]))
    assert (digest, size) == (f"sha256:{hashlib.sha256(b'0123456789').hexdigest()}", 10)
    methods = [c[0] for c in client.calls]
    assert methods == ["POST", "PATCH", "PUT"]
    patch, put = client.calls[1], client.calls[2]
    assert patch[3] == b"0123456789" and patch[2]["Authorization"] == "Bearer t0ken"  # sent once, up front
    assert "digest=sha256" in put[1] and digest.removeprefix("sha256:") in put[1]


def test_upload_refusals() -> None:
    with pytest.raises(RegistryError, match="received 0-4 of a blob of 10 bytes"):
        transport.upload(_Client(_Resp(202, {"Location": "/u/1", "Range": "0-4"})), _Container(), iter([b"0" * 10]))
    with pytest.raises(requests.HTTPError):  # translated by registry.py's one place, as every HTTP error
        transport.upload(_Client(_Resp(401, {})), _Container(), iter([b"0123456789"]))
