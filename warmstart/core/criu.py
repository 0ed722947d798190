"""Names CRIU's callers agree on: the log files `criu -o` writes. runc passes these names for docker's checkpoints
(runc libcontainer/container_linux.go), podman keeps them in the container's userdata dir (libpod/define
DumpLogFile / RestoreLogFile), and our init uses the same ones (sandbox-init/main.go DumpLog / RestoreLog)."""

DUMP_LOG = "dump.log"
RESTORE_LOG = "restore.log"

# What CRIU logs when it meets something it cannot dump or restore, as (a substring of the log line, the cause and
# what to do, in one line). The headline of a failed checkpoint or restore names the cause instead of CRIU's last
# line ("Dumping FAILED."); the raw lines stay in the error's details. Strings from criu/*.c of CRIU 4.2.
KNOWN_CAUSES = (
    ("anon_inode:[io_uring]",  # criu/files.c: "Unknown shit %o (%s)" for an fd type CRIU does not know
     "a process holds an io_uring instance, which CRIU cannot checkpoint: switch the service to another I/O "
     "method (MariaDB: --innodb-use-native-aio=0; see docs/compatibility.md)"),
    ("Can't get rlimit",  # criu/cr-dump.c dump_task_rlimits: prlimit64 of another uid without CAP_SYS_RESOURCE
     "a process runs as another user and CRIU cannot read its rlimits (this host's root lacks CAP_SYS_RESOURCE): "
     "run scripts/setup-host, which links warmstart's rlimits shim into its CRIU (`warmstart doctor` checks)"),
    ("file locks are hold",  # criu/file-lock.c: "Some file locks are hold by dumping tasks!"
     "the app holds file locks and CRIU ran without --file-locks"),
    ("In-flight connection",  # criu/sk-inet.c
     "a client connected while the app was frozen and CRIU refused the half-open connection"),
    ("Can't dump half of stream unix connection",  # criu/sk-unix.c
     "a process holds a Unix socket connected to a peer outside the app's process tree"),
    ("Can't open file",  # criu/files-reg.c, on restore
     "a file the app had open does not exist in the new container (a volume that differs from the build's?)"),
)


def diagnose(text: str) -> str:
    """The known cause of a CRIU failure in `text` (log lines), or ""."""
    for needle, cause in KNOWN_CAUSES:
        if needle in text:
            return cause
    return ""


def failure_headline(init_output: str, log_text: str, *, default: str) -> str:
    """One line for a failed dump or restore by our init: a known cause first, then the init's own first line
    (it names the process when it refused the tree itself), else `default`."""
    cause = diagnose(log_text) or diagnose(init_output)
    if cause:
        return cause
    for line in init_output.splitlines():
        if line.startswith("warmstart-init: "):
            return line.removeprefix("warmstart-init: ")
    return default
