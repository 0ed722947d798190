"""Secret environment variables: kept out of snapshots, stored files and argv, handed to the app after a restore.

The pattern is Lambda SnapStart's: the snapshot is taken from an app that never saw its secrets, and the app
reads them after the restore. Here a sandbox build starts the app with every `secret_env` name withheld, and each
launch gives the values to the new container only: the init (PID 1) serves them on an abstract Unix socket that
the Python helper reads in its after-restore step (any app can: connect to `@warmstart-secrets`, read
NAME=VALUE pairs separated by NUL bytes until EOF). Values come from the environment of the `warmstart` process
(preferred) or the spec's own `env`, and never reach the app record, the manifest, the cache key or a command
line (podman gets env through a 0600 file that exists for one call; docker through its API).

An app that needs a secret during warm-up opts in with `secrets_during_warmup = true`; its snapshot then holds
the values, so warmstart refuses to build it unless the snapshot is encrypted at rest (see crypt.py).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import mmap
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from warmstart.core import jvmhelper
from warmstart.core.spec import AppSpec
from warmstart.errors import SecretLeakError, UsageError
from warmstart.security.finder import occurrences

# Names of the secret variables (never values), set in the app's environment at build and at launch so the
# in-app helper knows what to ask the init for. Shared with warmstart_helper.py and sandbox-init (main.go).
NAMES_VAR = "WARMSTART_SECRET_NAMES"

# Shapes of credentials common enough to be refused on sight in process memory (the public formats each issuer
# documents): (literal prefixes, the whole shape). The prefixes are found in one pass with the needles (finder.py)
# and only their hits are matched against the shape: a regex search over hundreds of MB of pages would take minutes.
@functools.cache
def token_shapes() -> dict[str, tuple[tuple[bytes, ...], re.Pattern[bytes]]]:
    """Compiled on first use: builds and pushes scan, the restore path never does."""
    return {
        "AWS access key id": ((b"AKIA", b"ASIA"), re.compile(rb"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")),
        "GitHub token": ((b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"),
                         re.compile(rb"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36}(?![A-Za-z0-9])")),
        "Slack token": ((b"xoxa-", b"xoxb-", b"xoxp-", b"xoxr-", b"xoxs-"),
                        re.compile(rb"(?<![A-Za-z0-9])xox[abprs]-[0-9]{6,}-[0-9A-Za-z-]{10,}")),
        "Stripe live key": ((b"sk_live_", b"rk_live_"), re.compile(rb"(?<![A-Za-z0-9])[rs]k_live_[0-9A-Za-z]{24,}")),
        "PEM private key": ((b"-----BEGIN ",),
                            re.compile(rb"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----\r?\n"
                                       rb"[A-Za-z0-9+/]")),
    }


# Private keys published on purpose, as test fixtures that real programs link in, by the SHA-256 of their PEM body
# (base64, whitespace removed): finding one in a snapshot is reported, not refused. Go's net/http/httptest links
# net/http/internal/testcert, whose LocalhostKey the runtime turns into a "PRIVATE KEY" PEM block in memory
# (testcert.go testingKey); this is the key of Go 1.26's tree.
PUBLIC_KEYS = {
    "cb09f046e54aa7184ee42b82fff7650de4e95363ec03a0c671280a15aaf4a0bf":
        "Go's public test key net/http/internal/testcert.LocalhostKey (linked by net/http/httptest)",
}
PEM_SHAPE = "PEM private key"
PEM_END = b"-----END "
PEM_MAX = 16384  # longer than any PEM private key block


def public_key_name(data: bytes | mmap.mmap, at: int) -> str:
    """The name of the publicly known key whose PEM block starts at `at`, or ""."""
    header_end = data.find(b"\n", at, at + 100)
    end = data.find(PEM_END, at, at + PEM_MAX)
    if header_end < 0 or end < 0:
        return ""
    body = re.sub(rb"\s", b"", bytes(data[header_end + 1:end]))
    return PUBLIC_KEYS.get(hashlib.sha256(body).hexdigest(), "")


MIN_SECRET_LEN = 6  # shorter values would match by chance in megabytes of memory: refused where they are declared


def secret_values(
    spec: AppSpec, environ: Mapping[str, str] | None = None, *, required: bool = True
) -> dict[str, str]:
    """The value of each secret, from warmstart's own environment first, then the spec's env. Raises UsageError
    naming the first secret that has none, or (required=False) leaves it out: a build scans for the values it can
    see, though the app never got them (it could have another way: baked into the image, copied under another
    name, fetched during warm-up)."""
    environ = os.environ if environ is None else environ
    values = {}
    for name in spec.secret_env:
        value = environ.get(name, spec.env.get(name))
        if not required and (value is None or len(value) < MIN_SECRET_LEN):
            continue
        if value is None:
            raise UsageError(f"secret {name} of app {spec.name!r} has no value",
                             hint=f"export {name} in the environment of warmstart (secret values are never stored)")
        if len(value) < MIN_SECRET_LEN:
            raise UsageError(f"secret {name} of app {spec.name!r} is shorter than {MIN_SECRET_LEN} characters: it "
                             "cannot be told apart from chance bytes when snapshots are scanned for it")
        values[name] = value
    return values


def _names(spec: AppSpec) -> dict[str, str]:
    return {NAMES_VAR: ",".join(spec.secret_env)} if spec.secret_env else {}


def public_env(spec: AppSpec) -> dict[str, str]:
    """The spec's env without any secret."""
    return {k: v for k, v in spec.env.items() if k not in spec.secret_env}


def build_env(spec: AppSpec, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the build container gets: no secret unless the app opted in to secrets during warm-up."""
    helper = jvmhelper.build_env(spec)
    if spec.secrets_during_warmup:
        return {**public_env(spec), **secret_values(spec, environ), **_names(spec), **helper}
    return {**public_env(spec), **_names(spec), **helper}


def run_env(spec: AppSpec, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a launched container gets: everything, secrets included (a cold start reads them as usual; after a
    restore the init hands them to the helper)."""
    return {**public_env(spec), **secret_values(spec, environ), **_names(spec)}


def restore_env(spec: AppSpec, environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """What a restoring sandbox gets: its environment (no secret value: the engine records it, and `podman
    inspect` would show it) and, apart, the secret values its init receives by a channel the engine does not
    record (Engine.run's `secrets`) and serves to the restored app."""
    return {**public_env(spec), **_names(spec)}, secret_values(spec, environ)


def stored_spec(spec: AppSpec) -> AppSpec:
    """The spec as it may be written to disk (app record): secret names kept, their values dropped."""
    return dataclasses.replace(spec, env=public_env(spec))


# -- scanning a staged snapshot for secrets --------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    what: str  # "the value of secret API_KEY" or "a GitHub token"
    file: str  # relative to the snapshot dir
    offset: int
    where: str = ""  # for memory pages: "process 305, address 0x7ffd..., in 0x7ffd...-0x7ffe..."
    public: str = ""  # a publicly known key (PUBLIC_KEYS): reported, not a secret

    def describe(self) -> str:
        what = f"{self.what} ({self.public})" if self.public else self.what
        return f"{what} in {self.file} at byte {self.offset}" + (f" ({self.where})" if self.where else "")


def scan(root: Path, secrets: Mapping[str, str], *, shapes: bool = True, limit: int = 10) -> list[Finding]:
    """Every place in the files under `root` where a secret value (as UTF-8 or UTF-16, the encodings of Python and
    JVM strings) or a credential shape occurs; at most `limit` findings. Memory pages are located in the dumped
    process's address space through CRIU's pagemap images."""
    needles: list[tuple[str, bytes]] = []
    for name, value in secrets.items():
        needles.append((f"the value of secret {name}", value.encode()))
        needles.append((f"the value of secret {name} (UTF-16)", value.encode("utf-16-le")))
    findings: list[Finding] = []
    pages = _pages_index(root / "images")
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = str(path.relative_to(root))
        for what, offset, public in _search(path, needles, shapes=shapes):
            findings.append(Finding(what, rel, offset, _locate(pages.get(path.name), offset), public))
            if len(findings) >= limit:
                return findings
    return findings


def _search(path: Path, needles: list[tuple[str, bytes]], *, shapes: bool) -> Iterator[tuple[str, int, str]]:
    """(what, offset, public key name) for each needle and shape found in the file: the first hit of each, and for
    PEM keys the first that is not publicly known (after at most one that is). One pass finds every literal (the
    needles and the shapes' prefixes: finder.py); a shape's pattern is matched at its prefixes' hits only."""
    if path.stat().st_size == 0:
        return
    kinds = token_shapes() if shapes else {}
    literals: list[tuple[int, bytes]] = [(k, needle) for k, (_, needle) in enumerate(needles)]
    literals += [(len(needles) + k, prefix) for k, (prefixes, _) in enumerate(kinds.values()) for prefix in prefixes]
    found: dict[int, list[tuple[int, str]]] = {}  # needle or shape (numbered after the needles) -> (offset, public)
    done: set[int] = set()
    shape_list = list(kinds.items())
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for at, index in occurrences(path, [lit for _, lit in literals]):
            owner = literals[index][0]
            if owner in done:
                continue
            if owner < len(needles):
                found[owner] = [(at, "")]
                done.add(owner)
            else:
                what, (_, pattern) = shape_list[owner - len(needles)]
                if not pattern.match(data, at):  # type: ignore[call-overload,unused-ignore]  # an mmap is a buffer
                    continue
                public = public_key_name(data, at) if what == PEM_SHAPE else ""
                hits = found.setdefault(owner, [])
                if public and any(p for _, p in hits):
                    continue
                hits.append((at, public))
                if not public:
                    done.add(owner)
            if len(done) == len(needles) + len(shape_list):
                break
    for owner in sorted(found):
        what = needles[owner][0] if owner < len(needles) else f"a {shape_list[owner - len(needles)][0]}"
        for at, public in found[owner]:
            yield what, at, public


def values_named(names: list[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The values warmstart's environment has for `names` (a stored snapshot knows its secrets by name only)."""
    environ = os.environ if environ is None else environ
    return {n: environ[n] for n in names if len(environ.get(n, "")) >= MIN_SECRET_LEN}


def raise_if_found(findings: list[Finding], *, app: str, outcome: str = "no snapshot was published") -> None:
    """Raise for the findings that are secrets; publicly known keys (Finding.public) are not."""
    findings = [f for f in findings if not f.public]
    if not findings:
        return
    raise SecretLeakError(
        f"the snapshot of {app!r} holds a secret in clear: {findings[0].describe()}; {outcome}",
        details="\n".join(f.describe() for f in findings),
        hint="let the app read it after the restore (secret_env = [...] withholds it from the build), or opt in with "
             "secrets_during_warmup = true and an encryption key")


# -- CRIU page images: which process and address a byte of pages-N.img belongs to ----------------------------------
# Format (criu/include/magic.h, criu/protobuf-desc.c, images/pagemap.proto): a file starts with IMG_COMMON_MAGIC
# and the image's magic (u32 each), then entries, each a u32 length and a protobuf message. pagemap-PID.img holds a
# pagemap_head {pages_id = 1} then pagemap_entry {vaddr = 1, compat_nr_pages = 2, in_parent = 3, flags = 4,
# nr_pages = 5} (CRIU 3.17 moved the page count to the 64-bit field 5, leaving 0 in field 2); the pages of
# entries flagged PE_PRESENT are stored back to back in pages-<pages_id>.img.
PAGE_SIZE = 4096
PE_PARENT, PE_PRESENT = 1 << 0, 1 << 2  # criu/include/pagemap.h


@dataclass(frozen=True)
class _Run:
    pid: int
    vaddr: int
    offset: int  # in the pages file
    size: int


def _pages_index(images: Path) -> dict[str, list[_Run]]:
    """pages-N.img -> the runs of pages it holds, in order. Unreadable pagemaps are skipped (locations are a hint)."""
    index: dict[str, list[_Run]] = {}
    for pagemap in images.glob("pagemap-*.img") if images.is_dir() else ():
        try:
            pid = int(pagemap.stem.split("-", 1)[1])
            entries = list(_messages(pagemap.read_bytes()))
        except (OSError, ValueError):
            continue
        if not entries:
            continue
        pages_id = _fields(entries[0]).get(1, 0)
        runs = index.setdefault(f"pages-{pages_id}.img", [])
        offset = sum(r.size for r in runs)
        for raw in entries[1:]:
            f = _fields(raw)
            flags = f.get(4, PE_PRESENT if not f.get(3) else PE_PARENT)
            size = f.get(5, f.get(2, 0)) * PAGE_SIZE
            if flags & PE_PRESENT and not flags & PE_PARENT:  # PE_LAZY only marks pages a lazy restore may defer
                runs.append(_Run(pid, f.get(1, 0), offset, size))
                offset += size
    return index


def _locate(runs: list[_Run] | None, offset: int) -> str:
    for run in runs or ():
        if run.offset <= offset < run.offset + run.size:
            return (f"process {run.pid}, address {run.vaddr + offset - run.offset:#x}, in the dumped range "
                    f"{run.vaddr:#x}-{run.vaddr + run.size:#x}")
    return ""


def _messages(data: bytes) -> Iterator[bytes]:
    pos = 8  # two magics
    while pos + 4 <= len(data):
        n = int.from_bytes(data[pos:pos + 4], "little")
        pos += 4
        if pos + n > len(data):
            raise ValueError("truncated image")
        yield data[pos:pos + n]
        pos += n


def _fields(msg: bytes) -> dict[int, int]:
    """The varint fields of a protobuf message (the only kind pagemap entries have)."""
    out: dict[int, int] = {}
    pos = 0
    while pos < len(msg):
        key, pos = _varint(msg, pos)
        number, wire = key >> 3, key & 7
        if wire != 0:
            raise ValueError(f"unexpected wire type {wire}")
        out[number], pos = _varint(msg, pos)
    return out


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
