package main

// warmstart-init entrypoint: a container that snapshots itself. The platform starts the container, the container
// decides: with a usable snapshot in the mounted directory it restores the app from it; otherwise it boots the app
// cold at a reserved PID, waits until it is ready, checkpoints it (it keeps running) and publishes the snapshot
// for the next container. Any problem with a snapshot means a cold start, with the reason in the log.
//
//	warmstart-init entrypoint --snapshot-dir DIR [--ready-http PATH | --ready-tcp] [--port N] [--ready-timeout S]
//	                          [--pid-base N] [--no-snapshot] [--secret-env NAME,...] -- CMD...
//
// Secrets (--secret-env, or $WARMSTART_SECRET_NAMES): their values are taken out of the environment before the app
// starts, as `warmstart build` withholds them (AWS SnapStart's pattern), and served on SecretsSocket only once the
// snapshot is taken (cold) or before the restore: warmstart_helper (or the app itself) reads them there after its
// restore point. A snapshot that holds a value anyway (UTF-8 or UTF-16) is not published.
//
// Layout of DIR (shared by any number of containers):
//
//	DIR/current -> snap-ID      a symlink, switched atomically once a snapshot is complete
//	DIR/snap-ID/                images/, rootfs.tar, sandbox.json, and manifest.json: key, pids, sha256 per file

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const entryManifest = "manifest.json"

type entryOptions struct {
	dir, readyHTTP string
	readyTCP       bool
	port           int
	timeout        time.Duration
	pidBase        int
	noSnapshot     bool
	command        []string
}

type snapManifest struct {
	SchemaVersion int               `json:"schema_version"`
	Key           string            `json:"key"`
	Pids          []int             `json:"pids"`
	Files         map[string]string `json:"files"` // relative name -> sha256
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "warmstart entrypoint: "+format+"\n", args...)
}

func parseEntry(args []string) entryOptions {
	o := entryOptions{dir: "/snapshots", port: 8080, timeout: 120 * time.Second, pidBase: 300}
	if env := os.Getenv("WARMSTART_SNAPSHOT_DIR"); env != "" {
		o.dir = env
	}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		next := func() string {
			if i+1 >= len(args) {
				fail(ExitUsage, "entrypoint: %s needs a value", arg)
			}
			i++
			return args[i]
		}
		switch arg {
		case "--":
			o.command = args[i+1:]
			i = len(args)
		case "--snapshot-dir":
			o.dir = next()
		case "--ready-http":
			o.readyHTTP = next()
		case "--ready-tcp":
			o.readyTCP = true
		case "--port":
			n, err := strconv.Atoi(next())
			if err != nil || n < 1 || n > 65535 {
				fail(ExitUsage, "entrypoint: --port: %q is not a port number (1-65535)", args[i])
			}
			o.port = n
		case "--ready-timeout":
			n, err := strconv.ParseFloat(next(), 64)
			if err != nil || n <= 0 {
				fail(ExitUsage, "entrypoint: --ready-timeout: %q is not a positive number of seconds", args[i])
			}
			o.timeout = time.Duration(n * float64(time.Second))
		case "--pid-base":
			n, err := strconv.Atoi(next())
			if err != nil || n < 2 || n > 4000000 {
				fail(ExitUsage, "entrypoint: --pid-base: %q is not a PID (2-4000000)", args[i])
			}
			o.pidBase = n
		case "--no-snapshot":
			o.noSnapshot = true
		case "--secret-env": // NAME[,NAME...]: the same as the variable SecretNamesVar (which a pod spec can set)
			_ = os.Setenv(SecretNamesVar, next())
		default:
			fail(ExitUsage, "entrypoint: unknown option %q", arg)
		}
	}
	if len(o.command) == 0 {
		fail(ExitUsage, "entrypoint: give the app's command after --")
	}
	if o.readyHTTP != "" && o.readyTCP {
		fail(ExitUsage, "entrypoint: give --ready-http PATH or --ready-tcp, not both")
	}
	return o
}

// snapshotKey: a snapshot fits a container with the same command, image ($WARMSTART_IMAGE) and CRIU.
func snapshotKey(o entryOptions) string {
	version, _ := exec.Command(criuPath(), "--version").Output()
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s", strings.Join(o.command, "\x00"), os.Getenv("WARMSTART_IMAGE"), version)
	return hex.EncodeToString(h.Sum(nil))
}

func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// usable returns the current snapshot's dir and manifest, or why it cannot be restored here.
func usable(o entryOptions, key string) (string, snapManifest, string) {
	var m snapManifest
	target, err := os.Readlink(filepath.Join(o.dir, "current"))
	if err != nil {
		return "", m, "no snapshot yet"
	}
	if strings.Contains(target, "/") || !strings.HasPrefix(target, "snap-") {
		return "", m, fmt.Sprintf("current points at %q, not a snapshot of this directory", target)
	}
	snap := filepath.Join(o.dir, target)
	data, err := os.ReadFile(filepath.Join(snap, entryManifest))
	if err == nil {
		err = json.Unmarshal(data, &m)
	}
	if err != nil || m.SchemaVersion != 1 || len(m.Files) == 0 {
		return "", m, fmt.Sprintf("snapshot %s is damaged: unreadable manifest", target)
	}
	if m.Key != key {
		return "", m, fmt.Sprintf("snapshot %s is for another image or command", target)
	}
	for name, want := range m.Files {
		if hasDotDot(name) || strings.HasPrefix(name, "/") {
			return "", m, fmt.Sprintf("snapshot %s is damaged: file name %q", target, name)
		}
		if got, err := sha256File(filepath.Join(snap, name)); err != nil || got != want {
			return "", m, fmt.Sprintf("snapshot %s is damaged: %s does not match its sha256", target, name)
		}
	}
	var taken []int
	for _, pid := range m.Pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			taken = append(taken, pid)
		}
	}
	if len(taken) > 0 {
		return "", m, fmt.Sprintf("PID collision: PIDs %v the snapshot needs are taken in this container", taken)
	}
	return snap, m, ""
}

func entrypoint(args []string) {
	o := parseEntry(args)
	signals := make(chan os.Signal, 16)
	signal.Notify(signals)
	key := snapshotKey(o)
	start := time.Now()
	secrets, err := readSecrets() // out of the environment the app and CRIU inherit, whichever way it starts
	if err != nil {
		fail(ExitUsage, "entrypoint: %v", err)
	}
	if snap, _, why := usable(o, key); why == "" {
		meta, _, err := prepare(snap)
		if err == nil && len(secrets) > 0 {
			err = listenSecrets(secrets)
		}
		if err == nil {
			err = criuRestore(snap, meta, false)
		}
		if err == nil {
			logf("restored pid %d from %s in %d ms", meta.Pid, filepath.Base(snap), time.Since(start).Milliseconds())
			handOverSecrets(secrets, false)
			os.Exit(supervise(meta.Pid, signals, nil))
		}
		logf("starting cold: restore from %s failed: %v", filepath.Base(snap), err)
	} else {
		logf("starting cold: %s", why)
	}
	reservePid(o.pidBase)
	cmd, err := startApp(o.command, "")
	if err != nil {
		fail(ExitBootFailed, "entrypoint: %v", err)
	}
	pid := cmd.Process.Pid
	go func() {
		if !o.noSnapshot {
			snapshotWhenReady(o, key, pid, secrets)
		}
		handOverSecrets(secrets, true)
	}()
	os.Exit(supervise(pid, signals, nil))
}

// handOverSecrets gives the app its secrets after its restore point: served on SecretsSocket (listen: a cold start,
// now that its snapshot is taken), and pulled in by warmstart_helper's after-restore step where the app uses it.
func handOverSecrets(secrets []byte, listen bool) {
	if len(secrets) == 0 {
		return
	}
	if listen {
		if err := listenSecrets(secrets); err != nil {
			logf("cannot serve the app's secrets: %v", err)
			return
		}
	}
	if os.Getenv(PyHelperVar) == "1" {
		if _, err := pyAfterRestore(30*time.Second, 60*time.Second); err != nil {
			logf("warmstart_helper after_restore failed: %v", err)
		}
	}
}

// ready: the port accepts a connection (--ready-tcp), or GET PATH answers 2xx (plain HTTP/1.0 over net: net/http
// would double the init's size for one request).
func ready(o entryOptions) bool {
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", o.port), time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	if o.readyHTTP == "" {
		return true
	}
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", o.readyHTTP); err != nil {
		return false
	}
	status := make([]byte, 12) // "HTTP/1.x NNN"
	if _, err := io.ReadFull(conn, status); err != nil {
		return false
	}
	return strings.HasPrefix(string(status), "HTTP/") && status[9] == '2'
}

// snapshotWhenReady waits for readiness, dumps into a private staging dir of DIR (the app keeps running), hashes
// every file into the manifest, and publishes: one rename of the complete dir, then an atomic switch of current.
func snapshotWhenReady(o entryOptions, key string, pid int, secrets []byte) {
	deadline := time.Now().Add(o.timeout)
	for !ready(o) {
		if time.Now().After(deadline) {
			logf("not ready after %s: no snapshot taken", o.timeout)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	token := make([]byte, 4)
	_, _ = rand.Read(token)
	id := fmt.Sprintf("%s-%x", time.Now().UTC().Format("20060102T150405"), token)
	staging := filepath.Join(o.dir, fmt.Sprintf(".staging-%d-%x", os.Getpid(), token))
	if err := os.Mkdir(staging, 0o700); err != nil {
		logf("no snapshot taken: %v", err)
		return
	}
	err := publish(o, key, pid, staging, id, token, secrets)
	if err != nil {
		_ = os.RemoveAll(staging)
		logf("no snapshot taken: %v", err)
		return
	}
	logf("snapshot snap-%s published (%s)", id, filepath.Join(o.dir, "current"))
}

// publish dumps the app into staging, refuses a dump that holds a secret's value, hashes every file into the
// manifest, and makes it visible: one rename of the complete dir, then an atomic switch of current.
func publish(o entryOptions, key string, pid int, staging, id string, token, secrets []byte) error {
	if err := dumpTo(staging, pid, "run"); err != nil {
		return err
	}
	for _, leftover := range []string{DumpLog, "stats-dump"} {
		_ = os.Remove(filepath.Join(staging, leftover))
	}
	if name, where, err := holdsSecret(staging, secrets); err != nil || name != "" {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(staging, where)
		return fmt.Errorf("the app holds the value of secret %s in clear (in %s): not published", name, rel)
	}
	m := snapManifest{SchemaVersion: 1, Key: key, Pids: []int{pid}, Files: map[string]string{}}
	err := filepath.Walk(staging, func(path string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(staging, path)
		m.Files[rel], err = sha256File(path)
		return err
	})
	if err != nil {
		return err
	}
	data, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(staging, entryManifest), append(data, '\n'), 0o600); err != nil {
		return err
	}
	final := filepath.Join(o.dir, "snap-"+id)
	if err := os.Rename(staging, final); err != nil {
		return err
	}
	link := filepath.Join(o.dir, fmt.Sprintf(".current-%x", token))
	if err := os.Symlink("snap-"+id, link); err != nil {
		return err
	}
	return os.Rename(link, filepath.Join(o.dir, "current"))
}
