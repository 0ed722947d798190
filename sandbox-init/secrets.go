// secrets: the values of the app's secret_env, received once by a channel the engine does not record and served
// to the restored app on SecretsSocket.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxSecrets bounds what is read from the hand-over fd: secrets are environment values, not bulk data.
const maxSecrets = 1 << 20

// secretsTimeout bounds the wait for the hand-over: docker writes it to stdin right after the start.
const secretsTimeout = 30 * time.Second

// readSecrets returns the NAME=VALUE\0 pairs for the names in SecretNamesVar: from the fd in SecretsFdVar when set
// (read to the first empty pair or EOF, then wiped where it is a memfd and closed), else from this process's
// environment (an older launcher). Either way nothing of them stays in the environment CRIU and the app inherit.
func readSecrets() ([]byte, error) {
	names := os.Getenv(SecretNamesVar)
	fdText, fromFd := os.LookupEnv(SecretsFdVar)
	_ = os.Unsetenv(SecretsFdVar)
	var payload []byte
	if fromFd {
		fd, err := strconv.Atoi(fdText)
		if err != nil || fd < 0 {
			return nil, fmt.Errorf("%s=%q is not a file descriptor", SecretsFdVar, fdText)
		}
		if payload, err = readPairs(fd, secretsTimeout); err != nil {
			return nil, err
		}
	}
	wanted := map[string]bool{}
	for _, name := range strings.Split(names, ",") {
		if name != "" {
			wanted[name] = true
		}
	}
	var out []byte
	for _, pair := range bytes.Split(payload, []byte{0}) {
		if name, _, ok := strings.Cut(string(pair), "="); ok && wanted[name] {
			out = append(append(out, pair...), 0)
			delete(wanted, name)
		}
	}
	for name := range wanted { // not handed over by fd: an older launcher put it in the environment
		if value, ok := os.LookupEnv(name); ok {
			out = append(append(out, name+"="+value...), 0)
		}
		_ = os.Unsetenv(name)
	}
	return out, nil
}

// readPairs reads NUL-ended pairs from fd until an empty pair or EOF, within timeout, then closes the fd (a memfd
// is truncated first, so the values are gone from it even where the engine's monitor still holds it open).
func readPairs(fd int, timeout time.Duration) ([]byte, error) {
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var data []byte
		buf := make([]byte, 4096)
		for len(data) <= maxSecrets && !bytes.HasSuffix(data, []byte{0, 0}) && !bytes.Equal(data, []byte{0}) {
			n, err := syscall.Read(fd, buf)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				done <- result{nil, fmt.Errorf("reading the secrets from fd %d: %v", fd, err)}
				return
			}
			if n == 0 {
				break
			}
			data = append(data, buf[:n]...)
		}
		if len(data) > maxSecrets {
			done <- result{nil, errors.New("the secrets handed over are larger than 1 MiB")}
			return
		}
		done <- result{bytes.TrimRight(data, "\x00"), nil}
	}()
	select {
	case r := <-done:
		_ = syscall.Ftruncate(fd, 0) // a memfd: wiped; a pipe: EINVAL, nothing to wipe
		_ = syscall.Close(fd)
		return r.data, r.err
	case <-time.After(timeout):
		return nil, fmt.Errorf("no secrets arrived on fd %d within %s", fd, timeout)
	}
}

// serveSecrets answers every connection to SecretsSocket with the secrets' values. It listens before the
// restore, so the app finds it from its first instruction on.
func serveSecrets() error {
	if os.Getenv(SecretNamesVar) == "" && os.Getenv(SecretsFdVar) == "" {
		return nil
	}
	payload, err := readSecrets()
	if err != nil {
		return err
	}
	return listenSecrets(payload)
}

// holdsSecret names the first secret whose value (UTF-8, or UTF-16LE as JVM and Python strings may hold it) is
// in a file under dir, and that file: a snapshot must not hold one in clear. "" when none is.
func holdsSecret(dir string, payload []byte) (string, string, error) {
	type needle struct {
		name  string
		bytes []byte
	}
	var needles []needle
	for _, pair := range bytes.Split(payload, []byte{0}) {
		name, value, ok := strings.Cut(string(pair), "=")
		if !ok || len(value) < 6 || len(value) > maxSecretLen { // shorter ones match by chance (secretenv.py)
			continue
		}
		wide := make([]byte, 0, 2*len(value))
		for _, r := range value {
			wide = append(wide, byte(r), byte(r>>8))
		}
		needles = append(needles, needle{name, []byte(value)}, needle{name, wide})
	}
	found, where := "", ""
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || found != "" || !info.Mode().IsRegular() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		// 4 MiB at a time (page images can be GiBs, and the init may run under a memory limit), each window
		// starting with the previous one's tail, so a value across two reads is found too.
		buf, keep := make([]byte, 4<<20), 0
		for {
			n, err := io.ReadFull(f, buf[keep:])
			window := buf[:keep+n]
			for _, nd := range needles {
				if bytes.Contains(window, nd.bytes) {
					found, where = nd.name, path
					return filepath.SkipAll
				}
			}
			if err != nil { // io.EOF or io.ErrUnexpectedEOF: the file is read; anything else is a real error
				if err == io.EOF || err == io.ErrUnexpectedEOF {
					return nil
				}
				return err
			}
			keep = 2 * maxSecretLen
			if keep > len(window) {
				keep = len(window)
			}
			copy(buf, window[len(window)-keep:])
		}
	})
	return found, where, err
}

// maxSecretLen bounds one value in UTF-8 (UTF-16 doubles it): the overlap holdsSecret keeps between windows.
const maxSecretLen = 64 << 10

// listening: SecretsSocket is bound already (an entrypoint whose restore failed listens again for its cold start).
var listening bool

// listenSecrets serves payload on SecretsSocket (once per process).
func listenSecrets(payload []byte) error {
	if listening {
		return nil
	}
	listening = true
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: SecretsSocket}); err != nil {
		syscall.Close(fd)
		return err
	}
	if err := syscall.Listen(fd, 16); err != nil {
		syscall.Close(fd)
		return err
	}
	go func() {
		for {
			conn, _, err := syscall.Accept4(fd, syscall.SOCK_CLOEXEC)
			if err != nil {
				if err == syscall.EINTR || err == syscall.ECONNABORTED {
					continue
				}
				return
			}
			for sent := 0; sent < len(payload); {
				n, err := syscall.Write(conn, payload[sent:])
				if err != nil {
					break
				}
				sent += n
			}
			syscall.Close(conn)
		}
	}()
	return nil
}
