"""Sharing snapshots through any OCI registry, as OCI artifacts (pushed and pulled with oras-py).

Why an artifact and not podman's `checkpoint --create-image` images: the artifact carries exactly the files of a
cache entry (our manifest.json and the engine's checkpoint.tar), so a pulled snapshot is verified against the
same sha256 digests as a local one, works the same for every engine (docker cannot import podman's checkpoint
images), and restores through the same uncompressed-file path as a local build. Any registry that stores OCI
image manifests with custom media types serves it (distribution 2.8, Harbor, ECR, GHCR, Zot...).

Artifact shape: an OCI image manifest whose config media type is CONFIG_MEDIA_TYPE (the artifact type), two
layers (manifest.json, checkpoint.tar, each annotated with its file name) plus manifest.sig when the snapshot is
signed, and io.warmstart.* annotations.

Credentials come from the usual places, never from the command line: $WARMSTART_REGISTRY_USER and
$WARMSTART_REGISTRY_PASSWORD, else the auth files `podman login` and `docker login` write.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmstart.cache import transport
from warmstart.cache.manifest import CHECKPOINT_FILE, FILENAME, SIGNATURE_FILE, Manifest
from warmstart.cache.store import Snapshot, SnapshotStore
from warmstart.core import safefs
from warmstart.core.bounded import loads_json
from warmstart.errors import ManifestError, RegistryError
from warmstart.security.secretenv import raise_if_found, scan, values_named
from warmstart.security.signing import NO_POLICY, TrustPolicy, check

CONFIG_MEDIA_TYPE = "application/vnd.warmstart.snapshot.config.v1+json"
OCI_MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"  # OCI image-spec manifest.md
# A sandbox snapshot's files (CRIU images, rootfs.tar, sandbox.json), packed for the trip.
TRANSPORT_FILE = "snapshot.tar"
LAYER_MEDIA_TYPES = {
    FILENAME: "application/vnd.warmstart.manifest.v1+json",
    CHECKPOINT_FILE: "application/vnd.warmstart.checkpoint.v1.tar",  # container mode: the engine's archive
    TRANSPORT_FILE: "application/vnd.warmstart.snapshot.v1.tar",  # sandbox mode
    SIGNATURE_FILE: "application/vnd.warmstart.signature.v1+json",  # optional: see signing.py
}
PAYLOAD = {"container": CHECKPOINT_FILE, "sandbox": TRANSPORT_FILE, "cri": TRANSPORT_FILE}  # mode -> 2nd layer's file
TITLE = "org.opencontainers.image.title"  # OCI image-spec annotations.md: a layer's file name
CREATED = "org.opencontainers.image.created"
USER_ENV, PASSWORD_ENV = "WARMSTART_REGISTRY_USER", "WARMSTART_REGISTRY_PASSWORD"
# The most a pull downloads, all layers together: a descriptor may not declare more, and a blob that runs past
# its declared size is cut off there (a registry cannot fill the disk by lying).
MAX_ARTIFACT_ENV = "WARMSTART_MAX_ARTIFACT_SIZE"
MAX_ARTIFACT_BYTES = 32 << 30
SMALL_LAYER_BYTES = {FILENAME: 4 << 20, SIGNATURE_FILE: 64 << 10}  # the manifest.json and manifest.sig layers
# The reference grammar of the OCI distribution spec (distribution/reference/regexp.go).
_REGISTRY_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                          r"|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?$")
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str

    @classmethod
    def parse(cls, ref: str, *, default_tag: str | None = None, untagged: bool = False) -> Reference:
        """HOST[:PORT]/REPOSITORY[:TAG], each part checked against the OCI distribution grammar (a reference is
        user input, and its parts end up in URLs). `untagged`: a missing tag is left empty (pull resolves it)."""
        if "/" not in ref:
            raise RegistryError(f"invalid registry reference {ref[:200]!r}: expected HOST[:PORT]/REPOSITORY[:TAG]")
        registry, _, rest = ref.partition("/")
        repository, sep, tag = rest.rpartition(":")
        if not sep or "/" in tag:
            repository, tag = rest, ""
        tag = tag or default_tag or ""
        if not _REGISTRY_RE.match(registry):
            raise RegistryError(f"invalid registry reference {ref[:200]!r}: {registry[:100]!r} is not a HOST[:PORT]")
        if not _REPOSITORY_RE.match(repository) or len(repository) > 255:
            raise RegistryError(f"invalid registry reference {ref[:200]!r}: repository {repository[:100]!r} must be "
                                "lowercase path components of letters, digits and separators (. _ __ -)")
        if not tag and untagged:
            return cls(registry, repository, "")
        if not tag:
            raise RegistryError(f"invalid registry reference {ref[:200]!r}: no tag")
        if not _TAG_RE.match(tag):
            raise RegistryError(f"invalid registry reference {ref[:200]!r}: tag {tag[:100]!r} must be up to 128 "
                                "letters, digits, '_', '.' or '-', not starting with '.' or '-'")
        return cls(registry, repository, tag)

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"

    @property
    def loopback(self) -> bool:
        host = self.registry.rsplit(":", 1)[0]
        return host in ("localhost", "[::1]") or host.startswith("127.")


@dataclass(frozen=True)
class PushResult:
    snapshot: str
    reference: str
    digest: str
    size_bytes: int


@dataclass(frozen=True)
class PullResult:
    snapshot: str
    reference: str
    path: str
    size_bytes: int


@dataclass(frozen=True)
class Layer:
    """One layer of a pulled artifact as its OCI descriptor declares it."""

    digest: str
    size: int


def _auth_files() -> list[Path]:
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/containers/{os.getuid()}"
    files += [
        Path(runtime) / "containers" / "auth.json" if os.environ.get("XDG_RUNTIME_DIR")
        else Path(runtime) / "auth.json",
        Path.home() / ".config" / "containers" / "auth.json",
        Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json",
    ]
    return files


def credentials(registry: str) -> tuple[str, str] | None:
    """(user, password) for `registry`: from the environment, else the first auth file with an entry for it, or
    whose credential helper (`credHelpers` for the host, else `credsStore`: docker's config) has one."""
    if os.environ.get(USER_ENV) and os.environ.get(PASSWORD_ENV):
        return os.environ[USER_ENV], os.environ[PASSWORD_ENV]
    for path in _auth_files():
        try:
            config = loads_json(safefs.read_regular(path, limit=1 << 20))
        except (OSError, ValueError):
            continue
        if not isinstance(config, dict):
            continue
        helpers = config.get("credHelpers")
        helper = (helpers.get(registry) if isinstance(helpers, dict) else None) or config.get("credsStore")
        if isinstance(helper, str) and helper:
            found = _from_helper(helper, registry)
            if found is not None:
                return found
        auths = config.get("auths", {})
        if not isinstance(auths, dict):
            continue
        entry = auths.get(registry) or auths.get(f"https://{registry}") or auths.get(f"http://{registry}")
        if isinstance(entry, dict) and entry.get("auth"):
            try:
                user, sep, password = base64.b64decode(str(entry["auth"]), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                sep = ""
            if not sep:
                raise RegistryError(f"the credentials for {registry} in {path} are malformed (expected base64 of "
                                    "USER:PASSWORD)", hint=f"log in again: podman login {registry}")
            return user, password
    return None


def _from_helper(helper: str, registry: str) -> tuple[str, str] | None:
    """Ask docker-credential-HELPER for `registry` (the docker credential helper protocol: `get`, the server URL on
    stdin, {"Username", "Secret"} on stdout). None when it has nothing for the host; an error when it fails."""
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", helper):
        raise RegistryError(f"credential helper name {helper[:60]!r} is not a plain program name")
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        raise RegistryError(f"credential helper docker-credential-{helper} is not on PATH",
                            hint=f"install it, or set ${USER_ENV} and ${PASSWORD_ENV}")
    import subprocess

    for server in (registry, f"https://{registry}"):
        try:
            proc = subprocess.run([program, "get"], input=server, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RegistryError(f"credential helper docker-credential-{helper} failed: {exc}") from exc
        if proc.returncode != 0:
            if "credentials not found" in (proc.stdout + proc.stderr).lower():
                continue
            raise RegistryError(f"credential helper docker-credential-{helper} failed for {registry}: "
                                f"{(proc.stderr or proc.stdout).strip()[:200]}")
        try:
            answer = loads_json(proc.stdout)
            return str(answer["Username"]), str(answer["Secret"])
        except (ValueError, KeyError, TypeError):
            raise RegistryError(f"credential helper docker-credential-{helper} answered something else than "
                                '{"Username": ..., "Secret": ...}') from None
    return None


class Registry:
    """One registry host, with credentials resolved once."""

    def __init__(self, ref: Reference, *, insecure: bool | None = None) -> None:
        import oras.client  # imported here: only push/pull need it
        import requests

        self.ref = ref
        self.insecure = ref.loopback if insecure is None else insecure  # like docker: loopback may be plain HTTP
        scheme = "http" if self.insecure else "https"
        try:
            challenge = requests.get(f"{scheme}://{ref.registry}/v2/", timeout=10).headers.get("Www-Authenticate", "")
        except requests.RequestException as exc:
            raise RegistryError(f"registry {ref.registry} cannot be reached: {exc}") from exc
        backend = "basic" if challenge.lower().startswith("basic") else "token"
        self.client = oras.client.OrasClient(insecure=self.insecure, auth_backend=backend)
        creds = credentials(ref.registry)
        if creds:
            self.client.auth.set_basic_auth(*creds)
        elif challenge.lower().startswith("basic"):
            raise RegistryError(
                f"registry {ref.registry} needs credentials and none were found",
                hint=f"`podman login {ref.registry}` (or docker login), or set ${USER_ENV} and ${PASSWORD_ENV}",
            )

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """oras/requests errors become RegistryError. oras-py also prints its own error lines to stderr, through
        a process-wide handler: silenced for the call only (warmstart reports errors itself, once)."""
        import oras.logger
        import requests

        saved = oras.logger.logger.handler
        oras.logger.logger.handler = lambda msg: None
        try:
            yield
        except RegistryError:
            raise
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            if status in (401, 403):
                raise RegistryError(f"{action} {self.ref} failed: authentication refused",
                                    hint="check the credentials (podman login)") from exc
            raise RegistryError(f"{action} {self.ref} failed: HTTP {status}") from exc
        except (requests.RequestException, ValueError, KeyError, OSError) as exc:
            text = str(exc)
            if any(w in text for w in ("401", "403", "Unauthorized", "UNAUTHORIZED", "authentication required")):
                raise RegistryError(f"{action} {self.ref} failed: authentication refused",
                                    hint="check the credentials (podman login)") from exc
            if "Not Found" in text or "MANIFEST_UNKNOWN" in text or "manifest unknown" in text:
                raise RegistryError(f"{action} {self.ref} failed: no such reference in the registry") from exc
            first = text.splitlines()[0] if text else type(exc).__name__
            raise RegistryError(f"{action} {self.ref} failed: {first}") from exc
        finally:
            oras.logger.logger.handler = saved

    def push(self, snapshot: Snapshot, *, progress: Callable[[str], None] = lambda _: None) -> PushResult:
        """Push manifest.json and the payload: the engine's archive (container mode) or, for a sandbox snapshot,
        its files packed into one tar as they are sent (transport.py: one pass, nothing written here)."""
        m = snapshot.manifest
        names = m.spec.get("secret_env", [])
        raise_if_found(scan(snapshot.path, values_named(names if isinstance(names, list) else [])), app=m.app,
                       outcome="nothing was pushed")
        annotations = {"io.warmstart.app": m.app, "io.warmstart.tag": m.tag, "io.warmstart.key": m.key,
                       "io.warmstart.schema_version": str(m.schema_version), CREATED: m.created_at}
        payload = PAYLOAD[m.mode]
        signature = snapshot.signature()
        packed = m.mode in ("sandbox", "cri")  # many files: packed into one tar
        pieces = (transport.tar_stream(snapshot.path, m.files) if packed
                  else transport.file_stream(snapshot.path / payload))
        size = snapshot.size
        progress(f"pushing {snapshot.manifest.ref} to {self.ref} ({size / 1e6:.1f} MB)")
        started = time.monotonic()
        with self._translated("push to"):
            container = self.client.get_container(str(self.ref))
            layers = [self._blob(container, FILENAME, [(snapshot.path / FILENAME).read_bytes()]),
                      self._blob(container, payload, pieces)]
            if signature is not None:
                layers.append(self._blob(container, SIGNATURE_FILE, [signature.encode()]))
            config = self._blob(container, "", [b"{}"])
            resp = self.client.upload_manifest({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST_TYPE, "config": config, "layers": layers,
                "annotations": annotations}, container)
            resp.raise_for_status()
            digest = resp.headers.get("Docker-Content-Digest", "")
        seconds = time.monotonic() - started
        progress(f"pushed {size / 1e6:.1f} MB in {seconds:.1f}s ({size / 1e6 / max(seconds, 1e-3):.0f} MB/s)")
        return PushResult(snapshot=m.ref, reference=str(self.ref), digest=digest, size_bytes=snapshot.size)

    def _blob(self, container: Any, title: str, pieces: Iterable[bytes]) -> dict[str, Any]:
        """Upload one blob; its descriptor (a layer titled with its file name, or the config when untitled)."""
        digest, size = transport.upload(self.client, container, pieces)
        if not title:
            return {"mediaType": CONFIG_MEDIA_TYPE, "digest": digest, "size": size}
        return {"mediaType": LAYER_MEDIA_TYPES[title], "digest": digest, "size": size,
                "annotations": {TITLE: title}}

    def push_image(self, *, config: tuple[dict[str, Any], Path], layers: list[tuple[dict[str, Any], Path]],
                   manifest: dict[str, Any]) -> str:
        """Push an ordinary OCI image (blobs given as descriptor and file, then its manifest); its digest."""
        container = self.client.get_container(str(self.ref))
        with self._translated("push to"):
            for descriptor, path in (config, *layers):  # the same one-pass upload as push's
                sent = transport.upload(self.client, container, transport.file_stream(path))
                if sent != (descriptor["digest"], descriptor["size"]):
                    raise RegistryError(f"{path.name} changed since it was hashed: the image was not pushed")
            resp = self.client.upload_manifest(manifest, container)
            resp.raise_for_status()
            return str(resp.headers.get("Docker-Content-Digest", ""))

    def _manifest(self, stage: Path, layers: dict[str, Layer]) -> Manifest:
        """The pulled manifest.json, which says what the payload must be."""
        try:
            manifest = Manifest.load(stage / FILENAME)
        except ManifestError as exc:
            raise RegistryError(f"pulled snapshot {self.ref} has a bad manifest: {exc}") from exc
        if PAYLOAD[manifest.mode] not in layers:
            raise RegistryError(f"pulled snapshot {self.ref} is a {manifest.mode} snapshot without its "
                                f"{PAYLOAD[manifest.mode]}: refused")
        return manifest

    def _unpacked(self, layer: Layer, stage: Path, manifest: Manifest) -> dict[str, str]:
        """Stream a sandbox snapshot's transport tar into staging, each file verified as it is written; the
        manifest's digests, now vouched for."""
        if manifest.mode not in ("sandbox", "cri"):
            raise RegistryError(f"pulled snapshot {self.ref} is a {manifest.mode} snapshot with a {TRANSPORT_FILE}: "
                                "refused")
        with self._translated("pull from"), \
                self.client.get_blob(str(self.ref), layer.digest, stream=True) as resp:
            resp.raise_for_status()
            transport.unpack(resp.iter_content(chunk_size=transport.READ), size=layer.size, digest=layer.digest,
                             stage=stage, files=manifest.files, what=f"pulled snapshot {self.ref}")
        return {name: str(entry["sha256"]) for name, entry in manifest.files.items()}

    def _download(self, layer: Layer, dest: Path, *, name: str) -> str:
        """Stream one blob to `dest` (a new 0600 file), hashing as it comes: refused as soon as it runs past its
        declared size, and at the end unless its size and sha256 are the declared ones. Returns the sha256."""
        import hashlib

        digest = hashlib.sha256()
        got = 0
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out, self._translated("pull from"), \
                self.client.get_blob(str(self.ref), layer.digest, stream=True) as resp:
            resp.raise_for_status()
            for chunk in resp.iter_content(chunk_size=1 << 20):
                got += len(chunk)
                if got > layer.size:
                    raise RegistryError(f"pulled {name} from {self.ref} runs past its declared {layer.size} bytes: "
                                        "refused")
                digest.update(chunk)
                out.write(chunk)
        if got != layer.size:
            raise RegistryError(f"pulled {name} from {self.ref} is {got} bytes, its descriptor says {layer.size}: "
                                "refused")
        if f"sha256:{digest.hexdigest()}" != layer.digest:
            raise RegistryError(f"pulled {name} from {self.ref} does not match its digest {layer.digest}: refused")
        return digest.hexdigest()

    def resolve_tag(self) -> None:
        """A reference without a tag (`pull HOST/REPO`): its only tag, or an error listing the tags there are (a
        snapshot's tag names the app and key it holds; there is no meaningful "latest")."""
        if self.ref.tag:
            return
        repo = f"{self.ref.registry}/{self.ref.repository}"
        with self._translated("listing tags of"):
            tags = sorted(t for t in self.client.get_tags(f"{repo}:x") if isinstance(t, str) and _TAG_RE.match(t))
        if not tags:
            raise RegistryError(f"{repo} has no tags: nothing to pull")
        if len(tags) > 1:
            shown = ", ".join(tags[:10]) + (f" (+{len(tags) - 10} more)" if len(tags) > 10 else "")
            raise RegistryError(f"{repo} has {len(tags)} tags ({shown}): give one as {repo}:TAG")
        self.ref = Reference(self.ref.registry, self.ref.repository, tags[0])

    def pull(self, store: SnapshotStore, *, trust: TrustPolicy | None = None,
             progress: Callable[[str], None] = lambda _: None) -> PullResult:
        """Download into staging, verify every blob against the OCI manifest and our manifest and the signature
        against `trust`, then publish."""
        self.resolve_tag()
        with self._translated("pull from"):
            oci = self.client.get_manifest(str(self.ref))
        layers = _snapshot_layers(oci, str(self.ref), limit=max_artifact_bytes())
        # Staging is named by us, not by the artifact, and each blob is fetched once, by a validated digest, to a
        # file name of ours: nothing the registry serves decides a path (oras's own pull would re-fetch the
        # manifest and name files, even unpack archives, by its annotations).
        with store.staging("pull") as stage:
            digests = {FILENAME: self._download(layers[FILENAME], stage / FILENAME, name=FILENAME)}
            manifest = self._manifest(stage, layers)  # first: it says what the payload must be
            for name, layer in layers.items():
                started = time.monotonic()
                if name == TRANSPORT_FILE:
                    digests.update(self._unpacked(layer, stage, manifest))
                elif name != FILENAME:
                    digests[name] = self._download(layer, stage / name, name=name)
                progress(f"pulled {name} ({layer.size / 1e6:.1f} MB in {time.monotonic() - started:.1f}s)")
            if manifest.mode not in ("sandbox", "cri") and set(manifest.files) != {CHECKPOINT_FILE}:
                raise RegistryError(f"pulled snapshot {self.ref} lists files {sorted(manifest.files)[:5]}, expected "
                                    f"exactly {CHECKPOINT_FILE}: refused")
            for name, entry in manifest.files.items():
                if digests.get(name) != entry["sha256"]:
                    raise RegistryError(f"pulled {name} from {self.ref} does not match the snapshot manifest: refused")
            signature = (stage / SIGNATURE_FILE).read_text(errors="replace") if SIGNATURE_FILE in layers else None
            check(manifest, signature, trust or NO_POLICY, ref=str(self.ref))  # before anything becomes visible
            snapshot = store.publish(stage, manifest, verified=True)
        return PullResult(snapshot=snapshot.ref, reference=str(self.ref), path=str(snapshot.path),
                          size_bytes=snapshot.size)


_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def _snapshot_layers(oci: Any, ref: str, *, limit: int = MAX_ARTIFACT_BYTES) -> dict[str, Layer]:
    """file name -> blob digest of a warmstart artifact's OCI manifest, which must be exactly our shape: our
    config media type, one layer per file of LAYER_MEDIA_TYPES titled with its name, sha256 digests, and declared
    sizes within `limit` (all together) and SMALL_LAYER_BYTES."""
    config = oci.get("config") if isinstance(oci, dict) else None
    if not isinstance(config, dict) or config.get("mediaType") != CONFIG_MEDIA_TYPE:
        found = config.get("mediaType") if isinstance(config, dict) else None
        raise RegistryError(f"{ref} is not a warmstart snapshot (config media type {str(found)[:100]!r})")
    raw_layers = oci.get("layers")
    if not isinstance(raw_layers, list) or len(raw_layers) not in (2, 3):
        raise RegistryError(f"{ref} does not hold exactly manifest.json and one payload (and a signature): refused")
    layers: dict[str, Layer] = {}
    for layer in raw_layers:
        title = layer.get("annotations", {}).get(TITLE) if isinstance(layer, dict) and isinstance(
            layer.get("annotations"), dict) else None
        digest = layer.get("digest") if isinstance(layer, dict) else None
        if title not in LAYER_MEDIA_TYPES or title in layers:
            raise RegistryError(f"{ref} does not hold exactly manifest.json and one payload: found a layer titled "
                                f"{str(title)[:100]!r}: refused")
        if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
            raise RegistryError(f"{ref}: layer {title} has no valid sha256 digest: refused")
        size = layer.get("size")
        most = SMALL_LAYER_BYTES.get(title, 1 << 62)  # the payload's bound is the artifact's, checked below
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= most:
            raise RegistryError(f"{ref}: layer {title} declares size {str(size)[:40]}, expected 0 to {most} bytes: "
                                "refused")
        layers[title] = Layer(digest, size)
    if FILENAME not in layers or len(set(layers) - {FILENAME, SIGNATURE_FILE}) != 1:
        raise RegistryError(f"{ref} does not hold exactly manifest.json and one payload (and a signature): found "
                            f"{sorted(layers)}: refused")
    total = sum(layer.size for layer in layers.values())
    if total > limit:
        raise RegistryError(f"{ref} is {total / 1e6:.1f} MB, more than the {limit / 1e6:.1f} MB a pull takes here: "
                            "refused", hint=f"${MAX_ARTIFACT_ENV} raises the limit (e.g. 64G)")
    return layers


def max_artifact_bytes() -> int:
    """$WARMSTART_MAX_ARTIFACT_SIZE (e.g. 64G), else MAX_ARTIFACT_BYTES."""
    raw = os.environ.get(MAX_ARTIFACT_ENV)
    if not raw:
        return MAX_ARTIFACT_BYTES
    from warmstart.core.spec import parse_size
    from warmstart.errors import UsageError

    try:
        return parse_size(raw, unit_required=True)
    except UsageError as exc:
        raise UsageError(f"${MAX_ARTIFACT_ENV}: {exc}") from None
