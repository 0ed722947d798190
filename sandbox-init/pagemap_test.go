package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestPagemapRoundTripAndWorkingSetSplit(t *testing.T) {
	pm := &pagemap{PagesID: 7, Entries: []pagemapEntry{
		{Vaddr: 0x1000, NrPages: 2, Flags: pePresent},                 // eager already (not lazy-able)
		{Vaddr: 0x10000, NrPages: 4, Flags: pePresent | peLazy},       // lazy, pages 0x10000..0x13000
		{Vaddr: 0x20000, NrPages: 1 << 33, Flags: pePresent | peLazy}, // a count beyond 32 bits survives
	}}
	path := filepath.Join(t.TempDir(), "pagemap-1.img")
	if err := os.WriteFile(path, pm.encode(), 0o600); err != nil {
		t.Fatal(err)
	}
	back, err := readPagemap(path)
	if err != nil || !reflect.DeepEqual(back, pm) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	runs := back.lazyRuns()
	if len(runs) != 2 || runs[0].offset != 2*pageSize || runs[1].offset != 6*pageSize {
		t.Fatalf("runs: %+v", runs)
	}
	if got := back.makeEager(map[uint64]bool{0x11000: true, 0x12000: true, 0x1000: true}); got != 2 {
		t.Fatalf("made eager: %d", got)
	}
	want := []pagemapEntry{
		{Vaddr: 0x1000, NrPages: 2, Flags: pePresent},
		{Vaddr: 0x10000, NrPages: 1, Flags: pePresent | peLazy},
		{Vaddr: 0x11000, NrPages: 2, Flags: pePresent},
		{Vaddr: 0x13000, NrPages: 1, Flags: pePresent | peLazy},
		{Vaddr: 0x20000, NrPages: 1 << 33, Flags: pePresent | peLazy},
	}
	if !reflect.DeepEqual(back.Entries, want) {
		t.Fatalf("split: %+v", back.Entries)
	}
	if runs := back.lazyRuns(); runs[1].offset != 5*pageSize { // the pages file's layout is unchanged
		t.Fatalf("offsets moved: %+v", runs)
	}
}

func TestRecordedSpacesFollowRemapsAndUnmaps(t *testing.T) {
	sp := &space{pid: 1, runs: []movedRun{{pageRun: pageRun{start: 0x10000, end: 0x14000, offset: 0}, vaddr: 0x10000}}}
	sp.move(0x11000, 0x50000, 0x2000) // pages 0x11000 and 0x12000 now live at 0x50000
	if r := sp.find(0x51000); r == nil || r.vaddr+(0x51000-r.start) != 0x12000 || r.offset+int64(0x51000-r.start) != 2*pageSize {
		t.Fatalf("after move: %+v", sp.runs)
	}
	if sp.find(0x11000) != nil || sp.find(0x13000) == nil {
		t.Fatalf("after move: %+v", sp.runs)
	}
	sp.cut(0x10000, 0x11000)
	if sp.find(0x10000) != nil {
		t.Fatalf("after cut: %+v", sp.runs)
	}
}

func TestReadFaultsRefusesWhatIsNotAPage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "faults")
	for _, bad := range []string{"1 1001\n", "x 1000\n", "0 1000\n", "1\n"} {
		_ = os.WriteFile(path, []byte(bad), 0o600)
		if _, err := readFaults(path); err == nil {
			t.Fatalf("accepted %q", bad)
		}
	}
	_ = os.WriteFile(path, []byte("303 7f0000001000\n303 7f0000002000\n"), 0o600)
	got, err := readFaults(path)
	if err != nil || len(got[303]) != 2 {
		t.Fatalf("%v %v", got, err)
	}
}
