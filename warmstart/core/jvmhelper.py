"""The JVM helper (jvm-helper/): a java agent that provides the CRaC API (jdk.crac) on a stock JDK, so apps and
frameworks written against org.crac (Spring Boot 3.2+, Micronaut, Quarkus) get their `beforeCheckpoint` before
warmstart's snapshot and their `afterRestore` after every restore, as on a CRaC JDK.

How it is wired: setup-host builds the agent jar into sandbox.JVM_HELPER_DIR, which every sandbox container mounts
read-only (like the init and CRIU). A build of a JVM app adds `-javaagent:JAR=port=PORT` to the app's
JAVA_TOOL_OPTIONS; before the dump warmstart execs `warmstart-init crac beforeCheckpoint` (the resources, in reverse
order of registration, then a full GC; a failure fails the build naming the resource); a restoring init sends
`afterRestore` itself right after CRIU's restore (the JVM's seeds are renewed first) and exits 125 if it fails. On
by default for sandbox builds whose command runs `java`; `jvm_helper = false` turns it off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from warmstart.core import sandbox
from warmstart.core.spec import AppSpec, HookSpec
from warmstart.errors import UsageError

JAR = sandbox.JVM_HELPER_JAR  # every sandbox container mounts its dir (sandbox.tool_mounts)
PORT_VAR = "WARMSTART_CRAC_PORT"  # sandbox-init/crac.go reads it
PORT = 39917  # on 127.0.0.1 in the app container's own network namespace
_JAVA = re.compile(r"(?:^|[\s/])java(?:\s|$)")

BEFORE_CHECKPOINT = HookSpec(kind="exec", command=(str(sandbox.INIT), "crac", "beforeCheckpoint"), timeout=120)


def looks_like_jvm(command: Sequence[str]) -> bool:
    """Whether a command starts a JVM: `java ...`, `/usr/bin/java ...`, or a shell line that execs java."""
    return any(_JAVA.search(part) for part in command)


def resolve(spec: AppSpec, *, command: Sequence[str], mode: str) -> bool:
    """Whether this build uses the helper: as the spec says, else for sandbox builds of JVM commands."""
    if spec.jvm_helper is None:
        return mode == sandbox.SANDBOX and looks_like_jvm(command) and JAR.is_file()
    if spec.jvm_helper and mode != sandbox.SANDBOX:
        raise UsageError(f"app {spec.name!r}: jvm_helper needs a sandbox-mode build (the init restores the JVM "
                         "and triggers its afterRestore)")
    if spec.jvm_helper and not JAR.is_file():
        raise UsageError(f"the JVM helper {JAR} is missing", hint="run scripts/setup-host (it builds it)")
    return spec.jvm_helper


def build_env(spec: AppSpec) -> dict[str, str]:
    """The build's JVM gets the agent in JAVA_TOOL_OPTIONS, and the trigger port."""
    if not spec.jvm_helper:
        return {}
    agent = f"-javaagent:{JAR}=port={PORT}"
    options = spec.env.get("JAVA_TOOL_OPTIONS", "")
    return {PORT_VAR: str(PORT), "JAVA_TOOL_OPTIONS": f"{options} {agent}".strip()}


def restore_env(snapshot_spec: dict[str, object]) -> dict[str, str]:
    """A sandbox restoring a snapshot built with the helper gets the port its init triggers afterRestore on. It
    depends on how the snapshot was built (its manifest's spec), not on the spec of the launch."""
    return {PORT_VAR: str(PORT)} if snapshot_spec.get("jvm_helper") is True else {}

