"""Signed snapshots: an Ed25519 signature (pyca/cryptography) over the manifest, which holds every file's sha256.

Verifying the signature and then the files against the manifest (the store's `verify`) covers the whole snapshot.
What is signed is the manifest's canonical JSON (sorted keys, no whitespace), so it survives a trip through a
registry or a re-serialisation. The signature sits beside the manifest (cache/manifest.py SIGNATURE_FILE):

    {"schema_version": 1, "algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64>"}

Keys are files: a private key in PKCS#8 PEM (0600; `warmstart key generate` writes one) to sign, public keys in
SubjectPublicKeyInfo PEM to trust. Paths come from flags or the environment, never key material itself.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from warmstart.errors import SignatureError, UsageError

SCHEMA_VERSION = 1
SIGNING_KEY_ENV = "WARMSTART_SIGNING_KEY"  # path of the private key build/push sign with
TRUSTED_KEYS_ENV = "WARMSTART_TRUSTED_KEYS"  # colon-separated paths of trusted public keys
REQUIRE_ENV = "WARMSTART_REQUIRE_SIGNED"  # "1": refuse snapshots without a valid trusted signature
MAX_KEY_BYTES = 1 << 14


def canonical(manifest: Any) -> bytes:
    """The bytes a signature covers: the manifest dataclass as canonical JSON."""
    return json.dumps(asdict(manifest), sort_keys=True, separators=(",", ":")).encode()


def key_id(public_raw: bytes) -> str:
    import hashlib  # here: `run` reaches its first engine call without it (2 ms)
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True)
class TrustPolicy:
    """What `run`, `serve` and `pull` accept: with `require`, only snapshots signed by one of `keys`. Without it,
    a signature that is present is still checked when keys are given (a bad one is refused; none is accepted)."""

    keys: tuple[Path, ...] = ()
    require: bool = False

    @classmethod
    def from_sources(cls, *, keys: list[Path] | None = None, require: bool = False) -> TrustPolicy:
        """Flags first, then $WARMSTART_TRUSTED_KEYS / $WARMSTART_REQUIRE_SIGNED."""
        env_keys = [Path(p) for p in os.environ.get(TRUSTED_KEYS_ENV, "").split(":") if p]
        env_require = os.environ.get(REQUIRE_ENV, "").lower() in ("1", "true", "yes")
        policy = cls(keys=tuple(keys or env_keys), require=require or env_require)
        if policy.require and not policy.keys:
            raise UsageError("--require-signed needs at least one trusted public key",
                             hint=f"--trust-key FILE, or ${TRUSTED_KEYS_ENV}=FILE[:FILE...]")
        return policy

    @property
    def active(self) -> bool:
        return bool(self.keys) or self.require


def signing_key(flag: Path | None) -> Path | None:
    """The private key to sign with: the flag, else $WARMSTART_SIGNING_KEY, else none (unsigned)."""
    if flag is not None:
        return flag
    env = os.environ.get(SIGNING_KEY_ENV)
    return Path(env) if env else None


NO_POLICY = TrustPolicy()  # signatures unchecked: no trusted key, nothing required


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_KEY_BYTES:
        raise UsageError(f"{what} {path} is not a key file (over {MAX_KEY_BYTES} bytes)")
    return data


def generate(path: Path) -> tuple[Path, str]:
    """Write a new Ed25519 private key to `path` (0600, refusing to overwrite) and its public key to PATH.pub;
    returns the public key's path and id."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key()
    pub_pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pub_path = path.with_name(path.name + ".pub")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    pub_path.write_bytes(pub_pem)
    return pub_path, key_id(raw)


def load_signing_key(key_path: Path) -> Any:
    """The Ed25519 private key at `key_path`, or UsageError saying why not (checked before a build starts)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(_read_key_file(key_path, "signing key"), password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"signing key {key_path} is not an unencrypted PEM private key: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"signing key {key_path} is not an Ed25519 key (`warmstart key generate` makes one)")
    return key


def sign(manifest: Any, key_path: Path) -> str:
    """The SIGNATURE_FILE text for `manifest`, signed with the private key at `key_path`."""
    from cryptography.hazmat.primitives import serialization

    key = load_signing_key(key_path)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    doc = {"schema_version": SCHEMA_VERSION, "algorithm": "ed25519", "key_id": key_id(raw),
           "signature": base64.b64encode(key.sign(canonical(manifest))).decode()}
    return json.dumps(doc, indent=2) + "\n"


def _trusted(policy: TrustPolicy) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: dict[str, Any] = {}
    for path in policy.keys:
        try:
            key = serialization.load_pem_public_key(_read_key_file(path, "trusted key"))
        except ValueError as exc:
            raise UsageError(f"trusted key {path} is not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise UsageError(f"trusted key {path} is not an Ed25519 public key")
        keys[key_id(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))] = key
    return keys


def check(manifest: Any, signature_text: str | None, policy: TrustPolicy, *, ref: str) -> str:
    """Apply `policy` to a snapshot's manifest and signature (None: unsigned). Returns the signing key's id ("" when
    unchecked); raises SignatureError saying what is wrong."""
    if not policy.active:
        return ""
    if signature_text is None:
        if policy.require:
            raise SignatureError(f"snapshot {ref} is not signed, and signatures are required")
        return ""
    try:
        doc = json.loads(signature_text)
        if not isinstance(doc, dict) or doc.get("algorithm") != "ed25519":
            raise ValueError("not an ed25519 signature document")
        if not isinstance(doc.get("schema_version"), int) or doc["schema_version"] > SCHEMA_VERSION:
            raise ValueError(f"schema_version {doc.get('schema_version')!r} is newer than this warmstart reads")
        signature = base64.b64decode(str(doc["signature"]), validate=True)
        kid = str(doc["key_id"])
    except (ValueError, KeyError) as exc:
        raise SignatureError(f"snapshot {ref} has an unreadable signature file: {exc}") from exc
    from cryptography.exceptions import InvalidSignature

    key = _trusted(policy).get(kid)
    if key is None:
        raise SignatureError(f"snapshot {ref} is signed by key {kid}, which is not trusted here",
                             hint="add its public key with --trust-key (or $WARMSTART_TRUSTED_KEYS)")
    try:
        key.verify(signature, canonical(manifest))
    except InvalidSignature:
        raise SignatureError(f"snapshot {ref}: the signature of key {kid} does not match its manifest (tampered "
                             "or re-written after signing)") from None
    return kid
