package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestADumpGoesToRAMOnlyWhereTheLimitsLeaveRoom(t *testing.T) {
	dir := t.TempDir()
	self := []int{os.Getpid()} // this test's own RSS: a few MiB
	plenty := writeFile(t, dir, "meminfo", "MemTotal: 8000000 kB\nMemAvailable:    4000000 kB\n")
	scarce := writeFile(t, dir, "meminfo-low", "MemAvailable:      10240 kB\n")
	unlimited := writeFile(t, dir, "max-none", "max\n")
	tight := writeFile(t, dir, "max-tight", "104857600\n") // 100 MiB
	roomy := writeFile(t, dir, "max-roomy", "4294967296\n")
	used := writeFile(t, dir, "current", "94371840\n") // 90 MiB

	if size, why := ramDumpSize(self, plenty, unlimited, used); size <= ramSlack || why != "" {
		t.Fatalf("no limit, memory free: want RAM, got %d (%s)", size, why)
	}
	if size, why := ramDumpSize(self, plenty, roomy, used); size == 0 {
		t.Fatalf("a roomy limit: want RAM, got disk (%s)", why)
	}
	if size, why := ramDumpSize(self, plenty, tight, used); size != 0 || !strings.Contains(why, "memory limit") {
		t.Fatalf("10 MiB left under the limit: want disk, got %d (%s)", size, why)
	}
	if size, why := ramDumpSize(self, scarce, unlimited, used); size != 0 || !strings.Contains(why, "host has") {
		t.Fatalf("10 MiB available on the host: want disk, got %d (%s)", size, why)
	}
}
