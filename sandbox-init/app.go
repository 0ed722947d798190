// The app's process, started the same way by boot and entrypoint, so that it sees the process attributes a plain
// `podman run` of its image gives it, not the init's:
//
//   - umask: the init sets 0077 for its own files (process memory); the app gets the one the runtime gave PID 1.
//   - user: the image's USER, with that user's supplementary groups from /etc/group and, where the runtime set
//     HOME for root only because the init runs as root, that user's home directory (as runc does for USER).
//   - a child subreaper: a helper daemon that the app's start script detaches (a port mapper started with
//     -daemon, a forking server) is reparented to the app instead of PID 1, so the app's tree is the whole
//     service and CRIU dumps it in one piece. prctl(PR_SET_CHILD_SUBREAPER) is kept across execve(2), so the
//     init starts itself as `exec-app`, which sets it and the umask, then execs the app in the same process.
//
// The rest is passed through untouched: environment, working directory, rlimits (Go restores the soft
// RLIMIT_NOFILE it raised before exec), stdout/stderr; stdin is /dev/null and no other fd is inherited.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
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
	}
	return user, nil
}

// supplementaryGroups are the groups /etc/group lists `name` as a member of, besides its primary group.
func supplementaryGroups(name string, primary uint32) []uint32 {
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
	cmd := exec.Command(self, append([]string{"exec-app", "--umask", strconv.Itoa(origUmask), "--", path}, command...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: user.cred}
	if user.cred != nil && user.home != "" && os.Getenv("HOME") == "/root" {
		cmd.Env = append(os.Environ(), "HOME="+user.home)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %s: %v", command[0], err)
	}
	return cmd, nil
}

// execApp is `warmstart-init exec-app --umask N -- PATH ARGV...`: the app's own process until it execs.
func execApp(args []string) {
	f, rest := flags(args, "umask")
	if len(rest) < 2 {
		fail(ExitUsage, "exec-app: give PATH ARGV... after --")
	}
	mask, err := strconv.Atoi(f["umask"])
	if err != nil || mask < 0 || mask > 0o777 {
		fail(ExitUsage, "exec-app: bad --umask %q", f["umask"])
	}
	syscall.Umask(mask)
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		fail(ExitBootFailed, "exec-app: prctl(PR_SET_CHILD_SUBREAPER): %v", errno)
	}
	err = syscall.Exec(rest[0], rest[1:], os.Environ())
	fail(ExitBootFailed, "exec-app: cannot start %s: %v", rest[1], err)
}
