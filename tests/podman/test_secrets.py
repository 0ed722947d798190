"""Secrets against real podman, runc and CRIU: a `secret_env` value is withheld from the build, found in no stored
file (every byte of the cache entry, the app record, the pushed artifact) and on no process's command line, yet
the restored app sees it after the restore; a secret that reaches memory anyway fails the build, naming where."""

from __future__ import annotations

import hashlib
import json
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import Cli, containers_of
from tests.helpers import RegistryServer, http_json, login

pytestmark = pytest.mark.podman
COUNTER = "localhost/warmstart-example-counter:latest"


def _spec(tmp_path: Path, app: str, extra: str = "") -> Path:
    spec = tmp_path / "warmstart.toml"
    spec.write_text(f'[apps.{app}]\nimage = "{COUNTER}"\nports = [8080]\nready = {{ http = "/healthz" }}\n'
                    f'python_helper = true\nsecret_env = ["API_KEY"]\nalways_restore = true\n{extra}')
    return spec


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def _argv_holding(needle: bytes) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "cmdline").read_bytes():
                    found.append(proc.name)
            except OSError:
                pass  # exited meanwhile
    return found


def test_a_secret_is_never_at_rest_nor_on_argv_and_the_restored_app_reads_it(
    tmp_path: Path, cli: Cli, owned_app: str, registry: RegistryServer
) -> None:
    secret = f"sk-test-{uuid.uuid4().hex}"
    env = {"API_KEY": secret, "USE_HELPER": "1"}
    spec = _spec(tmp_path, owned_app, 'env = { USE_HELPER = "1" }\n')
    built = cli("build", "--name", owned_app, "-f", str(spec), "--json", env=env)
    assert built.returncode == 0, built.stderr
    assert _files_holding(cli.cache, secret.encode()) == []  # snapshot, manifest, app record, locks
    assert _files_holding(cli.cache, secret.encode("utf-16-le")) == []

    out = cli("run", owned_app, "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert out.json["mode"] == "restored"
    address = out.json["ports"]["8080/tcp"]
    # The app was snapshotted without it, and has it now: the helper took it from the new container's init.
    assert http_json(address, "/secret")["sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert "after_restore" in http_json(address, "/events")["events"]
    assert _argv_holding(secret.encode()) == []  # not on podman's, conmon's, the init's or criu's command line
    assert _files_holding(cli.cache, secret.encode()) == []
    # Not in a temp file either: podman reads the values from a memfd, which no crash can leave behind (#29).
    assert _files_holding(Path(tempfile.gettempdir()), secret.encode()) == []

    authfile = tmp_path / "auth.json"
    login(registry, authfile)
    pushed = cli("push", f"{owned_app}:{built.json['tag']}", f"{registry.address}/warmstart/{owned_app}", "--json",
                 env={"REGISTRY_AUTH_FILE": str(authfile)})
    assert pushed.returncode == 0, pushed.stderr
    assert _files_holding(registry.storage, secret.encode()) == []  # the artifact as the registry stores it
    # The restored app holds the value now: a checkpoint of it would store it in clear, so none is taken (#29).
    ckpt = cli("checkpoint", out.json["name"])
    assert ckpt.returncode == 2 and "would store them in clear" in ckpt.error, ckpt.stderr
    assert _files_holding(cli.cache, secret.encode()) == []
    assert cli("stop", out.json["name"]).returncode == 0

    # Without the value in its environment, run says which secret it lacks (it is stored nowhere to fall back to).
    missing = cli("run", owned_app)
    assert missing.returncode == 2 and "secret API_KEY of app" in missing.stderr and "has no value" in missing.stderr
    assert containers_of(owned_app) == []


def test_a_secret_that_reaches_memory_anyway_fails_the_build_naming_where(
    tmp_path: Path, cli: Cli, owned_app: str
) -> None:
    secret = f"sk-test-{uuid.uuid4().hex}"
    # The value copied under a name that is not declared secret: the app holds it in its environment.
    spec = _spec(tmp_path, owned_app, f'env = {{ USE_HELPER = "1", API_KEY_COPY = "{secret}" }}\n')
    res = cli("build", "--name", owned_app, "-f", str(spec), env={"API_KEY": secret})
    assert res.returncode == 1
    first = res.error
    assert f"the snapshot of {owned_app!r} holds a secret in clear: " in first
    assert "the value of secret API_KEY in images/pages-" in first
    assert "(process " in first and ", address 0x" in first
    assert "no snapshot was published" in first
    assert cli("cache", "ls", owned_app, "--json").json["snapshots"] == []
    assert containers_of(owned_app) == []

    # A credential of a well-known shape that nobody declared is refused the same way.
    token = "ghp_" + uuid.uuid4().hex + uuid.uuid4().hex[:4]
    spec = _spec(tmp_path, owned_app, f'env = {{ USE_HELPER = "1", GITHUB_TOKEN = "{token}" }}\n')
    res = cli("build", "--name", owned_app, "-f", str(spec), env={"API_KEY": secret})
    assert res.returncode == 1
    assert "holds a secret in clear: a GitHub token in images/pages-" in res.stderr
    assert cli("cache", "ls", owned_app, "--json").json["snapshots"] == []
    assert not any((cli.cache / ".staging").iterdir())  # nothing half-written left behind


def test_a_secret_needed_during_warm_up_is_only_stored_encrypted(tmp_path: Path, cli: Cli, owned_app: str) -> None:
    from warmstart.security import crypt

    secret = f"sk-test-{uuid.uuid4().hex}"
    key = tmp_path / "snapshot.key"
    assert cli("key", "encryption", str(key)).returncode == 0
    spec = _spec(tmp_path, owned_app, 'env = { USE_HELPER = "1" }\nsecrets_during_warmup = true\n')
    refused = cli("build", "--name", owned_app, "-f", str(spec), env={"API_KEY": secret})
    assert refused.returncode == 2 and "which is then encrypted: give a key" in refused.error
    assert containers_of(owned_app) == []

    built = cli("build", "--name", owned_app, "-f", str(spec), "--encryption-key", str(key), "--json",
                env={"API_KEY": secret})
    assert built.returncode == 0, built.stderr
    snap = Path(built.json["snapshot_path"])
    assert _files_holding(cli.cache, secret.encode()) == []  # at rest: only ciphertext
    # ...of memory that does hold it: the app had the secret during warm-up.
    manifest = json.loads((snap / "manifest.json").read_text())
    assert manifest["encryption"]["key_id"] == crypt.key_id(crypt.load_key(key))
    pages = next(n for n in manifest["files"] if n.startswith("images/pages-"))
    crypt.decrypt_file(snap / pages, tmp_path / "pages.img", name=pages, key=crypt.load_key(key))
    assert secret.encode() in (tmp_path / "pages.img").read_bytes()

    env = {"API_KEY": secret, "WARMSTART_SNAPSHOT_KEY_FILE": str(key)}
    before = set(Path("/dev/shm").glob("warmstart-restore-*"))
    out = cli("run", owned_app, "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert out.json["mode"] == "restored", out.json["reason"]
    assert http_json(out.json["ports"]["8080/tcp"], "/secret")["sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert set(Path("/dev/shm").glob("warmstart-restore-*")) == before  # the clear copy is gone once it runs
    assert cli("stop", out.json["name"]).returncode == 0

    cold = cli("run", owned_app, "--json", env={"API_KEY": secret})
    assert cold.json["mode"] == "cold" and "is encrypted: set $WARMSTART_SNAPSHOT_KEY_FILE" in cold.json["reason"]
    assert cli("stop", cold.json["name"]).returncode == 0
    wrong = tmp_path / "wrong.key"
    assert cli("key", "encryption", str(wrong)).returncode == 0
    cold = cli("run", owned_app, "--json", env={"API_KEY": secret, "WARMSTART_SNAPSHOT_KEY_FILE": str(wrong)})
    assert cold.json["mode"] == "cold" and "the snapshot was encrypted with" in cold.json["reason"]
    assert cli("stop", cold.json["name"]).returncode == 0
    assert containers_of(owned_app) == []
