// boot: the init as PID 1 of a build container: it starts the app (app.go) at a reserved PID and supervises it
// (signals forwarded, orphans reaped) until the app exits.
package main

import (
	"bufio"
	"errors"
	"fmt"
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
