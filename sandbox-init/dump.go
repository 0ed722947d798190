// dump: a snapshot of the app's tree (its changed files and CRIU's images), leaving it running or ending it.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func dump(args []string) {
	f, _ := flags(args, "pid", "out", "then", "ram")
	out := f["out"]
	if out == "" {
		fail(ExitUsage, "dump: --out DIR is required")
	}
	then := f["then"]
	if then == "" {
		then = "run"
	}
	if then != "run" && then != "stop" && then != "freeze" {
		fail(ExitUsage, "dump: --then must be run (the default), stop or freeze")
	}
	if f["ram"] != "" && f["ram"] != "auto" {
		fail(ExitUsage, "dump: --ram takes auto (into a tmpfs when the memory limits leave room, else to disk)")
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
	if f["ram"] == "auto" {
		size, why := ramDumpSize(treePids(pid), "/proc/meminfo", cgroupMemMax, cgroupMemUsage)
		if size > 0 {
			if err := mountRAM(out, size); err != nil {
				why = fmt.Sprintf("mounting a tmpfs failed: %v", err)
			} else {
				fmt.Fprintf(os.Stderr, "warmstart-init: dumping into RAM (a tmpfs of at most %d MiB)\n", size>>20)
			}
		}
		if why != "" {
			fmt.Fprintf(os.Stderr, "warmstart-init: dumping to disk: %s\n", why)
		}
	}
	if err := dumpTo(out, pid, then); err != nil {
		fail(ExitDumpFailed, "dump: %v", err)
	}
}

// thaw resumes the app's tree after `dump --then freeze` (SIGCONT to each of its processes): the launcher could not
// store the checkpoint, or died before it could (the next command finds the instance frozen and thaws it).
func thaw(args []string) {
	f, _ := flags(args, "pid")
	pid := intFlag(f, "pid", 0)
	if pid == 0 {
		var err error
		if pid, err = appPid(); err != nil {
			fail(ExitUsage, "thaw: %v", err)
		}
	}
	for _, p := range treePids(pid) {
		_ = syscall.Kill(p, syscall.SIGCONT)
	}
}

// dumpTo writes a snapshot of the tree rooted at pid into out: the changed files, CRIU's images and sandbox.json.
// Then the app keeps running ("run"), is left stopped ("freeze": nothing it does after the dump is lost, and it
// comes back with `thaw` if the snapshot cannot be stored) or is ended by CRIU ("stop"; a failed dump leaves it
// running either way): checkpoint --stop and stop-and-copy migration (warmstart/snapshot/checkpoint.py) freeze.
func dumpTo(out string, pid int, then string) error {
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
	meta.LoopbackTCP = loopbackOnlyTCP("/proc/net/tcp", "/proc/net/tcp6")
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
	switch then {
	case "run":
		argv = append(argv, "--leave-running")
	case "freeze":
		argv = append(argv, "--leave-stopped")
	default: // PID 1 must outlive the app's end until this dump is complete (supervise waits for the marker)
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
