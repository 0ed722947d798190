// Post-copy migration (warmstart/restore/postcopy.py): the destination restores before the app's memory has arrived; its
// page daemon fetches the lazy pages from the source host's CRIU page server, on fault and in the background.
//
// The source dumps normally (all pages to its local cache), then `warmstart-init post-copy` writes a thin copy
// of the images for the destination: every PE_LAZY pagemap entry loses PE_PRESENT and its pages leave the pages
// file, which is the shape CRIU's own `dump --lazy-pages` writes (criu/page-xfer.c get_pagemap_flags). The source
// host serves the full images with `criu page-server --lazy-pages -D FULL` (criu/page-xfer.c
// page_server_init_send: it serves the PE_LAZY pages of the images); the destination's init runs
// `criu lazy-pages --page-server --address A --port P` against it (RemoteMode). Both ends authenticate with TLS
// certificates of a CA made for this one migration (the files below, handed to the destination by the launcher).
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

const (
	RemoteMode     = "remote"                // LazyVar's value: the lazy pages come from PageServerVar
	PageServerVar  = "WARMSTART_PAGE_SERVER" // "ADDRESS:PORT" of the source's page server
	TLSDir         = "/.warmstart/postcopy"  // warmstart/restore/postcopy.py TLS_MOUNT: a read-only tmpfs dir of the host's
	TLSCACert      = "ca.pem"                // the migration's CA
	TLSClientCert  = "client.pem"            // the destination's certificate, signed by the CA
	TLSClientKey   = "client.key"            // and its key
	remoteDeadline = 30 * time.Second        // for the page daemon to connect to the source and listen here
)

var taskPagemap = regexp.MustCompile(`^pagemap-[0-9]+\.img$`) // a process's; pagemap-shmem-* stay as they are

// postCopy is `warmstart-init post-copy --images FULL --out THIN`: THIN gets every image of FULL, with the pages
// of PE_LAZY entries left out (they will come from the page server). Prints "LAZY_BYTES KEPT_BYTES". Run on the
// host by warmstart/restore/postcopy.py; THIN must exist and be empty.
func postCopy(args []string) {
	f, _ := flags(args, "images", "out")
	if f["images"] == "" || f["out"] == "" {
		fail(ExitUsage, "post-copy: --images DIR and --out DIR are required")
	}
	lazy, kept, err := thinImages(f["images"], f["out"])
	if err != nil {
		fail(ExitUsage, "post-copy: %v", err)
	}
	fmt.Printf("%d %d\n", lazy, kept)
}

func thinImages(full, thin string) (int64, int64, error) {
	entries, err := os.ReadDir(full)
	if err != nil {
		return 0, 0, err
	}
	thinned := map[string]bool{} // pages files rewritten with their pagemap
	var lazy, kept int64
	for _, e := range entries {
		if !taskPagemap.MatchString(e.Name()) {
			continue
		}
		pm, err := readPagemap(filepath.Join(full, e.Name()))
		if err != nil {
			return 0, 0, err
		}
		pages := fmt.Sprintf("pages-%d.img", pm.PagesID)
		if thinned[pages] {
			return 0, 0, fmt.Errorf("%s shares %s with another pagemap", e.Name(), pages)
		}
		thinned[pages] = true
		l, k, err := thinPages(pm, filepath.Join(full, pages), filepath.Join(thin, pages))
		if err != nil {
			return 0, 0, err
		}
		lazy, kept = lazy+l, kept+k
		if err := os.WriteFile(filepath.Join(thin, e.Name()), pm.encode(), 0o600); err != nil {
			return 0, 0, err
		}
	}
	for _, e := range entries {
		if taskPagemap.MatchString(e.Name()) || thinned[e.Name()] {
			continue
		}
		if !e.Type().IsRegular() {
			return 0, 0, fmt.Errorf("%s is not a regular file", e.Name())
		}
		if err := copyFile(filepath.Join(full, e.Name()), filepath.Join(thin, e.Name())); err != nil {
			return 0, 0, err
		}
	}
	return lazy, kept, nil
}

// thinPages writes to `out` the stored pages of pm's entries that are not lazy, and marks the lazy ones not
// present (in pm). Returns the bytes left out and kept.
func thinPages(pm *pagemap, in, out string) (int64, int64, error) {
	src, err := os.Open(in)
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()
	dst, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, 0, err
	}
	var lazy, kept int64
	for i, e := range pm.Entries {
		if e.Flags&pePresent == 0 || e.Flags&peParent != 0 {
			continue
		}
		size := int64(e.NrPages) * pageSize
		if e.Flags&peLazy != 0 {
			if _, err := src.Seek(size, io.SeekCurrent); err != nil {
				dst.Close()
				return 0, 0, err
			}
			pm.Entries[i].Flags &^= pePresent
			lazy += size
			continue
		}
		if n, err := io.CopyN(dst, src, size); err != nil {
			dst.Close()
			return 0, 0, fmt.Errorf("%s: %d of %d bytes: %v", in, n, size, err)
		}
		kept += size
	}
	return lazy, kept, dst.Close()
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// startRemotePages starts the page daemon against the source's page server (PageServerVar), authenticated with
// the snapshot's TLS files, and waits for its socket. There is no eager fallback: the pages are not here.
func startRemotePages(snap, work string) (*lazyDaemon, error) {
	server := os.Getenv(PageServerVar)
	i := strings.LastIndexByte(server, ':')
	if i < 1 {
		return nil, fmt.Errorf("%s=%q is not ADDRESS:PORT", PageServerVar, server)
	}
	address, port := strings.Trim(server[:i], "[]"), server[i+1:]
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return nil, fmt.Errorf("%s=%q is not ADDRESS:PORT", PageServerVar, server)
	}
	tls := []string{"--tls", "--tls-no-cn-verify", "--tls-cacert", filepath.Join(TLSDir, TLSCACert),
		"--tls-cert", filepath.Join(TLSDir, TLSClientCert), "--tls-key", filepath.Join(TLSDir, TLSClientKey)}
	d, err := startPageDaemon(filepath.Join(snap, ImagesDir), work, remoteDeadline,
		append([]string{"--page-server", "--address", address, "--port", port}, tls...)...)
	if err != nil {
		return nil, fmt.Errorf("post-copy: the pages of this snapshot are served by %s, the host it migrates from "+
			"(a post-copy snapshot is restored once, while its migration runs): %v", server, err)
	}
	return d, nil
}

// restoreRemote restores the app lazily with its pages from the source's page server. Any failure before the
// app is ready stops it and fails the restore (the launcher then says why; migrate restores on the source).
func restoreRemote(snap string, meta Meta) *lazyDaemon {
	daemon, err := startRemotePages(snap, WorkDir)
	if err != nil {
		fail(ExitRestoreFailed, "restore: %v", err)
	}
	if err := criuRestore(snap, meta, true); err != nil {
		daemon.kill()
		fail(ExitRestoreFailed, "restore: post-copy: %v", err)
	}
	// The daemon connects to the page server once the restore has handed it the app's userfaultfds: wait for
	// that connection (or the daemon's end) before the app counts as restored.
	server := os.Getenv(PageServerVar)
	for deadline := time.Now().Add(remoteDeadline); ; time.Sleep(2 * time.Millisecond) {
		if st, gone := daemon.exited(); gone {
			if finished(st) {
				break // every page arrived already
			}
			stopRestored(meta.Pid)
			fail(ExitRestoreFailed, "restore: post-copy: the page daemon ended (%s) before the app's memory "+
				"arrived from %s\n%s", describe(st), server, logExcerpt(filepath.Join(WorkDir, LazyPagesLog), LazyPagesLog))
		}
		if connectedTo(server) {
			break
		}
		if time.Now().After(deadline) {
			daemon.kill()
			stopRestored(meta.Pid)
			fail(ExitRestoreFailed, "restore: post-copy: the page daemon did not connect to %s within %s", server,
				remoteDeadline)
		}
	}
	fmt.Fprintf(os.Stderr, "warmstart-init: the app's memory streams from %s\n", server)
	afterRestore(meta)
	if st, gone := daemon.exited(); gone && !finished(st) {
		stopRestored(meta.Pid)
		fail(ExitRestoreFailed, "restore: post-copy: the page daemon ended (%s) before the app was ready\n%s",
			describe(st), logExcerpt(filepath.Join(WorkDir, LazyPagesLog), LazyPagesLog))
	}
	return daemon
}

// connectedTo: this network namespace has an established TCP connection to server ("ADDRESS:PORT", IPv4), read
// from /proc/net/tcp (rem_address is the address in host byte order, hex, then the port: proc(5)).
func connectedTo(server string) bool {
	i := strings.LastIndexByte(server, ':')
	if i < 1 {
		return false
	}
	ip := net.ParseIP(server[:i]).To4()
	port, err := strconv.ParseUint(server[i+1:], 10, 16)
	if ip == nil || err != nil {
		return false
	}
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], port)
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		fields := strings.Fields(line)
		if len(fields) > 3 && fields[2] == want && fields[3] == "01" { // 01: TCP_ESTABLISHED
			return true
		}
	}
	return false
}
