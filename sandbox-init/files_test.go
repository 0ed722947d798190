package main

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

type member struct {
	name, link string
	kind       byte
	body       string
}

func archive(t *testing.T, members ...member) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rootfs.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for _, m := range members {
		hdr := &tar.Header{Name: m.name, Linkname: m.link, Typeflag: m.kind, Mode: 0o640, Size: int64(len(m.body))}
		if m.kind != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if m.kind == tar.TypeReg {
			if _, err := tw.Write([]byte(m.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

func TestExtractPutsFilesBackWithTheirModes(t *testing.T) {
	root := t.TempDir()
	err := extract(archive(t,
		member{name: "tmp/hsperfdata_root", kind: tar.TypeDir},
		member{name: "tmp/hsperfdata_root/300", kind: tar.TypeReg, body: "perf"},
		member{name: "var/log/app..log", kind: tar.TypeReg, body: "two dots in a name are fine"},
		member{name: "tmp/current", kind: tar.TypeSymlink, link: "hsperfdata_root/300"},
	), root, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "tmp/hsperfdata_root/300"))
	if err != nil || string(data) != "perf" {
		t.Fatalf("file not restored: %q %v", data, err)
	}
	if info, _ := os.Stat(filepath.Join(root, "tmp/hsperfdata_root/300")); info.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640", info.Mode().Perm())
	}
	if target, _ := os.Readlink(filepath.Join(root, "tmp/current")); target != "hsperfdata_root/300" {
		t.Fatalf("symlink not restored: %q", target)
	}
}

func TestExtractRefusesWhatCouldEscape(t *testing.T) {
	cases := map[string]member{
		"dot-dot":   {name: "tmp/../../escape", kind: tar.TypeReg, body: "x"},
		"hard link": {name: "tmp/hard", kind: tar.TypeLink, link: "etc/shadow"},
	}
	for label, m := range cases {
		root := t.TempDir()
		err := extract(archive(t, m), root, nil)
		if err == nil || !strings.Contains(err.Error(), "refused archive member") {
			t.Fatalf("%s: want a refusal, got %v", label, err)
		}
	}
}

func TestExtractDoesNotWriteThroughASymlinkedDirectory(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "tmp")); err != nil {
		t.Fatal(err)
	}
	err := extract(archive(t, member{name: "tmp/planted", kind: tar.TypeReg, body: "x"}), root, nil)
	if err == nil || !strings.Contains(err.Error(), "is a symlink") {
		t.Fatalf("want a refusal, got %v", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
		t.Fatal("wrote through the symlink")
	}
}

func TestExtractNeverWritesThroughAMount(t *testing.T) {
	mounts := []string{"/", "/dev", "/dev/shm", "/data", "/etc/hosts"}
	for _, name := range []string{"data/planted", "data", "etc/hosts", "dev/null"} {
		root := t.TempDir()
		err := extract(archive(t, member{name: "tmp/ok", kind: tar.TypeReg, body: "x"},
			member{name: name, kind: tar.TypeReg, body: "x"}), root, mounts)
		if err == nil || !strings.Contains(err.Error(), "lies on the mount") {
			t.Fatalf("%s: want a refusal, got %v", name, err)
		}
		if _, err := os.Stat(filepath.Join(root, name)); err == nil {
			t.Fatalf("%s: written through the mount", name)
		}
	}
	root := t.TempDir()
	err := extract(archive(t, member{name: "dev/shm/seg", kind: tar.TypeReg, body: "x"},
		member{name: "database/x", kind: tar.TypeReg, body: "x"}), root, mounts)
	if err != nil {
		t.Fatalf("/dev/shm and a path that only starts like a mount are the container's own: %v", err)
	}
}

func TestMountPointsReadsMountinfo(t *testing.T) {
	info := "22 1 0:21 / / rw - overlay overlay rw\n" +
		"23 22 0:22 / /dev rw - tmpfs tmpfs rw\n" +
		"24 22 8:1 /vol /srv/my\\040data rw - ext4 /dev/vda rw\n"
	got, err := mountPoints(strings.NewReader(info))
	if err != nil || strings.Join(got, "|") != "/|/dev|/srv/my data" {
		t.Fatalf("got %q %v", got, err)
	}
	if mountOf("/srv/my data/x", got) != "/srv/my data" || mountOf("/srv/other", got) != "/" {
		t.Fatal("mountOf picks the wrong mount")
	}
}

func TestBootTimeAgreesWithBtimeToTheSecondAndIsPast(t *testing.T) {
	got, err := bootTime()
	if err != nil {
		t.Fatal(err)
	}
	fields, _ := statFields(1)
	ticks, _ := strconv.ParseInt(fields[19], 10, 64)
	data, _ := os.ReadFile("/proc/stat")
	var btime int64
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "btime ") {
			btime, _ = strconv.ParseInt(strings.TrimSpace(line[6:]), 10, 64)
		}
	}
	coarse := time.Unix(btime, 0).Add(time.Duration(ticks) * 10 * time.Millisecond)
	if d := got.Sub(coarse); d < -1100*time.Millisecond || d > 1100*time.Millisecond {
		t.Fatalf("bootTime %v is %v away from btime's %v", got, d, coarse)
	}
	if !got.Before(time.Now()) {
		t.Fatalf("bootTime %v is not in the past", got)
	}
}
