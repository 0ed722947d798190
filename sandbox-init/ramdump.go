// ramdump: a checkpoint of a running instance (`dump --ram auto`) goes into RAM, a tmpfs mounted over its output
// dir, when the container's memory cgroup and the host have room for it. CRIU writes the app's pages while the app
// is frozen, and a tmpfs takes them several times faster than the instance's disk-backed layer, so the app stays
// frozen that much shorter. Never where the dump could push the container over its memory limit: a tmpfs's pages
// are charged to the memory cgroup of whoever writes them, here CRIU in the container's cgroup.
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

const (
	ramSlack       = 16 << 20 // CRIU's own images, the changed files, sandbox.json
	cgroupMemMax   = "/sys/fs/cgroup/memory.max"
	cgroupMemUsage = "/sys/fs/cgroup/memory.current"
)

// ramDumpSize is the tmpfs size for a dump of the tree, or 0 and why it must go to disk instead.
func ramDumpSize(tree []int, meminfo, memMax, memCurrent string) (int64, string) {
	need := int64(ramSlack)
	for _, pid := range tree {
		need += statusKB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:") << 10
	}
	need = need * 11 / 10
	if avail := statusKB(meminfo, "MemAvailable:") << 10; avail < 2*need {
		return 0, fmt.Sprintf("the host has %d MiB available, the dump needs %d MiB twice over", avail>>20, need>>20)
	}
	if limit, err := readInt(memMax); err == nil { // "max" (no limit) does not parse: no cgroup bound
		used, _ := readInt(memCurrent)
		if limit-used < need*3/2 {
			return 0, fmt.Sprintf("the container's memory limit leaves %d MiB, the dump needs %d MiB with room to "+
				"spare", (limit-used)>>20, need>>20)
		}
	}
	return 2 * need, ""
}

// mountRAM puts a private tmpfs of at most size bytes over dir (created if need be).
func mountRAM(dir string, size int64) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC,
		fmt.Sprintf("mode=0700,size=%d", size))
}

// release removes a dump's output dir once the launcher has copied it: the tmpfs over it is unmounted (its pages
// are freed with it), then whatever is left on disk is removed.
func release(args []string) {
	f, _ := flags(args, "out")
	out := f["out"]
	if out == "" || !strings.HasPrefix(out, "/tmp/.warmstart/") || strings.Contains(out, "..") {
		fail(ExitUsage, "release: --out must be a dump dir under /tmp/.warmstart/")
	}
	if err := syscall.Unmount(out, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) &&
		!errors.Is(err, syscall.ENOENT) {
		fail(ExitDumpFailed, "release: unmounting %s: %v", out, err)
	}
	if err := os.RemoveAll(out); err != nil {
		fail(ExitDumpFailed, "release: %v", err)
	}
}

// statusKB reads a "Key:   N kB" line of a /proc status-like file; 0 when absent.
func statusKB(path, key string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if fields := strings.Fields(line); len(fields) >= 2 && fields[0] == key {
			n, _ := strconv.ParseInt(fields[1], 10, 64)
			return n
		}
	}
	return 0
}

func readInt(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
}
