// Lazy restore: CRIU's page daemon (`criu lazy-pages`) serves the app's memory on demand through userfaultfd and
// streams the rest in the background, so the app runs before all of its memory is copied. Pages the snapshot
// marks eager (the working set, see warmstart/restore/lazypages.py) are copied by `criu restore` itself, as always.
//
// The daemon is what makes the memory whole: if it dies before it has served every page, the app would read
// zeros where its data was (a released userfaultfd leaves missing anonymous pages empty). So a daemon that
// dies before the app is announced ready means: stop the app and restore it eagerly instead; one that dies
// after means: stop the app and exit with ExitLazyPagesDied, never let it serve from incomplete memory.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	LazyVar           = "WARMSTART_LAZY"    // "1": restore lazily when this host can (set by warmstart/restore/launch.py)
	LazyPagesLog      = "lazy-pages.log"    // the daemon's log, in the work dir
	LazySocket        = "lazy-pages.socket" // criu/uffd.c LAZY_PAGES_SOCK_NAME, created in the daemon's work dir
	ExitLazyPagesDied = 126                 // the page daemon died before the app's memory was whole: app stopped
	// LazyFaultVar="kill-daemon" kills the page daemon right after a lazy restore, before the app is ready: fault
	// injection for the tests of the eager fallback (tests/podman/test_lazy.py); nothing else sets it.
	LazyFaultVar = "WARMSTART_LAZY_FAULT"
)

// lazyDaemon is a running `criu lazy-pages`.
type lazyDaemon struct {
	pid     int
	started time.Time
	reaped  bool               // kill() reaped it
	status  syscall.WaitStatus // its status, once reaped
}

// startLazyPages starts the page daemon for `images` and waits (at most `timeout`) for its socket, which must
// exist before `criu restore --lazy-pages` connects to it.
func startLazyPages(images, work string, timeout time.Duration) (*lazyDaemon, error) {
	return startPageDaemon(images, work, timeout)
}

// startPageDaemon starts `criu lazy-pages` with `extra` options (a remote page server: postcopy.go).
func startPageDaemon(images, work string, timeout time.Duration, extra ...string) (*lazyDaemon, error) {
	if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, err
	}
	sock := filepath.Join(work, LazySocket)
	_ = os.Remove(sock)
	cmd := exec.Command(criuPath(), append([]string{"lazy-pages", "-D", images, "-W", work, "-o", LazyPagesLog}, extra...)...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &lazyDaemon{pid: cmd.Process.Pid, started: time.Now()}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return d, nil
		}
		if st, gone := d.exited(); gone {
			return nil, fmt.Errorf("criu lazy-pages exited (%s) before it listened\n%s", describe(st),
				logExcerpt(filepath.Join(work, LazyPagesLog), LazyPagesLog))
		}
	}
	d.kill()
	return nil, fmt.Errorf("criu lazy-pages did not listen on %s within %s", sock, timeout)
}

// exited reaps the daemon if it has ended (without blocking).
func (d *lazyDaemon) exited() (syscall.WaitStatus, bool) {
	if d.reaped {
		return d.status, true
	}
	var st syscall.WaitStatus
	reaping.Lock()
	pid, err := syscall.Wait4(d.pid, &st, syscall.WNOHANG, nil)
	reaping.Unlock()
	if errors.Is(err, syscall.ECHILD) {
		return st, false // reaped elsewhere: supervise forwards its status instead
	}
	return st, pid == d.pid
}

func (d *lazyDaemon) kill() {
	_ = syscall.Kill(d.pid, syscall.SIGKILL)
	reaping.Lock()
	_, _ = syscall.Wait4(d.pid, &d.status, 0, nil)
	reaping.Unlock()
	d.reaped = true
}

// finished: the daemon ended having served every page (it exits 0 only then: criu/uffd.c handle_requests).
func finished(st syscall.WaitStatus) bool { return st.Exited() && st.ExitStatus() == 0 }

func describe(st syscall.WaitStatus) string {
	if st.Signaled() {
		return "killed by " + st.Signal().String()
	}
	return fmt.Sprintf("exit code %d", st.ExitStatus())
}

// stopRestored kills a restored app's whole process group and reaps it, so that its PIDs are free for another
// restore attempt.
func stopRestored(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		var st syscall.WaitStatus
		reaping.Lock()
		got, err := syscall.Wait4(-1, &st, syscall.WNOHANG, nil)
		reaping.Unlock()
		if err == nil && got > 0 {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// awaitPageDaemon waits (at most `limit`) until no `criu lazy-pages` runs in this container: a dump taken while
// the app's pages still stream would have to read them through the daemon's userfaultfd, which CRIU does not do.
// Returns whether the daemon is gone.
func awaitPageDaemon(limit time.Duration) bool {
	for deadline := time.Now().Add(limit); ; time.Sleep(20 * time.Millisecond) {
		if !pageDaemonRunning() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

func pageDaemonRunning() bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), "\x00lazy-pages\x00") {
			return true
		}
		if err == nil && len(cmdline) == 0 && exiting(e.Name()) {
			return true // a daemon on its way out (its memory is gone, it is not yet a zombie): not over yet
		}
	}
	return false
}

// exiting: a child of PID 1 whose memory is gone (empty cmdline) but which is not yet a zombie, as the page daemon
// is for a moment after its last page; the dump must not take it for a second app.
func exiting(name string) bool {
	pid, err := strconv.Atoi(name)
	if err != nil {
		return false
	}
	fields, err := statFields(pid)
	return err == nil && len(fields) > 1 && fields[1] == "1" && fields[0] != "Z"
}
