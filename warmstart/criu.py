"""Names CRIU's callers agree on: the log files `criu -o` writes. runc passes these names for docker's checkpoints
(runc libcontainer/container_linux.go), podman keeps them in the container's userdata dir (libpod/define
DumpLogFile / RestoreLogFile), and our init uses the same ones (sandbox-init/main.go DumpLog / RestoreLog)."""

DUMP_LOG = "dump.log"
RESTORE_LOG = "restore.log"
