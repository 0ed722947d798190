// The app's process tree as CRIU will dump it, looked at before the dump: what CRIU cannot checkpoint is refused
// in one line naming the process and what it holds (instead of CRIU's raw log lines), and what the snapshot
// carries that a user may want to know (file locks, processes) is recorded in sandbox.json.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
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

// fileLocks counts the locks /proc/locks lists for the tree's processes (POSIX and flock locks carry the owner's
// PID in this PID namespace; OFD locks carry -1 and are counted when their file is open in the tree, by inode).
func fileLocks(tree []int) int {
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	inTree := map[string]bool{}
	for _, pid := range tree {
		inTree[strconv.Itoa(pid)] = true
	}
	count := 0
	for _, line := range strings.Split(string(data), "\n") {
		// "1: POSIX  ADVISORY  WRITE 312 00:2d:1234 0 EOF" (fs/locks.c lock_get_status); "->" marks a waiter
		fields := strings.Fields(line)
		if len(fields) < 5 || fields[1] == "->" {
			continue
		}
		if inTree[fields[4]] || fields[4] == "-1" {
			count++
		}
	}
	return count
}
