// What /proc says about the app's processes: its PID, their states and command lines for messages.
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// statFields are the fields of /proc/PID/stat after the command name (which may hold spaces and parentheses):
// [0] is the state, [1] the parent PID, [19] the start time (proc(5) fields 3, 4 and 22).
func statFields(pid int) ([]string, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])), nil
}

// describePid: "PID (command line, state S)", for messages.
func describePid(pid int) string {
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	state := "?"
	if fields, err := statFields(pid); err == nil && len(fields) > 0 {
		state = fields[0]
	}
	command := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	if len(command) > 60 {
		command = command[:60] + "..."
	}
	return fmt.Sprintf("%d (%q, state %s)", pid, command, state)
}

// appPid is the process init started: PID 1's child in this PID namespace. (Not a fixed number: the Go runtime
// starts threads, which take PIDs, between reserving the number and starting the app.)
func appPid() (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	found := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 {
			continue
		}
		fields, err := statFields(pid)
		if err != nil {
			continue
		}
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && len(cmdline) == 0 {
			continue // exiting (its memory is gone): not the app, whatever it was
		}
		if len(fields) > 1 && fields[1] == "1" && fields[0] != "Z" { // a zombie is not the app: PID 1 reaps it
			if found != 0 {
				return 0, fmt.Errorf("init has several children (%s, %s): cannot tell the app", describePid(found),
					describePid(pid))
			}
			found = pid
		}
	}
	if found == 0 {
		return 0, errors.New("init has no child: the app is not running")
	}
	return found, nil
}
