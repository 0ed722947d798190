// The app's process, started the same way by boot and entrypoint, so that it sees the process attributes a plain
// `podman run` of its image gives it, not the init's:
//
//   - umask: the init sets 0077 for its own files (process memory); the app gets the one the runtime gave PID 1.
//
//   - user: the image's USER, with that user's supplementary groups from /etc/group and, where the runtime set
//     HOME for root only because the init runs as root, that user's home directory (as runc does for USER).
//
//   - a child subreaper: a helper daemon that the app's start script detaches (a port mapper started with
//     -daemon, a forking server) is reparented to the app instead of PID 1, so the app's tree is the whole
//     service and CRIU dumps it in one piece. prctl(PR_SET_CHILD_SUBREAPER) is kept across execve(2), so the
//     init starts itself as `exec-app`, which sets it and the umask, then execs the app in the same process.
//
//   - capabilities: none of those the sandbox adds for CRIU (SandboxCaps).
//
//   - an IPC namespace of its own (empty, as the container's was): SysV IPC is dumped with its namespace.
//
//   - no io_uring: the engines' default seccomp profiles (podman's, docker's since 25) answer io_uring_setup,
//     _enter and _register with ENOSYS, and services fall back to another I/O method (MariaDB to libaio, Tokio
//     and libuv to threads). The sandbox runs unconfined for CRIU, so exec-app installs a filter that answers
//     the same; CRIU cannot dump io_uring, and keeps (dumps, restores) the filter itself.
//
// The rest is passed through untouched: environment, working directory, rlimits (Go restores the soft
// RLIMIT_NOFILE it raised before exec), stdout/stderr; stdin is /dev/null and no other fd is inherited.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// origUmask is the umask the runtime gave PID 1 (the image's), saved by main before it sets 0077.
var origUmask = 0o022

const prSetChildSubreaper = 36 // PR_SET_CHILD_SUBREAPER, include/uapi/linux/prctl.h

// appUser is what the app runs as: nil for the init's own user (root).
type appUser struct {
	cred *syscall.Credential
	home string
}

func resolveUser(spec string) (appUser, error) {
	cred, err := parseUser(spec)
	if err != nil || cred == nil {
		return appUser{}, err
	}
	entry, ok := passwdEntry(strconv.Itoa(int(cred.Uid)))
	if name, _, _ := strings.Cut(spec, ":"); !ok {
		entry, ok = passwdEntry(name)
	}
	user := appUser{cred: cred}
	if ok && len(entry) > 5 {
		user.home = entry[5]
		cred.Groups = supplementaryGroups(entry[0], cred.Gid)
	} else if cred.Uid != 0 { // a numeric user without a passwd entry: its group only
		cred.Groups = []uint32{cred.Gid}
	}
	return user, nil
}

// supplementaryGroups are what podman (runc) gives a container process of that user: for a non-root user its
// primary group and the groups /etc/group lists it in; for root only the latter (none, usually).
func supplementaryGroups(name string, primary uint32) []uint32 {
	groups := memberOf(name, primary)
	if primary != 0 || name != "root" {
		groups = append([]uint32{primary}, groups...)
	}
	return groups
}

// memberOf are the groups /etc/group lists `name` as a member of, besides its primary group.
func memberOf(name string, primary uint32) []uint32 {
	f, err := os.Open("/etc/group")
	if err != nil {
		return nil
	}
	defer f.Close()
	var groups []uint32
	s := bufio.NewScanner(f)
	for s.Scan() {
		parts := strings.Split(s.Text(), ":")
		if len(parts) < 4 {
			continue
		}
		gid, err := strconv.Atoi(parts[2])
		if err != nil || uint32(gid) == primary {
			continue
		}
		for _, member := range strings.Split(parts[3], ",") {
			if member == name {
				groups = append(groups, uint32(gid))
			}
		}
	}
	return groups
}

// startApp starts the app's command as `user` (the image's USER, "" for root) in its own session (sid = pgid =
// its PID: the self-contained tree CRIU dumps), through exec-app.
func startApp(command []string, userSpec string) (*exec.Cmd, error) {
	user, err := resolveUser(userSpec)
	if err != nil {
		return nil, fmt.Errorf("user %q: %v", userSpec, err)
	}
	path, err := exec.LookPath(command[0])
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"exec-app", "--umask", strconv.Itoa(origUmask)}
	if user.cred == nil { // root: the groups /etc/group gives root (none, usually), not the init's
		user.cred = &syscall.Credential{Uid: 0, Gid: 0, Groups: supplementaryGroups("root", 0)}
	}
	{
		ids := []string{strconv.Itoa(int(user.cred.Uid)), strconv.Itoa(int(user.cred.Gid))}
		for _, g := range user.cred.Groups {
			ids = append(ids, strconv.Itoa(int(g)))
		}
		args = append(args, "--ids", strings.Join(ids, ":"))
	}
	cmd := exec.Command(self, append(append(args, "--", path), command...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	// Its own IPC namespace, empty as a container's is: CRIU dumps SysV shared memory, semaphores and message
	// queues only with the namespace they live in, and dumps the namespace of a tree root that differs from its
	// own (the init's), and restores it with the tree.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWIPC}
	if user.cred.Uid != 0 && user.home != "" && os.Getenv("HOME") == "/root" {
		cmd.Env = append(os.Environ(), "HOME="+user.home)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %s: %v", command[0], err)
	}
	return cmd, nil
}

// SandboxCaps are the capabilities the sandbox container gets beyond an engine's default set, for CRIU
// (warmstart/core/sandbox.py CAP_ADD, same order; include/uapi/linux/capability.h numbers). The app never holds
// them: exec-app drops them before it execs the app, as root or not.
var SandboxCaps = map[string]uintptr{"SYS_ADMIN": 21, "SYS_PTRACE": 19, "NET_ADMIN": 12, "SYS_TIME": 25,
	"IPC_OWNER": 15}

const (
	prCapbsetDrop        = 24 // PR_CAPBSET_DROP, include/uapi/linux/prctl.h
	prCapAmbient         = 47 // PR_CAP_AMBIENT
	prCapAmbientClearAll = 4  // PR_CAP_AMBIENT_CLEAR_ALL
	linuxCapabilityV3    = 0x20080522
)

// dropSandboxCaps removes SandboxCaps from this process's bounding, effective, permitted and inheritable sets
// (and clears the ambient set), so that the app holds what a plain container of its image gives it.
func dropSandboxCaps() error {
	hdr := struct {
		version uint32
		pid     int32
	}{linuxCapabilityV3, 0}
	var data [2]struct{ effective, permitted, inheritable uint32 }
	if _, _, errno := syscall.RawSyscall(syscall.SYS_CAPGET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); errno != 0 {
		return fmt.Errorf("capget: %v", errno)
	}
	for name, c := range SandboxCaps {
		// EPERM without CAP_SETPCAP (an entrypoint container given fewer capabilities): the effective and
		// permitted sets below still lose it, which a process may always do.
		if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prCapbsetDrop, c, 0); errno != 0 && errno != syscall.EPERM {
			return fmt.Errorf("dropping CAP_%s from the bounding set: %v", name, errno)
		}
		bit := uint32(1) << (c % 32)
		data[c/32].effective &^= bit
		data[c/32].permitted &^= bit
		data[c/32].inheritable &^= bit
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); errno != 0 {
		return fmt.Errorf("capset: %v", errno)
	}
	syscall.RawSyscall(syscall.SYS_PRCTL, prCapAmbient, prCapAmbientClearAll, 0) // no ambient set: nothing to do
	return nil
}

// The io_uring system calls (the same numbers on every architecture: include/uapi/asm-generic/unistd.h) and
// seccomp's constants (include/uapi/linux/seccomp.h, prctl.h).
const (
	sysIoUringSetup    = 425
	sysIoUringRegister = 427 // io_uring_enter is 426, between the two
	prSetSeccomp       = 22
	seccompModeFilter  = 2
	seccompRetAllow    = 0x7fff0000
	seccompRetErrno    = 0x00050000
)

// ioUringFilter answers the io_uring calls with ENOSYS and allows everything else (classic BPF over
// seccomp_data, whose first word is the call's number; a jump skips jt or jf instructions).
var ioUringFilter = []syscall.SockFilter{
	{Code: syscall.BPF_LD | syscall.BPF_W | syscall.BPF_ABS, K: 0},
	{Code: syscall.BPF_JMP | syscall.BPF_JGE | syscall.BPF_K, K: sysIoUringSetup, Jt: 0, Jf: 2},
	{Code: syscall.BPF_JMP | syscall.BPF_JGT | syscall.BPF_K, K: sysIoUringRegister, Jt: 1, Jf: 0},
	{Code: syscall.BPF_RET | syscall.BPF_K, K: seccompRetErrno | uint32(syscall.ENOSYS)},
	{Code: syscall.BPF_RET | syscall.BPF_K, K: seccompRetAllow},
}

// denyIoUring installs ioUringFilter on this thread (the one that execs; the filter is kept across execve).
func denyIoUring() error {
	prog := syscall.SockFprog{Len: uint16(len(ioUringFilter)), Filter: &ioUringFilter[0]}
	_, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetSeccomp, seccompModeFilter, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return fmt.Errorf("seccomp filter denying io_uring: %v", errno)
	}
	return nil
}

// execApp is `warmstart-init exec-app --umask N [--ids UID:GID[:GROUP...]] -- PATH ARGV...`: the app's own
// process until it execs. It starts as root (the init's user), drops the sandbox's capabilities, switches to
// the app's user (Go applies setuid/setgid to every thread), sets the umask and the subreaper flag, and execs.
func execApp(args []string) {
	runtime.LockOSThread() // capability sets are per thread: drop them on the thread that execs
	f, rest := flags(args, "umask", "ids")
	if len(rest) < 2 {
		fail(ExitUsage, "exec-app: give PATH ARGV... after --")
	}
	mask, err := strconv.Atoi(f["umask"])
	if err != nil || mask < 0 || mask > 0o777 {
		fail(ExitUsage, "exec-app: bad --umask %q", f["umask"])
	}
	var ids []int
	for _, text := range strings.Split(f["ids"], ":") {
		if text == "" && f["ids"] == "" {
			break
		}
		id, err := strconv.Atoi(text)
		if err != nil || id < 0 {
			fail(ExitUsage, "exec-app: bad --ids %q", f["ids"])
		}
		ids = append(ids, id)
	}
	if len(ids) == 1 {
		fail(ExitUsage, "exec-app: --ids needs UID:GID")
	}
	if err := denyIoUring(); err != nil { // while CAP_SYS_ADMIN is held: no need for PR_SET_NO_NEW_PRIVS
		fail(ExitBootFailed, "exec-app: %v", err)
	}
	if err := dropSandboxCaps(); err != nil {
		fail(ExitBootFailed, "exec-app: %v", err)
	}
	if len(ids) >= 2 {
		if err := syscall.Setgroups(ids[2:]); err != nil {
			fail(ExitBootFailed, "exec-app: setgroups: %v", err)
		}
		if err := syscall.Setgid(ids[1]); err != nil {
			fail(ExitBootFailed, "exec-app: setgid(%d): %v", ids[1], err)
		}
		if err := syscall.Setuid(ids[0]); err != nil {
			fail(ExitBootFailed, "exec-app: setuid(%d): %v", ids[0], err)
		}
	}
	syscall.Umask(mask)
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		fail(ExitBootFailed, "exec-app: prctl(PR_SET_CHILD_SUBREAPER): %v", errno)
	}
	err = syscall.Exec(rest[0], rest[1:], os.Environ())
	fail(ExitBootFailed, "exec-app: cannot start %s: %v", rest[1], err)
}
