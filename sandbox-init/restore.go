// restore: the app restored from a snapshot (lazily where asked and possible), its after-restore steps, the
// secrets socket, and PID 1's supervision again.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

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
	// The line a log readiness probe waits for after a restore (warmstart/core/sandbox.py RESTORED_LINE): the app
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
	if mode == StoppedMode {
		restoreStopped(snap, meta)
		return nil
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
		// What the failed attempt left (a task CRIU had forked at the app's PID, a zombie until PID 1 reaps it)
		// would fail the retry with "Can't fork for PID: File exists".
		stopRestored(meta.Pid)
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

// restoreStopped restores the app and leaves it stopped for a debugger (`warmstart debug`; thaw resumes it): no
// after-restore step runs, the app has not run a single instruction since its checkpoint.
func restoreStopped(snap string, meta Meta) {
	if err := criuRestore(snap, meta, false, "--leave-stopped"); err != nil {
		fail(ExitRestoreFailed, "restore: %v", err)
	}
	fmt.Fprintf(os.Stderr, "warmstart-init: pid %d is stopped for a debugger; `%s thaw` resumes it\n", meta.Pid,
		os.Args[0])
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
	mountinfo, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return meta, ExitRestoreFailed, fmt.Errorf("reading this container's mounts: %v", err)
	}
	mounts, err := mountPoints(mountinfo)
	mountinfo.Close()
	if err != nil {
		return meta, ExitRestoreFailed, fmt.Errorf("reading this container's mounts: %v", err)
	}
	if err := extract(filepath.Join(snap, RootfsFile), "/", mounts); err != nil {
		return meta, ExitRestoreFailed, fmt.Errorf("putting back the app's files: %v", err)
	}
	return meta, 0, nil
}

// WorkDir holds CRIU's logs, its pidfile and the page daemon's socket inside the container.
const WorkDir = "/tmp/.warmstart"

// FinalDumpMarker exists while a dump that ends the app (`dump --then stop`) runs: PID 1 then waits for it to be
// gone before exiting with the app, so the dump's last writes are not cut off by the container's end.
const FinalDumpMarker = WorkDir + "/final-dump"

// StoppedMode is LazyVar's value for a restore whose tree is left stopped (CRIU's --leave-stopped): a debug
// instance, which a debugger attaches to before the app runs a single instruction (warmstart/restore/debug.py).
const StoppedMode = "stopped"

// KeepTCPVar is set by warmstart on a restore at the instance's old address (`run --ip`, `migrate
// --keep-address`, warmstart/core/sandbox.py KEEP_TCP_VAR): the peers' packets reach this container again, so
// the app's established connections are restored as they were.
const KeepTCPVar = "WARMSTART_KEEP_TCP"

// criuRestore restores the app from the snapshot's images; with lazy, its lazily restorable pages are left to
// the page daemon already listening in WorkDir (startLazyPages). TCP connections are closed on restore, except when
// the dump found only connections with both ends on loopback (meta.LoopbackTCP: the tree's own, e.g. an Erlang
// node's registration with its epmd, which RabbitMQ's CLI needs) or the container has the old address
// (KeepTCPVar): those are restored as they were, and should that fail, the restore is tried again closing them.
func criuRestore(snap string, meta Meta, lazy bool, extra ...string) error {
	if meta.LoopbackTCP || os.Getenv(KeepTCPVar) == "1" {
		err := criuRestoreWith(snap, meta, "--tcp-established", lazy, extra)
		if err == nil || lazy {
			return err
		}
		fmt.Fprintf(os.Stderr, "warmstart-init: restoring the app's TCP connections failed, closing them: %v\n", err)
		stopRestored(meta.Pid)
	}
	return criuRestoreWith(snap, meta, "--tcp-close", lazy, extra)
}

func criuRestoreWith(snap string, meta Meta, tcp string, lazy bool, extra []string) error {
	work := WorkDir
	_ = os.MkdirAll(work, 0o700)
	pidfile := filepath.Join(work, "restored.pid")
	_ = os.Remove(pidfile)
	argv := []string{"restore", "-D", filepath.Join(snap, ImagesDir), "-W", work, "-o", RestoreLog, "-d",
		"--pidfile", pidfile, tcp}
	if lazy {
		argv = append(argv, "--lazy-pages")
	}
	argv = append(append(argv, extra...), criuCommon...)
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
