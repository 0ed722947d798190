package main

// The JVM helper's triggers (jvm-helper/, a java agent providing jdk.crac on a stock JDK): one line over TCP to
// 127.0.0.1:$WARMSTART_CRAC_PORT inside the container, answered by "ok ..." or "error: ...".
//
//	warmstart-init crac beforeCheckpoint|afterRestore   exec'd by warmstart (before the dump)
//
// and a restoring init sends afterRestore itself right after CRIU's restore (no engine round trip).

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

const (
	CracPortVar          = "WARMSTART_CRAC_PORT"     // shared with warmstart/core/jvmhelper.py
	PyHelperVar          = "WARMSTART_PYTHON_HELPER" // "1": the app uses warmstart_helper (warmstart/runtime/hooks.py)
	PyHelperSocket       = "@warmstart-helper"       // warmstart_helper.SOCKET_NAME
	ExitAfterRestoreFail = 125                       // the app's afterRestore failed: the restore is not usable
)

// pyAfterRestore asks the Python helper in the restored app to run its after-restore steps (secrets, reseeding,
// the app's hooks) and waits for them, as `python3 -m warmstart_helper after_restore` would, without an exec.
func pyAfterRestore(wait, timeout time.Duration) (string, error) {
	conn, err := dialWithin("unix", PyHelperSocket, wait)
	if err != nil {
		return "", fmt.Errorf("the app's warmstart_helper does not answer (%v): does it call warmstart_helper.install()?", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("after_restore")); err != nil {
		return "", err
	}
	if uc, ok := conn.(*net.UnixConn); ok {
		_ = uc.CloseWrite()
	}
	reply, err := io.ReadAll(conn)
	if err != nil {
		return "", err
	}
	text := strings.TrimSpace(string(reply))
	if text != "ok" {
		return text, fmt.Errorf("%s", text)
	}
	return text, nil
}

// dialWithin connects, trying again until `wait` has passed: a restored app's listener is back at once, a
// booting one may not be up yet.
func dialWithin(network, address string, wait time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(wait)
	for {
		conn, err := net.DialTimeout(network, address, time.Second)
		if err == nil || time.Now().After(deadline) {
			return conn, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cracCall sends one command to the agent, retrying the connection until `wait` has passed (a restored JVM's
// listener is back at once; a booting one may not be up yet), and returns the agent's reply.
func cracCall(command string, wait, timeout time.Duration) (string, error) {
	port := os.Getenv(CracPortVar)
	if port == "" {
		return "", fmt.Errorf("$%s is not set", CracPortVar)
	}
	conn, err := dialWithin("tcp", net.JoinHostPort("127.0.0.1", port), wait)
	if err != nil {
		return "", fmt.Errorf("the JVM helper does not answer on 127.0.0.1:%s (%v): is the agent loaded?", port, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "%s\n", command); err != nil {
		return "", err
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("no answer to %s within %s: %v", command, timeout, err)
	}
	reply = strings.TrimSpace(reply)
	if !strings.HasPrefix(reply, "ok") {
		return reply, fmt.Errorf("%s", strings.TrimPrefix(reply, "error: "))
	}
	return reply, nil
}

func crac(args []string) {
	if len(args) != 1 || (args[0] != "beforeCheckpoint" && args[0] != "afterRestore") {
		fail(ExitUsage, "usage: warmstart-init crac beforeCheckpoint|afterRestore")
	}
	reply, err := cracCall(args[0], 2*time.Second, 120*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "warmstart-init: %s failed: %v\n", args[0], err)
		os.Exit(1)
	}
	fmt.Printf("warmstart-init: %s: %s\n", args[0], reply)
}
