package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func memfdWith(t *testing.T, data string) int {
	t.Helper()
	fd, err := memfdCreate("secrets-test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := syscall.Write(fd, []byte(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := syscall.Seek(fd, 0, 0); err != nil {
		t.Fatal(err)
	}
	return fd
}

func memfdCreate(name string) (int, error) {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return -1, err
	}
	fd, _, errno := syscall.Syscall(319 /* memfd_create, x86_64 */, uintptr(unsafe.Pointer(p)), 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

func TestSecretsComeFromTheFdAndAreWipedThere(t *testing.T) {
	fd := memfdWith(t, "API_KEY=s3cret\x00OTHER=not asked\x00DB=pw=with=equals\x00\x00")
	dup, err := syscall.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(dup)
	t.Setenv(SecretNamesVar, "API_KEY,DB")
	t.Setenv(SecretsFdVar, strconv.Itoa(fd))
	t.Setenv("API_KEY", "from the environment: not used")
	got, err := readSecrets()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "API_KEY=s3cret\x00DB=pw=with=equals\x00" {
		t.Fatalf("got %q", got)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(dup, &st); err != nil || st.Size != 0 {
		t.Fatalf("the memfd still holds %d bytes (%v)", st.Size, err)
	}
	if _, ok := os.LookupEnv(SecretsFdVar); ok {
		t.Fatal("the fd variable stays in the environment")
	}
}

func TestSecretsFromAPipeEndAtTheEmptyPairAndTimeOut(t *testing.T) {
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(p[1])
	if _, err := syscall.Write(p[1], []byte("A=1\x00\x00")); err != nil {
		t.Fatal(err)
	}
	got, err := readPairs(p[0], time.Second) // the writer stays open: the empty pair ends it
	if err != nil || string(got) != "A=1" {
		t.Fatalf("got %q %v", got, err)
	}
	var q [2]int
	if err := syscall.Pipe(q[:]); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(q[1])
	if _, err := readPairs(q[0], 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "no secrets arrived") {
		t.Fatalf("want a timeout, got %v", err)
	}
}

func TestSecretsFromTheEnvironmentStillWork(t *testing.T) {
	t.Setenv(SecretNamesVar, "API_KEY")
	t.Setenv("API_KEY", "old-launcher")
	os.Unsetenv(SecretsFdVar)
	got, err := readSecrets()
	if err != nil || string(got) != "API_KEY=old-launcher\x00" {
		t.Fatalf("got %q %v", got, err)
	}
	if _, ok := os.LookupEnv("API_KEY"); ok {
		t.Fatal("the value stays in the environment")
	}
}

func TestHoldsSecretFindsAValueInEitherEncodingAcrossReads(t *testing.T) {
	dir := t.TempDir()
	payload := []byte("API_KEY=sk-live-1234\x00SHORT=abc\x00")
	if err := os.WriteFile(dir+"/clean.img", make([]byte, 9<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if name, _, err := holdsSecret(dir, payload); err != nil || name != "" {
		t.Fatalf("a clean dir: %q %v", name, err)
	}
	wide := []byte{}
	for _, c := range "sk-live-1234" {
		wide = append(wide, byte(c), 0)
	}
	data := append(make([]byte, 4<<20-5), wide...) // straddles the first 4 MiB window
	if err := os.WriteFile(dir+"/pages-1.img", data, 0o600); err != nil {
		t.Fatal(err)
	}
	name, where, err := holdsSecret(dir, payload)
	if err != nil || name != "API_KEY" || !strings.HasSuffix(where, "pages-1.img") {
		t.Fatalf("got %q in %q (%v)", name, where, err)
	}
	if err := os.WriteFile(dir+"/pages-1.img", []byte("xxabcxx"), 0o600); err != nil {
		t.Fatal(err)
	}
	if name, _, _ := holdsSecret(dir, payload); name != "" {
		t.Fatalf("a value under 6 bytes matched: %q", name)
	}
}
