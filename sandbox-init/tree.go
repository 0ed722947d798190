// The app's process tree as CRIU will dump it, looked at before the dump: what CRIU cannot checkpoint is refused
// in one line naming the process and what it holds (instead of CRIU's raw log lines), and what the snapshot
// carries that a user may want to know (file locks, processes) is recorded in sandbox.json.
package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// An io_uring instance's fd links to this (fs/io_uring.c: anon_inode_getfile("[io_uring]", ...)). CRIU has no
// io_uring support: it fails with "Unknown shit 600 (anon_inode:[io_uring])" (criu/files.c).
const ioUringLink = "anon_inode:[io_uring]"

// IoUringHint is what to do about it; the docs' compatibility table lists the setting per service.
const IoUringHint = "CRIU cannot checkpoint io_uring: switch the service to another I/O method (MariaDB: " +
	"--innodb-use-native-aio=0; PostgreSQL 18: io_method = worker; see docs/compatibility.md)"

// treePids is `root` and every process descending from it, in /proc order.
func treePids(root int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []int{root}
	}
	parent := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if fields, err := statFields(pid); err == nil && len(fields) > 1 {
			parent[pid], _ = strconv.Atoi(fields[1])
		}
	}
	var tree []int
	for pid := range parent {
		for p, hops := pid, 0; p > 0 && hops < 4096; p, hops = parent[p], hops+1 {
			if p == root {
				tree = append(tree, pid)
				break
			}
		}
	}
	return tree
}

// refuseUncheckpointable returns a one-line error for the first process of the tree holding something CRIU
// cannot dump, or nil.
func refuseUncheckpointable(tree []int) error {
	for _, pid := range tree {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && target == ioUringLink {
				return fmt.Errorf("process %s holds an io_uring instance (fd %s): %s", describePid(pid), fd.Name(),
					IoUringHint)
			}
		}
	}
	return nil
}

// fileLocks counts the locks /proc/locks lists for the tree's processes. POSIX and flock locks carry the
// owner's PID in this PID namespace; OFD locks carry -1 and are counted only when their file is open in the
// tree (matched by device and inode), since the host's own OFD locks (podman's, for one) show up too.
func fileLocks(tree []int) int {
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	return countLocks(string(data), tree, openFiles(tree))
}

// countLocks is fileLocks' parser, apart so it can be tested on a given /proc/locks text.
func countLocks(procLocks string, tree []int, open map[string]bool) int {
	inTree := map[string]bool{}
	for _, pid := range tree {
		inTree[strconv.Itoa(pid)] = true
	}
	count := 0
	for _, line := range strings.Split(procLocks, "\n") {
		// "1: POSIX  ADVISORY  WRITE 312 00:2d:1234 0 EOF" (fs/locks.c lock_get_status); "->" marks a waiter
		fields := strings.Fields(line)
		if len(fields) < 6 || fields[1] == "->" {
			continue
		}
		if inTree[fields[4]] || (fields[4] == "-1" && open[fields[5]]) {
			count++
		}
	}
	return count
}

// openFiles are the files the tree has open, keyed as /proc/locks writes them: "%02x:%02x:%lu" (major,
// minor, inode; fs/locks.c lock_get_status).
func openFiles(tree []int) map[string]bool {
	open := map[string]bool{}
	for _, pid := range tree {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			var st syscall.Stat_t
			if syscall.Stat(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()), &st) != nil {
				continue
			}
			dev := uint64(st.Dev) //nolint:unconvert // Dev is uint64 on amd64, not everywhere
			major, minor := (dev>>8)&0xfff|(dev>>32)&^0xfff, dev&0xff|(dev>>12)&^0xff
			open[fmt.Sprintf("%02x:%02x:%d", major, minor, st.Ino)] = true
		}
	}
	return open
}

// inotifyWatches are the (device, inode) pairs the tree's inotify instances watch, from /proc/PID/fdinfo
// ("inotify wd:1 ino:1a2b sdev:2d mask:100 ...", fs/notify/fdinfo.c; sdev is the kernel's dev_t encoding).
func inotifyWatches(tree []int) map[[2]uint64]bool {
	watches := map[[2]uint64]bool{}
	for _, pid := range tree {
		infos, err := os.ReadDir(fmt.Sprintf("/proc/%d/fdinfo", pid))
		if err != nil {
			continue
		}
		for _, info := range infos {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, info.Name()))
			if err != nil || !strings.Contains(string(data), "inotify wd:") {
				continue
			}
			for _, line := range strings.Split(string(data), "\n") {
				var ino, sdev uint64
				for _, field := range strings.Fields(line) {
					if v, ok := strings.CutPrefix(field, "ino:"); ok {
						ino, _ = strconv.ParseUint(v, 16, 64)
					} else if v, ok := strings.CutPrefix(field, "sdev:"); ok {
						sdev, _ = strconv.ParseUint(v, 16, 64)
					}
				}
				if strings.HasPrefix(line, "inotify wd:") && ino != 0 {
					watches[[2]uint64{sdev >> 20, (sdev&0xfffff)<<32 | ino}] = true // {major, minor<<32|ino}
				}
			}
		}
	}
	return watches
}

// irmapScanPaths finds the paths of the tree's inotify watches. CRIU records a watch by path, and finds it
// by file handle, which overlayfs (the container's root) does not give out, then by scanning a few fixed
// directories (/etc, /var/log, ...; criu/irmap.c); a watch anywhere else fails the dump with "Can't dump
// that handle". The paths found here are handed to CRIU with --irmap-scan-path. The walk stops once every
// watch is found, or after walkBudget entries.
func irmapScanPaths(tree []int) []string {
	watches := inotifyWatches(tree)
	if len(watches) == 0 {
		return nil
	}
	const walkBudget = 500000
	var found []string
	seen := 0
	skip := map[string]bool{"/proc": true, "/sys": true, "/dev": true, "/opt/warmstart": true}
	visit := func(path string, d fs.DirEntry, err error) error {
		if seen++; seen > walkBudget || len(found) == len(watches) {
			return fs.SkipAll
		}
		if err != nil {
			return nil
		}
		if skip[path] {
			return fs.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && watches[[2]uint64{devMajor(st.Dev), devMinor(st.Dev)<<32 | st.Ino}] {
			found = append(found, path)
		}
		return nil
	}
	// Where services keep what they watch first (their cwd, temp and state dirs), then everything else.
	roots := []string{}
	for _, pid := range tree {
		if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil && cwd != "/" {
			roots = append(roots, cwd)
		}
	}
	for _, root := range append(roots, "/tmp", "/run", "/var", "/srv", "/app", "/home", "/data", "/etc", "/") {
		if !skip[root] && seen <= walkBudget && len(found) < len(watches) {
			_ = filepath.WalkDir(root, visit)
			skip[root] = true
		}
	}
	return found
}

// devMajor and devMinor split a userspace dev_t (glibc's gnu_dev_major/gnu_dev_minor encoding).
func devMajor(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^0xfff }
func devMinor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^0xff }
