// warmstart-init: the PID 1 that warmstart puts into an app's container, bind-mounted read-only from the host
// together with the host's CRIU prefix, so that app images need nothing of ours (no Python, no CRIU libraries).
//
//	warmstart-init boot [--pid-base N] [--user UID:GID] -- CMD...   start the app cold at a reserved PID (build)
//	warmstart-init dump --pid N --out DIR [--then stop]             capture changed files, stdio, CRIU dump (exec'd)
//	warmstart-init entrypoint --snapshot-dir DIR ... -- CMD...      a container that snapshots itself (entrypoint.go)
//	warmstart-init crac beforeCheckpoint|afterRestore              trigger the JVM helper's CRaC resources (crac.go)
//	warmstart-init working-set --images DIR --faults FILE           mark recorded pages eager (workingset.go; host)
//	warmstart-init post-copy --images FULL --out THIN               images without their lazy pages (postcopy.go; host)
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
	"archive/tar"
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
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

	// A restoring init hands the app its secrets (the names in SecretNamesVar, values from this container's
	// environment, which the snapshot never saw) on this abstract Unix socket: NAME=VALUE pairs, each ended by
	// a NUL byte, then EOF. Shared with warmstart/secretenv.py and warmstart_helper.py.
	SecretsSocket  = "@warmstart-secrets"
	SecretNamesVar = "WARMSTART_SECRET_NAMES"
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
	Processes     int               `json:"processes"`  // in the dumped tree (helper daemons included)
	FileLocks     int               `json:"file_locks"` // held by the tree at the dump, taken again on restore
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

// ---- boot -----------------------------------------------------------------------------------------------------

// reservePid makes the next process get PID `base`: by writing ns_last_pid (needs a writable /proc/sys), else by
// starting short-lived children until the counter is there.
func reservePid(base int) {
	if os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(base-1)), 0o644) == nil {
		return
	}
	self, _ := os.Executable()
	for i := 0; i < base+64; i++ {
		cmd := exec.Command(self, "noop")
		if err := cmd.Start(); err != nil {
			return
		}
		pid := cmd.Process.Pid
		_ = cmd.Wait()
		if pid >= base-1 {
			return
		}
	}
}

func parseUser(spec string) (*syscall.Credential, error) {
	if spec == "" {
		return nil, nil
	}
	uidText, gidText, _ := strings.Cut(spec, ":")
	uid, err := lookupID("/etc/passwd", uidText)
	if err != nil {
		return nil, err
	}
	gid := uid
	if gidText != "" {
		if gid, err = lookupID("/etc/group", gidText); err != nil {
			return nil, err
		}
	} else if entry, ok := passwdEntry(uidText); ok && len(entry) > 3 {
		if g, err := strconv.Atoi(entry[3]); err == nil {
			gid = g
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func passwdEntry(name string) ([]string, bool) {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return nil, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		parts := strings.Split(s.Text(), ":")
		if len(parts) > 3 && (parts[0] == name || parts[2] == name) {
			return parts, true
		}
	}
	return nil, false
}

func lookupID(file, text string) (int, error) {
	if n, err := strconv.Atoi(text); err == nil {
		return n, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		parts := strings.Split(s.Text(), ":")
		if len(parts) > 2 && parts[0] == text {
			return strconv.Atoi(parts[2])
		}
	}
	return 0, fmt.Errorf("no %q in %s", text, file)
}

func boot(args []string) {
	f, command := flags(args, "pid-base", "user")
	if len(command) == 0 {
		fail(ExitUsage, "boot: give the app's command after --")
	}
	signals := make(chan os.Signal, 16)
	signal.Notify(signals) // before the app exists: nothing sent to PID 1 is lost
	reservePid(intFlag(f, "pid-base", 300))
	cmd, err := startApp(command, f["user"])
	if err != nil {
		fail(ExitBootFailed, "boot: %v", err)
	}
	os.Exit(supervise(cmd.Process.Pid, signals, nil))
}

// reaping is held while the init itself waits on a child (the entrypoint's criu dump): PID 1 reaps every
// child, and would otherwise take that child's exit status from under exec.Cmd.Wait.
var reaping sync.Mutex

// supervise is PID 1's duty: forward signals to the app, reap everything, return the app's exit status.
// With a page daemon, it also watches the daemon: one that dies before every page is in stops the app
// (ExitLazyPagesDied), since the app's memory can no longer be made whole.
func supervise(app int, signals chan os.Signal, daemon *lazyDaemon) int {
	exited := make(chan int, 1)
	daemonExit := make(chan syscall.WaitStatus, 1)
	go func() {
		for {
			var status syscall.WaitStatus
			reaping.Lock()
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			reaping.Unlock()
			if err == nil && pid > 0 {
				if daemon != nil && pid == daemon.pid {
					daemonExit <- status
					continue
				}
				if pid == app && (status.Exited() || status.Signaled()) {
					if status.Exited() {
						exited <- status.ExitStatus()
					} else {
						exited <- 128 + int(status.Signal())
					}
					return
				}
				continue // reaped an orphan: look again at once
			}
			if errors.Is(err, syscall.ECHILD) && syscall.Kill(app, 0) != nil {
				exited <- 0 // the app is not our child and is gone
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	for {
		select {
		case code := <-exited:
			for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if _, err := os.Stat(FinalDumpMarker); err != nil {
					break
				}
			}
			return code
		case st := <-daemonExit:
			if finished(st) {
				fmt.Fprintf(os.Stderr, "warmstart-init: all of the app's memory is in, %d ms after the restore began\n",
					time.Since(daemon.started).Milliseconds())
				continue
			}
			fmt.Fprintf(os.Stderr, "warmstart-init: the page daemon died (%s) before the app's memory was whole: "+
				"stopping the app\n%s\n", describe(st), logExcerpt(filepath.Join(WorkDir, LazyPagesLog), LazyPagesLog))
			stopRestored(app)
			return ExitLazyPagesDied
		case sig := <-signals:
			if sig == syscall.SIGCHLD || sig == syscall.SIGURG {
				continue
			}
			if s, ok := sig.(syscall.Signal); ok {
				_ = syscall.Kill(app, s)
			}
		}
	}
}

// ---- dump -----------------------------------------------------------------------------------------------------

// bootTime is when PID 1 (this container's init) started: files whose inode changed after it were made or
// changed by the app, and must be put back before a restore.
func bootTime() (time.Time, error) {
	fields, err := statFields(1)
	if err != nil {
		return time.Time{}, err
	}
	if len(fields) < 20 {
		return time.Time{}, errors.New("/proc/1/stat: too few fields")
	}
	ticks, err := strconv.ParseInt(fields[19], 10, 64) // field 22 of stat: starttime, in clock ticks after boot
	if err != nil {
		return time.Time{}, err
	}
	sys, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(sys), "\n") {
		if strings.HasPrefix(line, "btime ") {
			btime, _ := strconv.ParseInt(strings.TrimSpace(line[6:]), 10, 64)
			return time.Unix(btime, 0).Add(time.Duration(ticks) * 10 * time.Millisecond).Add(-time.Second), nil
		}
	}
	return time.Time{}, errors.New("no btime in /proc/stat")
}

// captureChanged writes every file on the root filesystem (and in /dev/shm) whose inode changed after `since`
// into a tar: what the app created or modified (the JVM's hsperfdata, temp dirs, logs). Other mounts (volumes,
// the runtime's /etc/hosts, ours) are not the app's to carry.
func captureChanged(out string, since time.Time, skip []string) (int, error) {
	var root syscall.Stat_t
	if err := syscall.Lstat("/", &root); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	count := 0
	walk := func(top string, sameDev bool) error {
		return filepath.Walk(top, func(path string, info os.FileInfo, err error) error {
			if err != nil {
				return nil // vanished or unreadable: not ours to carry
			}
			for _, s := range skip {
				if top != "/" && (top == s || strings.HasPrefix(top, s+"/")) {
					continue // "/dev" is skipped in the walk of "/", not in that of "/dev/shm"
				}
				if path == s || strings.HasPrefix(path, s+"/") {
					if info.IsDir() {
						return filepath.SkipDir
					}
					return nil
				}
			}
			st := info.Sys().(*syscall.Stat_t)
			if sameDev && st.Dev != root.Dev {
				if info.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if path == top || time.Unix(st.Ctim.Sec, st.Ctim.Nsec).Before(since) {
				return nil
			}
			if !info.Mode().IsRegular() && !info.IsDir() && info.Mode()&os.ModeSymlink == 0 {
				return nil // sockets, fifos, devices: CRIU or the runtime recreate those
			}
			link := ""
			if info.Mode()&os.ModeSymlink != 0 {
				link, _ = os.Readlink(path)
			}
			hdr, err := tar.FileInfoHeader(info, link)
			if err != nil {
				return err
			}
			hdr.Name = strings.TrimPrefix(path, "/")
			hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
			hdr.Uname, hdr.Gname = "", ""
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if info.Mode().IsRegular() {
				src, err := os.Open(path)
				if err != nil {
					return err
				}
				_, err = io.CopyN(tw, src, hdr.Size)
				src.Close()
				if err != nil {
					return err
				}
			}
			count++
			return nil
		})
	}
	if err := walk("/", true); err != nil {
		return count, err
	}
	if err := walk("/dev/shm", false); err != nil {
		return count, err
	}
	return count, tw.Close()
}

// statFields are the fields of /proc/PID/stat after the command name (which may hold spaces and parentheses):
// [0] is the state, [1] the parent PID, [19] the start time (proc(5) fields 3, 4 and 22).
func statFields(pid int) ([]string, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])), nil
}

// describePid: "PID (command line, state S)", for messages.
func describePid(pid int) string {
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	state := "?"
	if fields, err := statFields(pid); err == nil && len(fields) > 0 {
		state = fields[0]
	}
	command := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	if len(command) > 60 {
		command = command[:60] + "..."
	}
	return fmt.Sprintf("%d (%q, state %s)", pid, command, state)
}

// appPid is the process init started: PID 1's child in this PID namespace. (Not a fixed number: the Go runtime
// starts threads, which take PIDs, between reserving the number and starting the app.)
func appPid() (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	found := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 {
			continue
		}
		fields, err := statFields(pid)
		if err != nil {
			continue
		}
		if len(fields) > 1 && fields[1] == "1" && fields[0] != "Z" { // a zombie is not the app: PID 1 reaps it
			if found != 0 {
				return 0, fmt.Errorf("init has several children (%s, %s): cannot tell the app", describePid(found),
					describePid(pid))
			}
			found = pid
		}
	}
	if found == 0 {
		return 0, errors.New("init has no child: the app is not running")
	}
	return found, nil
}

func dump(args []string) {
	f, _ := flags(args, "pid", "out", "then")
	out := f["out"]
	if out == "" {
		fail(ExitUsage, "dump: --out DIR is required")
	}
	if then := f["then"]; then != "" && then != "run" && then != "stop" {
		fail(ExitUsage, "dump: --then must be run (the default) or stop")
	}
	if err := os.MkdirAll(out, 0o700); err != nil { // a checkpoint of an instance dumps into a new dir inside it
		fail(ExitDumpFailed, "dump: %v", err)
	}
	// First: while a lazy restore's page daemon runs, it is a second child of the init (and the app's memory is
	// not all in yet).
	if !awaitPageDaemon(5 * time.Minute) {
		fail(ExitDumpFailed, "dump: the app's memory is still streaming in after a lazy restore (criu lazy-pages runs)")
	}
	pid := intFlag(f, "pid", 0)
	if pid == 0 {
		var err error
		if pid, err = appPid(); err != nil {
			fail(ExitDumpFailed, "dump: %v", err)
		}
	}
	if err := dumpTo(out, pid, f["then"] != "stop"); err != nil {
		fail(ExitDumpFailed, "dump: %v", err)
	}
}

// dumpTo writes a snapshot of the tree rooted at pid into out: the changed files, CRIU's images (the app keeps
// running) and sandbox.json.
// dumpTo dumps the app into out; without leaveRunning, CRIU ends the app once the dump succeeded (a failed dump
// leaves it running), so nothing it does after the dump is lost: stop-and-copy migration (warmstart/migrate.py).
func dumpTo(out string, pid int, leaveRunning bool) error {
	meta := Meta{SchemaVersion: 1, Pid: pid, Stdio: map[string]string{}}
	for _, fd := range []string{"1", "2"} {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd)); err == nil && strings.HasPrefix(target, "pipe:[") {
			meta.Stdio[fd] = target
		}
	}
	tree := treePids(pid)
	if err := refuseUncheckpointable(tree); err != nil {
		return err
	}
	meta.Processes, meta.FileLocks = len(tree), fileLocks(tree)
	since, err := bootTime()
	if err != nil {
		return fmt.Errorf("boot time: %v", err)
	}
	skip := []string{"/proc", "/sys", "/dev", filepath.Clean(out), "/opt/warmstart", "/tmp/.warmstart"}
	if meta.ChangedFiles, err = captureChanged(filepath.Join(out, RootfsFile), since, skip); err != nil {
		return fmt.Errorf("capturing changed files: %v", err)
	}
	images := filepath.Join(out, ImagesDir)
	if err := os.Mkdir(images, 0o700); err != nil {
		return err
	}
	argv := []string{"dump", "-t", strconv.Itoa(pid), "-D", images, "-W", out, "-o", DumpLog, "--tcp-established",
		"--skip-in-flight"} // a client connecting while the app is frozen: its connection waits unaccepted, CRIU would refuse it
	for _, path := range irmapScanPaths(tree) {
		argv = append(argv, "--irmap-scan-path", path)
	}
	if leaveRunning {
		argv = append(argv, "--leave-running")
	} else { // PID 1 must outlive the app's end until this dump is complete (supervise waits for the marker)
		if err := os.WriteFile(FinalDumpMarker, nil, 0o600); err != nil {
			return err
		}
		defer os.Remove(FinalDumpMarker)
	}
	cmd := exec.Command(criuPath(), append(argv, criuCommon...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	reaping.Lock()
	err = cmd.Run()
	reaping.Unlock()
	if err != nil {
		return fmt.Errorf("criu dump of pid %d failed (%v); see %s\n%s", pid, err, DumpLog,
			logExcerpt(filepath.Join(out, DumpLog), "dump.log"))
	}
	data, _ := json.MarshalIndent(meta, "", "  ")
	return os.WriteFile(filepath.Join(out, MetaFile), append(data, '\n'), 0o600)
}

// ---- restore --------------------------------------------------------------------------------------------------

// extract puts the captured files back. The archive comes from our own cache (digest-verified before the
// launch), and is still read defensively: relative names only, no "..", no writing through a symlink.
func extract(archive, root string) error {
	f, err := os.Open(archive)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		rel := filepath.Clean("/" + hdr.Name)
		if rel == "/" || hasDotDot(hdr.Name) || (hdr.Typeflag == tar.TypeLink) {
			return fmt.Errorf("refused archive member %q", hdr.Name)
		}
		name := filepath.Join(root, rel)
		if parent, err := filepath.EvalSymlinks(filepath.Dir(name)); err == nil && parent != filepath.Dir(name) {
			return fmt.Errorf("refused archive member %q: its directory is a symlink", hdr.Name)
		}
		mode := os.FileMode(hdr.Mode).Perm() | os.FileMode(hdr.Mode)&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(name, mode); err != nil {
				return err
			}
		case tar.TypeSymlink:
			_ = os.Remove(name)
			if err := os.Symlink(hdr.Linkname, name); err != nil {
				return err
			}
		case tar.TypeReg:
			_ = os.MkdirAll(filepath.Dir(name), 0o755)
			_ = os.Remove(name)
			out, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			out.Close()
			if err != nil {
				return err
			}
		default:
			continue
		}
		_ = os.Lchown(name, hdr.Uid, hdr.Gid)
		if hdr.Typeflag != tar.TypeSymlink {
			_ = os.Chmod(name, mode)
			_ = os.Chtimes(name, hdr.AccessTime, hdr.ModTime)
		}
	}
}

func hasDotDot(name string) bool {
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return true
		}
	}
	return false
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

func restore(args []string) {
	f, _ := flags(args, "snapshot", "wait")
	if f["snapshot"] == "" {
		fail(ExitUsage, "restore: --snapshot DIR is required")
	}
	signals := make(chan os.Signal, 16)
	signal.Notify(signals)
	start := time.Now()
	if err := serveSecrets(); err != nil {
		fail(ExitRestoreFailed, "restore: cannot serve the app's secrets: %v", err)
	}
	meta, code, err := prepare(f["snapshot"])
	if err != nil {
		fail(code, "restore: %v", err)
	}
	if f["wait"] != "" {
		// Everything that does not need the moment of demand is done: wait for the trigger (a byte written to
		// the FIFO by the host), answering a stop signal meanwhile as the app would (128+signal).
		go func() {
			for sig := range signals {
				if s, ok := sig.(syscall.Signal); ok && (s == syscall.SIGTERM || s == syscall.SIGINT) {
					os.Exit(128 + int(s))
				}
			}
		}()
		fifo, err := os.OpenFile(f["wait"], os.O_RDONLY, 0)
		if err != nil {
			fail(ExitRestoreFailed, "restore: waiting on %s: %v", f["wait"], err)
		}
		_, _ = fifo.Read(make([]byte, 1))
		fifo.Close()
		signal.Reset()
		signals = make(chan os.Signal, 16)
		signal.Notify(signals)
		start = time.Now()
	}
	daemon := restoreApp(f["snapshot"], meta, os.Getenv(LazyVar))
	// The line a log readiness probe waits for after a restore (warmstart/sandbox.py RESTORED_LINE): the app
	// printed its own ready line before the checkpoint and will not print it again.
	how := "eagerly"
	if daemon != nil {
		how = "lazily (the rest of its memory streams in)"
	}
	fmt.Fprintf(os.Stderr, "warmstart-init: restored pid %d in %d ms, %s\n", meta.Pid, time.Since(start).Milliseconds(), how)
	os.Exit(supervise(meta.Pid, signals, daemon))
}

// restoreApp restores the app and runs its after-restore steps; lazily first when asked (and possible), and
// eagerly when the lazy restore cannot start, fails, or loses its page daemon before the app is ready. Returns
// the page daemon still serving the app, or nil.
func restoreApp(snap string, meta Meta, mode string) *lazyDaemon {
	if mode == RecordMode { // a build's recording clone: no fallback, a failure fails the recording
		if err := startRecorder(filepath.Join(snap, ImagesDir), WorkDir, RecordMount); err != nil {
			fail(ExitRestoreFailed, "restore: recording the working set: %v", err)
		}
		if err := criuRestore(snap, meta, true); err != nil {
			fail(ExitRestoreFailed, "restore: %v", err)
		}
		afterRestore(meta)
		return nil
	}
	if mode == RemoteMode { // post-copy: the pages are on the source host, so no eager fallback either
		return restoreRemote(snap, meta)
	}
	var daemon *lazyDaemon
	if mode == "1" {
		d, err := startLazyPages(filepath.Join(snap, ImagesDir), WorkDir, 5*time.Second)
		if err != nil {
			fmt.Fprintf(os.Stderr, "warmstart-init: restoring eagerly, the lazy restore cannot start: %v\n", err)
		}
		daemon = d
	}
	if err := criuRestore(snap, meta, daemon != nil); err != nil {
		if daemon == nil {
			fail(ExitRestoreFailed, "restore: %v", err)
		}
		daemon.kill()
		daemon = nil
		fmt.Fprintf(os.Stderr, "warmstart-init: restoring eagerly, the lazy restore failed: %v\n", err)
		if err := criuRestore(snap, meta, false); err != nil {
			fail(ExitRestoreFailed, "restore: %v", err)
		}
	}
	if daemon != nil && os.Getenv(LazyFaultVar) == "kill-daemon" {
		daemon.kill() // fault injection (tests): the daemon dies while the app is not yet ready
	}
	afterRestore(meta)
	if daemon != nil {
		if st, gone := daemon.exited(); gone {
			if finished(st) {
				return nil // every page is in already
			}
			fmt.Fprintf(os.Stderr, "warmstart-init: the page daemon died (%s) before the app was ready: restoring "+
				"eagerly\n%s\n", describe(st), logExcerpt(filepath.Join(WorkDir, LazyPagesLog), LazyPagesLog))
			stopRestored(meta.Pid)
			if err := criuRestore(snap, meta, false); err != nil {
				fail(ExitRestoreFailed, "restore: %v", err)
			}
			afterRestore(meta)
			return nil
		}
	}
	return daemon
}

// afterRestore runs the helpers' after-restore steps in the restored app.
func afterRestore(meta Meta) {
	if os.Getenv(CracPortVar) != "" { // a JVM with warmstart's agent: its resources' afterRestore, then the app runs on
		if _, err := cracCall("afterRestore", 5*time.Second, 120*time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "warmstart-init: afterRestore failed: %v\n", err)
			_ = syscall.Kill(meta.Pid, syscall.SIGKILL)
			os.Exit(ExitAfterRestoreFail)
		}
	}
	if os.Getenv(PyHelperVar) == "1" { // a Python app with warmstart_helper: failures are reported, never fatal
		if _, err := pyAfterRestore(5*time.Second, 60*time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "warmstart-init: warmstart_helper after_restore failed: %v\n", err)
		}
	}
}

// serveSecrets answers every connection to SecretsSocket with the secrets' values, and takes them out of this
// process's environment (criu, which it starts next, has no use for them). It listens before the restore, so
// the app finds it from its first instruction on.
func serveSecrets() error {
	names := os.Getenv(SecretNamesVar)
	if names == "" {
		return nil
	}
	var payload []byte
	for _, name := range strings.Split(names, ",") {
		if value, ok := os.LookupEnv(name); ok {
			payload = append(append(payload, name+"="+value...), 0)
			_ = os.Unsetenv(name)
		}
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: SecretsSocket}); err != nil {
		syscall.Close(fd)
		return err
	}
	if err := syscall.Listen(fd, 16); err != nil {
		syscall.Close(fd)
		return err
	}
	go func() {
		for {
			conn, _, err := syscall.Accept4(fd, syscall.SOCK_CLOEXEC)
			if err != nil {
				if err == syscall.EINTR || err == syscall.ECONNABORTED {
					continue
				}
				return
			}
			for sent := 0; sent < len(payload); {
				n, err := syscall.Write(conn, payload[sent:])
				if err != nil {
					break
				}
				sent += n
			}
			syscall.Close(conn)
		}
	}()
	return nil
}

// prepare reads a snapshot's meta, checks the PID it needs is free and puts the app's files back; on failure
// it returns the exit code that says why.
func prepare(snap string) (Meta, int, error) {
	var meta Meta
	data, err := os.ReadFile(filepath.Join(snap, MetaFile))
	if err == nil {
		err = json.Unmarshal(data, &meta)
	}
	if err != nil || meta.Pid < 1 {
		return meta, ExitRestoreFailed, fmt.Errorf("unreadable %s in the snapshot: %v", MetaFile, err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", meta.Pid)); err == nil {
		return meta, ExitPidTaken, fmt.Errorf("PID %d, which the snapshot needs, is already in use in this container", meta.Pid)
	}
	if err := extract(filepath.Join(snap, RootfsFile), "/"); err != nil {
		return meta, ExitRestoreFailed, fmt.Errorf("putting back the app's files: %v", err)
	}
	return meta, 0, nil
}

// WorkDir holds CRIU's logs, its pidfile and the page daemon's socket inside the container.
const WorkDir = "/tmp/.warmstart"

// FinalDumpMarker exists while a dump that ends the app (`dump --then stop`) runs: PID 1 then waits for it to be
// gone before exiting with the app, so the dump's last writes are not cut off by the container's end.
const FinalDumpMarker = WorkDir + "/final-dump"

// criuRestore restores the app from the snapshot's images; with lazy, its lazily restorable pages are left to
// the page daemon already listening in WorkDir (startLazyPages).
func criuRestore(snap string, meta Meta, lazy bool) error {
	work := WorkDir
	_ = os.MkdirAll(work, 0o700)
	pidfile := filepath.Join(work, "restored.pid")
	_ = os.Remove(pidfile)
	argv := []string{"restore", "-D", filepath.Join(snap, ImagesDir), "-W", work, "-o", RestoreLog, "-d",
		"--pidfile", pidfile, "--tcp-close"}
	if lazy {
		argv = append(argv, "--lazy-pages")
	}
	argv = append(argv, criuCommon...)
	seen := map[string]bool{}
	for _, fd := range []string{"1", "2"} {
		if key, ok := meta.Stdio[fd]; ok && !seen[key] {
			seen[key] = true
			argv = append(argv, "--inherit-fd", fmt.Sprintf("fd[%s]:%s", fd, key))
		}
	}
	cmd := exec.Command(criuPath(), argv...)
	// Not captured: with --inherit-fd the restored app takes over criu's stdout/stderr, which must be ours.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	// CRIU sets a restored task's supplementary groups only when it had some (criu/cr-restore.c: `if
	// (ce->n_groups && ...)`): one with none would keep CRIU's own (the init's root group). CRIU runs with none.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}}}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("criu restore failed (%v)\n%s", err, logExcerpt(filepath.Join(work, RestoreLog), "restore.log"))
	}
	return nil
}
