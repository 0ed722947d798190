package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// An inotify watch on a directory of ours is found by its path, as CRIU's --irmap-scan-path needs it.
func TestIrmapScanPathsFindsAWatchedDirectory(t *testing.T) {
	dir := t.TempDir()
	watched := filepath.Join(dir, "watched")
	if err := os.Mkdir(watched, 0o700); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC)
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	defer syscall.Close(fd)
	if _, err := syscall.InotifyAddWatch(fd, watched, syscall.IN_CREATE); err != nil {
		t.Fatal(err)
	}
	got := irmapScanPaths([]int{os.Getpid()})
	if len(got) != 1 || got[0] != watched {
		t.Fatalf("irmapScanPaths = %v, want [%s]", got, watched)
	}
}

// An io_uring instance is refused in one line naming the process, the fd and what to do.
func TestRefuseUncheckpointableNamesAnIoUring(t *testing.T) {
	params := make([]byte, 120)
	fd, _, errno := syscall.Syscall(425, 8, uintptr(unsafe.Pointer(&params[0])), 0) // io_uring_setup
	if errno != 0 {
		t.Skipf("io_uring_setup: %v", errno)
	}
	defer syscall.Close(int(fd))
	err := refuseUncheckpointable([]int{os.Getpid()})
	if err == nil {
		t.Fatal("an io_uring fd was not refused")
	}
	for _, want := range []string{"holds an io_uring instance (fd ", "CRIU cannot checkpoint io_uring"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q lacks %q", err, want)
		}
	}
	if refuseUncheckpointable([]int{1 << 30}) != nil {
		t.Fatal("a process that does not exist was refused")
	}
}

func TestCountLocksKeepsTheTreesOwnAndItsOpenOFDLocks(t *testing.T) {
	locks := "1: POSIX  ADVISORY  WRITE 12 00:2d:100 0 EOF\n" +
		"2: FLOCK  ADVISORY  WRITE 13 00:2d:101 0 EOF\n" +
		"3: OFDLCK ADVISORY  WRITE -1 00:2d:102 0 EOF\n" + // open in the tree
		"4: OFDLCK ADVISORY  READ  -1 fd:01:7 0 EOF\n" + // the host's (podman's lock file)
		"4: -> OFDLCK ADVISORY  WRITE -1 fd:01:7 0 EOF\n" +
		"5: POSIX  ADVISORY  WRITE 99 00:2d:103 0 EOF\n"
	got := countLocks(locks, []int{12, 13}, map[string]bool{"00:2d:102": true})
	if got != 3 {
		t.Fatalf("countLocks = %d, want 3", got)
	}
}
