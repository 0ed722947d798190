package main

import (
	"os"
	"path/filepath"
	"testing"
)

func table(t *testing.T, rows ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tcp")
	text := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	for _, r := range rows {
		text += r + "\n"
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOnlyLoopbackConnectionsAreKept(t *testing.T) {
	listening := "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1"
	epmd := "   1: 0100007F:1111 0100007F:DE40 01 00000000:00000000 00:00000000 00000000 0 0 2 1"
	client := "   2: 0500580A:1F90 0100580A:C350 01 00000000:00000000 00:00000000 00000000 0 0 3 1"
	waiting := "   3: 0500580A:1F90 0100580A:C351 06 00000000:00000000 00:00000000 00000000 0 0 0 1"
	v6loop := "   0: 00000000000000000000000001000000:1111 00000000000000000000000001000000:DE41 01 0 0 0 0 0 0 4 1"
	mapped := "   1: 0000000000000000FFFF00000100007F:1111 0000000000000000FFFF00000100007F:DE42 01 0 0 0 0 0 0 5 1"
	if !loopbackOnlyTCP(table(t, listening, epmd, waiting), table(t, v6loop, mapped)) {
		t.Fatal("loopback-only connections (and listeners, TIME_WAIT) should be kept")
	}
	if loopbackOnlyTCP(table(t, listening, epmd, client)) {
		t.Fatal("a connection with a peer outside must close them all")
	}
	if loopbackOnlyTCP(filepath.Join(t.TempDir(), "missing")) {
		t.Fatal("an unreadable table must not count as loopback-only")
	}
}
