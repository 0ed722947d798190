// warmstart-init: the PID 1 that warmstart puts into an app's container, bind-mounted read-only from the host
// together with the host's CRIU prefix, so that app images need nothing of ours (no Python, no CRIU libraries).
//
//	warmstart-init boot [--pid-base N] [--user UID:GID] -- CMD...   start the app cold at a reserved PID (build)
//	warmstart-init dump --pid N --out DIR [--then stop|freeze]      capture changed files, stdio, CRIU dump (exec'd)
//	warmstart-init thaw [--pid N]                                   resume an app left frozen by dump --then freeze
//	warmstart-init entrypoint --snapshot-dir DIR ... -- CMD...      a container that snapshots itself (entrypoint.go)
//	warmstart-init crac beforeCheckpoint|afterRestore              trigger the JVM helper's CRaC resources (crac.go)
//	warmstart-init working-set --images DIR --faults FILE           mark recorded pages eager (workingset.go; host)
//	warmstart-init post-copy --images FULL --out THIN               images without their lazy pages (postcopy.go; host)
//	warmstart-init find FILE                                        offsets of the needles on stdin (find.go; host)
//	warmstart-init restore --snapshot DIR [--wait FIFO]             put files back, CRIU restore, supervise (run);
//	                                                                with --wait, restore only once FIFO is written
//	                                                                (a pre-started sandbox: serve's pool)
//
// In boot and restore modes it stays PID 1: it forwards signals to the app, reaps every orphan, and exits with the
// app's exit status (128+signal when killed), as an init must. A restore that cannot be done exits with
// ExitRestoreFailed after printing the relevant restore.log lines, so the launcher can fall back to a cold start.
//
// Standard library only, static (CGO_ENABLED=0): it runs in any image, including JVM images without Python.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

const (
	ExitUsage         = 120 // bad arguments
	ExitRestoreFailed = 121 // criu restore failed, or its snapshot cannot be used here
	ExitPidTaken      = 122 // a PID the snapshot needs is already in use
	ExitBootFailed    = 123 // the app could not be started
	ExitDumpFailed    = 124 // dump: criu dump or the file capture failed

	MetaFile   = "sandbox.json" // written by dump, read by restore
	RootfsFile = "rootfs.tar"   // files created or changed in the container since boot
	ImagesDir  = "images"       // CRIU image dir
	DumpLog    = "dump.log"
	RestoreLog = "restore.log"

	// A restoring init hands the app its secrets (the names in SecretNamesVar, which the snapshot never saw) on
	// this abstract Unix socket: NAME=VALUE pairs, each ended by a NUL byte, then EOF. It receives them the same
	// way from the file descriptor named by SecretsFdVar (a memfd at fd 3 from podman, stdin from docker; an
	// empty pair or EOF ends them), never through its environment, which the engine records (secrets.go).
	// Shared with warmstart/security/secretenv.py, warmstart/engines and warmstart_helper.py.
	SecretsSocket  = "@warmstart-secrets"
	SecretNamesVar = "WARMSTART_SECRET_NAMES"
	SecretsFdVar   = "WARMSTART_SECRETS_FD"
)

// Options both CRIU sides need: the app's stdout/stderr are pipes to the container runtime (re-attached with
// --inherit-fd), TCP connections and Unix sockets with peers outside the tree (probes, the runtime) are cut.
// The network is locked with libnftables (in our CRIU prefix), not the iptables binary, which app images lack.
// File locks (every embedded database holds some: H2, Derby, SQLite, RocksDB, Lucene) are dumped and taken again
// on restore (--file-locks); without it CRIU refuses any tree holding one.
var criuCommon = []string{"--shell-job", "--ext-unix-sk", "--network-lock", "nftables", "--file-locks"}

// Meta is what a restore needs besides the images: the PID to find free, and which pipes stdio were.
type Meta struct {
	SchemaVersion int               `json:"schema_version"`
	Pid           int               `json:"pid"`
	Stdio         map[string]string `json:"stdio"` // "1" -> "pipe:[1234]"
	ChangedFiles  int               `json:"changed_files"`
	Processes     int               `json:"processes"`    // in the dumped tree (helper daemons included)
	FileLocks     int               `json:"file_locks"`   // held by the tree at the dump, taken again on restore
	LoopbackTCP   bool              `json:"loopback_tcp"` // every TCP connection had both ends on loopback (tcp.go)
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "warmstart-init: "+format+"\n", args...)
	os.Exit(code)
}

func criuPath() string {
	if p := os.Getenv("WARMSTART_CRIU"); p != "" {
		return p
	}
	return "/opt/warmstart/criu/bin/criu"
}

func main() {
	if len(os.Args) < 2 {
		fail(ExitUsage, "usage: warmstart-init boot|dump|restore ... (see the source's header)")
	}
	origUmask = syscall.Umask(0o077) // everything written here (images, files) is process memory: private
	switch os.Args[1] {
	case "exec-app":
		execApp(os.Args[2:])
	case "boot":
		boot(os.Args[2:])
	case "dump":
		dump(os.Args[2:])
	case "thaw":
		thaw(os.Args[2:])
	case "release":
		release(os.Args[2:])
	case "restore":
		restore(os.Args[2:])
	case "entrypoint":
		entrypoint(os.Args[2:])
	case "crac":
		crac(os.Args[2:])
	case "working-set":
		workingSet(os.Args[2:])
	case "post-copy":
		postCopy(os.Args[2:])
	case "find":
		findNeedles(os.Args[2:])
	case "noop": // a short-lived child, used to move the PID counter where ns_last_pid is not writable
		os.Exit(0)
	default:
		fail(ExitUsage, "unknown command %q", os.Args[1])
	}
}

// flags parses "--name value" pairs up to "--"; returns them and what follows "--".
func flags(args []string, known ...string) (map[string]string, []string) {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		if args[i] == "--" {
			return out, args[i+1:]
		}
		name := strings.TrimPrefix(args[i], "--")
		ok := false
		for _, k := range known {
			ok = ok || k == name
		}
		if !ok || i+1 >= len(args) {
			fail(ExitUsage, "unknown or incomplete option %q", args[i])
		}
		out[name] = args[i+1]
		i++
	}
	return out, nil
}

func intFlag(f map[string]string, name string, def int) int {
	v, ok := f[name]
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		fail(ExitUsage, "--%s: %q is not a positive number", name, v)
	}
	return n
}

func logExcerpt(path, label string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var picked []string
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for _, line := range lines {
		if strings.Contains(line, "Error") && !strings.Contains(line, "RLIMIT_NOFILE") {
			picked = append(picked, line)
		}
	}
	if len(picked) == 0 && len(lines) > 0 {
		picked = lines[max0(len(lines)-8):]
	}
	if len(picked) > 12 {
		picked = picked[len(picked)-12:]
	}
	return label + ": " + strings.Join(picked, "\n"+label+": ")
}

func max0(n int) int {
	if n < 0 {
		return 0
	}
	return n
}
