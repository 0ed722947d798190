// CRIU's pagemap images, read and rewritten for the working set (see workingset.go).
//
// Format (criu/include/magic.h, criu/protobuf-desc.c, images/pagemap.proto): a file starts with IMG_COMMON_MAGIC
// and PAGEMAP_MAGIC (u32 each), then entries, each a u32 length and a protobuf message: first a pagemap_head
// {pages_id = 1}, then pagemap_entry {vaddr = 1, compat_nr_pages = 2, in_parent = 3, flags = 4, nr_pages = 5}
// (CRIU writes the count to field 5 and leaves 0 in the required field 2: criu/page-xfer.c write_pagemap_loc).
// The pages of PE_PRESENT entries lie back to back in pages-<pages_id>.img, in entry order. warmstart/security/secretenv.py
// reads the same format (to say where a secret sits).
package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
)

const (
	imgCommonMagic = 0x54564319 // criu/include/magic.h IMG_COMMON_MAGIC
	pagemapMagic   = 0x56084025 // criu/include/magic.h PAGEMAP_MAGIC
	pageSize       = 4096

	peParent  = 1 << 0 // criu/include/pagemap.h: pages are in a parent snapshot
	peLazy    = 1 << 1 // may be restored lazily
	pePresent = 1 << 2 // pages are in pages-<id>.img
)

type pagemapEntry struct {
	Vaddr   uint64
	NrPages uint64
	Flags   uint32
}

type pagemap struct {
	PagesID uint32
	Entries []pagemapEntry
}

func readPagemap(path string) (*pagemap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) < 8 || binary.LittleEndian.Uint32(data) != imgCommonMagic || binary.LittleEndian.Uint32(data[4:]) != pagemapMagic {
		return nil, fmt.Errorf("%s: not a CRIU pagemap image", path)
	}
	pm := &pagemap{}
	first := true
	for pos := 8; pos < len(data); {
		if pos+4 > len(data) {
			return nil, fmt.Errorf("%s: truncated", path)
		}
		n := int(binary.LittleEndian.Uint32(data[pos:]))
		pos += 4
		if pos+n > len(data) {
			return nil, fmt.Errorf("%s: truncated", path)
		}
		fields, err := varintFields(data[pos : pos+n])
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		pos += n
		if first {
			pm.PagesID, first = uint32(fields[1]), false
			continue
		}
		e := pagemapEntry{Vaddr: fields[1], NrPages: fields[5], Flags: uint32(fields[4])}
		if _, ok := fields[5]; !ok {
			e.NrPages = fields[2]
		}
		if _, ok := fields[4]; !ok { // images older than flags: in_parent or present
			e.Flags = pePresent
			if fields[3] != 0 {
				e.Flags = peParent
			}
		}
		pm.Entries = append(pm.Entries, e)
	}
	if first {
		return nil, fmt.Errorf("%s: no pagemap head", path)
	}
	return pm, nil
}

// encode writes the image back in CRIU's own field layout.
func (pm *pagemap) encode() []byte {
	out := binary.LittleEndian.AppendUint32(nil, imgCommonMagic)
	out = binary.LittleEndian.AppendUint32(out, pagemapMagic)
	msg := func(fields ...uint64) {
		var m []byte
		for i := 0; i < len(fields); i += 2 {
			m = binary.AppendUvarint(append(m, byte(fields[i]<<3)), fields[i+1])
		}
		out = append(binary.LittleEndian.AppendUint32(out, uint32(len(m))), m...)
	}
	msg(1, uint64(pm.PagesID))
	for _, e := range pm.Entries {
		msg(1, e.Vaddr, 2, 0, 4, uint64(e.Flags), 5, e.NrPages)
	}
	return out
}

func varintFields(m []byte) (map[int]uint64, error) {
	fields := map[int]uint64{}
	for pos := 0; pos < len(m); {
		key, n := binary.Uvarint(m[pos:])
		if n <= 0 {
			return nil, errors.New("bad field key")
		}
		pos += n
		if key&7 != 0 {
			return nil, fmt.Errorf("unexpected wire type %d", key&7)
		}
		value, n := binary.Uvarint(m[pos:])
		if n <= 0 {
			return nil, errors.New("bad varint")
		}
		pos += n
		fields[int(key>>3)] = value
	}
	return fields, nil
}

// pageRun is a run of pages of one process: where they are in memory and in the pages file (-1: not stored).
type pageRun struct {
	start, end uint64 // addresses, end exclusive
	offset     int64
}

// lazyRuns are the runs a lazy restore leaves to the page daemon (PE_LAZY entries), sorted by address.
func (pm *pagemap) lazyRuns() []pageRun {
	var runs []pageRun
	var offset int64
	for _, e := range pm.Entries {
		size := int64(e.NrPages) * pageSize
		stored := e.Flags&pePresent != 0 && e.Flags&peParent == 0
		if e.Flags&peLazy != 0 {
			r := pageRun{start: e.Vaddr, end: e.Vaddr + uint64(size), offset: -1}
			if stored {
				r.offset = offset
			}
			runs = append(runs, r)
		}
		if stored {
			offset += size
		}
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].start < runs[j].start })
	return runs
}

// find returns the run holding addr, or nil.
func find(runs []pageRun, addr uint64) *pageRun {
	i := sort.Search(len(runs), func(i int) bool { return runs[i].end > addr })
	if i < len(runs) && runs[i].start <= addr {
		return &runs[i]
	}
	return nil
}

// makeEager clears PE_LAZY on the given pages (page-aligned addresses), splitting entries where needed; the
// pages file is untouched, since entries keep their order and sizes add up the same. Returns how many pages
// became eager.
func (pm *pagemap) makeEager(pages map[uint64]bool) int {
	sorted := make([]uint64, 0, len(pages))
	for addr := range pages {
		sorted = append(sorted, addr)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	var out []pagemapEntry
	changed := 0
	emit := func(vaddr, end uint64, flags uint32) {
		if end > vaddr {
			out = append(out, pagemapEntry{Vaddr: vaddr, NrPages: (end - vaddr) / pageSize, Flags: flags})
		}
	}
	for _, e := range pm.Entries {
		if e.Flags&peLazy == 0 {
			out = append(out, e)
			continue
		}
		end := e.Vaddr + e.NrPages*pageSize
		cur := e.Vaddr // start of the lazy stretch not yet emitted
		for i := sort.Search(len(sorted), func(i int) bool { return sorted[i] >= e.Vaddr }); i < len(sorted) && sorted[i] < end; {
			first := sorted[i]
			last := first // extend over consecutive selected pages
			for i++; i < len(sorted) && sorted[i] == last+pageSize && sorted[i] < end; i++ {
				last = sorted[i]
			}
			emit(cur, first, e.Flags)
			emit(first, last+pageSize, e.Flags&^peLazy)
			changed += int((last + pageSize - first) / pageSize)
			cur = last + pageSize
		}
		emit(cur, end, e.Flags)
	}
	pm.Entries = out
	return changed
}
