"""The manifest stored beside each snapshot: a fixed JSON shape with a schema_version, validated on every read.

It records what the snapshot was made from and how, never secret values: environment variables appear by name
only (the checkpoint itself holds process memory and is protected by file modes instead).

A manifest is outside input as soon as it can come from a registry or sit in a directory someone else could
write: every field is type-checked on load, names that become paths (app, tag, file names) are validated, and
the file list must name the checkpoint with a real sha256, so a manifest can never switch verification off.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

from warmstart.core.bounded import loads_json
from warmstart.core.sandbox import HOLDS_KEYS
from warmstart.core.spec import validate_app_name, validate_tag
from warmstart.errors import ManifestError, UsageError

FILENAME = "manifest.json"
CHECKPOINT_FILE = "checkpoint.tar"  # the engine's checkpoint archive (podman `checkpoint --export`, uncompressed)
SIGNATURE_FILE = "manifest.sig"  # beside the manifest: an Ed25519 signature over it (see signing.py)
SCHEMA_VERSION = 2  # the newest this reads; written only where it is needed (POST_COPY_SCHEMA), 1 otherwise
POST_COPY_SCHEMA = 2  # a post-copy snapshot lacks its lazy pages: a reader from before post-copy must refuse it
# A post-copy snapshot's `post_copy` (warmstart/restore/postcopy.py): where its missing pages are served, IPv4:port.
PAGE_SERVER_RE = re.compile(r"^(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}:[1-9]\d{0,4}$")
MAX_BYTES = 4 << 20  # a manifest is a few KB; anything larger is not one of ours
# A plain name inside the snapshot dir, or inside its CRIU image dir (sandbox snapshots keep it unpacked).
FILE_NAME_RE = re.compile(r"^(?:images/)?[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
SANDBOX_META = "sandbox.json"  # warmstart.core.sandbox.META_FILE: what a sandbox restore needs besides the images
CRI_CONFIG, CRI_SPEC = "config.dump", "spec.dump"  # a "cri" snapshot's (cache/kubeimport.py): kept as imported
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# `holds`: counted by warmstart-init before the dump (sandbox-init/tree.go, its sandbox.json Meta).


class FileEntry(TypedDict):
    size: int
    sha256: str


@dataclass
class Manifest:
    app: str
    tag: str  # the snapshot's name within the app (default: the key's first 12 hex digits)
    key: str  # cache key: sha256 of key_inputs
    created_at: str  # ISO 8601, UTC
    warmstart_version: str
    engine: dict[str, str]  # name, version, runtime, runtime_version
    image: dict[str, str]  # ref, id
    spec: dict[str, Any]  # the AppSpec with env reduced to names
    host: dict[str, Any] = field(default_factory=dict)  # HostFacts of the machine that made it
    key_inputs: dict[str, Any] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)  # every stored file but this one
    timings: dict[str, float] = field(default_factory=dict)
    encryption: dict[str, str] = field(default_factory=dict)  # algorithm and key_id when the files are encrypted
    # {"page_server": "ADDRESS:PORT"} for a post-copy migration snapshot (postcopy.py), {} otherwise
    post_copy: dict[str, str] = field(default_factory=dict)
    # What the dumped process tree holds that a user may want to know (sandbox snapshots; HOLDS_KEYS): counts
    # only. Readers from before this field ignore it, so it needs no schema bump.
    holds: dict[str, int] = field(default_factory=dict)
    schema_version: int = 1

    @property
    def ref(self) -> str:
        return f"{self.app}:{self.tag}"

    @property
    def mode(self) -> str:
        """"sandbox" (restored by warmstart-init in a fresh container), "container" (the engine's own
        whole-container checkpoint archive) or "cri" (a Kubernetes checkpoint archive, imported: restored by a CRI
        runtime from an exported checkpoint image); manifests from before modes existed are "container"."""
        return self.engine.get("mode", "container")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: Path) -> Manifest:
        from warmstart.core.safefs import read_owned  # no symlinks, our own regular file

        try:
            raw = loads_json(read_owned(path, limit=MAX_BYTES))
        except (OSError, ValueError) as exc:
            raise ManifestError(f"cannot read snapshot manifest {path}: {exc}") from exc
        return cls.from_raw(raw, source=str(path))

    @classmethod
    def from_raw(cls, raw: Any, *, source: str) -> Manifest:
        """A Manifest from decoded JSON, or ManifestError saying which field is wrong and how."""
        if not isinstance(raw, dict):
            raise ManifestError(f"snapshot manifest {source} is not a JSON object")
        version = raw.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ManifestError(f"snapshot manifest {source} has no integer schema_version")
        if version > SCHEMA_VERSION:
            raise ManifestError(
                f"snapshot manifest {source} has schema_version {version}, newer than this warmstart reads "
                f"({SCHEMA_VERSION})",
                hint="upgrade warmstart, or rebuild the snapshot with this version",
            )

        _check_fields(raw, source)
        mode = raw["engine"].get("mode", "container")
        _check_files(raw.get("files", {}), mode=mode, source=source)
        post_copy = raw.get("post_copy", {})
        if post_copy and (set(post_copy) != {"page_server"} or not isinstance(post_copy["page_server"], str)
                          or not PAGE_SERVER_RE.match(post_copy["page_server"])):
            raise ManifestError(f"snapshot manifest {source}: post_copy: expected {{\"page_server\": \"IPv4:port\"}}")
        if post_copy and (version < POST_COPY_SCHEMA or mode != "sandbox"):
            raise ManifestError(f"snapshot manifest {source}: post_copy needs schema_version {POST_COPY_SCHEMA} and "
                                "a sandbox snapshot")
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


def _check_fields(raw: dict[str, Any], source: str) -> None:
    """Every top-level field has its type, and names and times their syntax."""

    def bad(name: str, expected: str) -> ManifestError:
        got = type(raw.get(name)).__name__ if name in raw else "nothing"
        return ManifestError(f"snapshot manifest {source}: {name}: expected {expected}, got {got}")

    for name in ("app", "tag", "key", "created_at", "warmstart_version"):
        if not isinstance(raw.get(name), str):
            raise bad(name, "a string")
    for name in ("engine", "image", "spec"):
        if not isinstance(raw.get(name), dict):
            raise bad(name, "an object")
    for name in ("host", "key_inputs", "files", "timings", "encryption", "post_copy", "holds"):
        if not isinstance(raw.get(name, {}), dict):
            raise bad(name, "an object")
    if not all(isinstance(v, str) for d in (raw["engine"], raw["image"], raw.get("encryption", {}))
               for v in d.values()):
        raise ManifestError(f"snapshot manifest {source}: engine, image and encryption must hold strings only")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw.get("timings", {}).values()):
        raise bad("timings", "an object of numbers")
    holds = raw.get("holds", {})
    if not set(holds) <= set(HOLDS_KEYS) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 31 for v in holds.values()):
        raise bad("holds", f"an object of counts ({', '.join(HOLDS_KEYS)})")
    try:
        validate_app_name(raw["app"])
        validate_tag(raw["tag"])
    except UsageError as exc:
        raise ManifestError(f"snapshot manifest {source}: {exc}") from None
    try:
        datetime.fromisoformat(raw["created_at"])
    except ValueError:
        raise ManifestError(f"snapshot manifest {source}: created_at: expected an ISO 8601 time, got "
                            f"{raw['created_at'][:40]!r}") from None


def _check_files(files: dict[str, Any], *, mode: str, source: str) -> None:
    """The engine mode is known, the files a snapshot of that mode needs are listed, and each entry is a plain name
    with a size and a digest."""
    if mode not in ("sandbox", "container", "cri"):
        raise ManifestError(f"snapshot manifest {source}: engine.mode: expected sandbox, container or cri, got "
                            f"{mode[:40]!r}")
    if mode == "container" and CHECKPOINT_FILE not in files:
        raise ManifestError(f"snapshot manifest {source}: files: does not list {CHECKPOINT_FILE}")
    if mode == "sandbox" and (SANDBOX_META not in files or not any(n.startswith("images/") for n in files)):
        raise ManifestError(f"snapshot manifest {source}: files: a sandbox snapshot lists {SANDBOX_META} and "
                            "its CRIU images")
    if mode == "cri" and (not {CRI_CONFIG, CRI_SPEC} <= set(files) or not any(n.startswith("images/") for n in files)):
        raise ManifestError(f"snapshot manifest {source}: files: a cri snapshot lists {CRI_CONFIG}, {CRI_SPEC} and "
                            "its CRIU images")
    for name, entry in files.items():
        if not FILE_NAME_RE.match(name) or name == FILENAME:
            raise ManifestError(f"snapshot manifest {source}: files: {name[:80]!r} is not a plain file name")
        if (not isinstance(entry, dict) or not isinstance(entry.get("size"), int)
                or isinstance(entry.get("size"), bool) or entry["size"] < 0
                or not isinstance(entry.get("sha256"), str) or not SHA256_RE.match(entry["sha256"])):
            raise ManifestError(f"snapshot manifest {source}: files.{name}: expected "
                                "{\"size\": bytes, \"sha256\": 64 hex digits}")
