package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// The thin images keep the eager pages and drop the lazy ones, which lose PE_PRESENT (CRIU's lazy-dump shape);
// every other image is copied as it is.
func TestThinImagesLeaveOutTheLazyPages(t *testing.T) {
	full, thin := t.TempDir(), t.TempDir()
	pm := &pagemap{PagesID: 3, Entries: []pagemapEntry{
		{Vaddr: 0x1000, NrPages: 2, Flags: pePresent},
		{Vaddr: 0x10000, NrPages: 3, Flags: pePresent | peLazy},
		{Vaddr: 0x20000, NrPages: 1, Flags: peParent}, // in a parent: not in this pages file
		{Vaddr: 0x30000, NrPages: 1, Flags: pePresent},
	}}
	var pages []byte
	for i := 0; i < 6; i++ {
		pages = append(pages, bytes.Repeat([]byte{byte('a' + i)}, pageSize)...)
	}
	files := map[string][]byte{"pagemap-1.img": pm.encode(), "pages-3.img": pages, "core-1.img": []byte("core"),
		"pagemap-shmem-9.img": []byte("shmem")}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(full, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	lazy, kept, err := thinImages(full, thin)
	if err != nil || lazy != 3*pageSize || kept != 3*pageSize {
		t.Fatalf("thinImages: %d %d %v", lazy, kept, err)
	}
	got, _ := os.ReadFile(filepath.Join(thin, "pages-3.img"))
	want := append(append([]byte{}, pages[:2*pageSize]...), pages[5*pageSize:]...) // pages a, b and f
	if !bytes.Equal(got, want) {
		t.Fatalf("thin pages: %d bytes", len(got))
	}
	back, err := readPagemap(filepath.Join(thin, "pagemap-1.img"))
	if err != nil {
		t.Fatal(err)
	}
	flags := []uint32{}
	for _, e := range back.Entries {
		flags = append(flags, e.Flags)
	}
	if !reflect.DeepEqual(flags, []uint32{pePresent, peLazy, peParent, pePresent}) {
		t.Fatalf("flags: %v", flags)
	}
	for _, name := range []string{"core-1.img", "pagemap-shmem-9.img"} {
		if data, _ := os.ReadFile(filepath.Join(thin, name)); !bytes.Equal(data, files[name]) {
			t.Fatalf("%s not copied", name)
		}
	}
	if _, _, err := thinImages(full, thin); err == nil { // never over existing files
		t.Fatal("thinImages wrote over an existing thin dir")
	}
}

func TestConnectedToRejectsWhatIsNotIPv4(t *testing.T) {
	for _, server := range []string{"[::1]:80", "host:80", "10.0.0.1:99999", "10.0.0.1", ""} {
		if connectedTo(server) {
			t.Fatalf("connectedTo(%q)", server)
		}
	}
}
