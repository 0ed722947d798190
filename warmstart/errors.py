"""warmstart's error tree. Every failure a user can meet is one of these; the CLI maps them to exit codes.

    WarmstartError
    ├── UsageError                  bad input: flags, ports, names (exit 2)
    │   └── SpecError               a malformed warmstart.toml (names file, key path, expectation)
    ├── UnknownAppError             `run` of an app that was never built or described
    ├── CacheError                  the cache directory cannot be used
    │   ├── SnapshotNotFound        no snapshot for the app
    │   ├── SnapshotCorrupt         a stored file does not match its manifest (the snapshot is quarantined)
    │   └── ManifestError           a manifest that cannot be read or is of a newer format
    ├── RegistryError               push/pull failed: auth, reference, transport, or a blob that does not verify
    ├── EngineError                 the container engine failed or is missing
    │   ├── EngineUnavailable       the engine binary/daemon cannot be reached
    │   ├── ImageNotFound           the image does not exist locally
    │   ├── CheckpointError         CRIU/runtime failed to dump (carries dump.log lines)
    │   └── RestoreError            CRIU/runtime failed to restore (carries restore.log lines)
    ├── ReadinessError              the readiness probe never passed (carries status and logs)
    ├── WarmupError                 warm-up traffic or command failed before the checkpoint
    ├── HookError                   a before_checkpoint / after_restore hook failed
    ├── UniquenessError             two clones of a new snapshot answered the uniqueness probe identically
    ├── SecretLeakError             a secret value or credential shape was found in a snapshot's files
    ├── SignatureError              a snapshot's signature is missing, wrong or from an untrusted key
    └── Interrupted                 Ctrl-C or SIGTERM while a command was running
"""

from __future__ import annotations


class WarmstartError(Exception):
    """Root of every error warmstart raises on purpose. `str()` is a complete one-line message."""

    exit_code = 1

    def __init__(self, message: str, *, details: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details  # multi-line context (log lines), shown below the message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(WarmstartError):
    """Raised when arguments are malformed: a bad `-p`, a bad `--env`, an invalid app name."""

    exit_code = 2


class SpecError(UsageError):
    """Raised when a spec file is missing, not TOML, or has an unknown key, a wrong type or a bad value."""


class UnknownAppError(WarmstartError):
    """Raised when `run` names an app that has no record in the cache and no image was given."""


class CacheError(WarmstartError):
    """Raised when the cache directory cannot be created, read or written."""


class SnapshotNotFound(CacheError):
    """Raised when an app has no usable snapshot in the cache."""


class SnapshotCorrupt(CacheError):
    """Raised when a snapshot's files do not match the sizes and sha256 digests in its manifest."""


class RegistryError(WarmstartError):
    """Raised when a registry refuses a push or pull (auth, missing reference, network) or serves bad data."""


class ManifestError(CacheError):
    """Raised when a snapshot's manifest is unreadable, malformed, or written by a newer warmstart."""


class EngineError(WarmstartError):
    """Raised when a container engine command fails; the message carries the engine's own error line."""


class EngineUnavailable(EngineError):
    """Raised when the engine's binary is not installed or its daemon cannot be reached."""


class ImageNotFound(EngineError):
    """Raised when the image to start does not exist locally (nothing can be pulled on our machines)."""


class CheckpointError(EngineError):
    """Raised when checkpointing a container fails; `details` holds the relevant lines of CRIU's dump.log."""


class RestoreError(EngineError):
    """Raised when restoring from a snapshot fails; `details` holds the relevant lines of CRIU's restore.log."""


class ReadinessError(WarmstartError):
    """Raised when a container does not pass its readiness probe in time or exits while being probed."""


class WarmupError(WarmstartError):
    """Raised when a warm-up request answers an error or the warm-up command fails; no snapshot is taken."""


class HookError(WarmstartError):
    """Raised when a hook fails or times out: before_checkpoint fails the build, after_restore the restore."""


class UniquenessError(WarmstartError):
    """Raised by `build` when two clones restored from the new snapshot answer its uniqueness probe identically:
    every instance would share state that should differ (random seeds, generated ids); nothing is published."""


class SecretLeakError(WarmstartError):
    """Raised when a build (or a push) finds a secret's value or a credential-shaped string in a snapshot's files:
    nothing is published or sent."""


class SignatureError(WarmstartError):
    """Raised when signing fails, or when a signature is required (--require-signed) and the snapshot is unsigned,
    signed by an untrusted key, or its manifest no longer matches its signature."""


class Interrupted(WarmstartError):
    """Raised when the user interrupts a command (SIGINT/SIGTERM); everything it created has been removed."""

    exit_code = 130
