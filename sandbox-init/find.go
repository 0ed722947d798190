package main

// find: where a set of byte strings occurs in a file, at memory speed, for the host's secret scan
// (warmstart/security/finder.py), which matches the credential shapes and secret values at these offsets. Python's
// own search takes one pass per string (15 passes, 9.5 s over a GiB of pages here); this takes one (1.2 s).
//
//	warmstart-init find FILE    needles on stdin, one hex-encoded per line (a secret's value is never an argument);
//	                            "OFFSET INDEX" on stdout for every occurrence, in file order (by index at one offset)

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

const findChunk = 8 << 20

func findNeedles(args []string) {
	if len(args) != 1 {
		fail(ExitUsage, "usage: warmstart-init find FILE (needles on stdin, one hex-encoded per line)")
	}
	needles, err := readNeedles(os.Stdin)
	if err != nil {
		fail(ExitUsage, "find: %v", err)
	}
	f, err := os.Open(args[0])
	if err != nil {
		fail(ExitUsage, "find: %v", err)
	}
	defer f.Close()
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	if err := findAll(f, needles, func(off int64, index int) { fmt.Fprintf(out, "%d %d\n", off, index) }); err != nil {
		fail(ExitUsage, "find: %s: %v", args[0], err)
	}
	if err := out.Flush(); err != nil {
		os.Exit(ExitUsage)
	}
}

// readNeedles: one hex-encoded needle per line, each at least 2 bytes (the first two select the candidates).
func readNeedles(r io.Reader) ([][]byte, error) {
	var needles [][]byte
	lines := bufio.NewScanner(r)
	lines.Buffer(make([]byte, 64<<10), 1<<20)
	for lines.Scan() {
		needle, err := hex.DecodeString(strings.TrimSpace(lines.Text()))
		if err != nil || len(needle) < 2 {
			return nil, fmt.Errorf("needle %d is not hex of 2 bytes or more", len(needles))
		}
		needles = append(needles, needle)
	}
	if err := lines.Err(); err != nil {
		return nil, err
	}
	if len(needles) == 0 {
		return nil, errors.New("no needles on stdin")
	}
	return needles, nil
}

// findAll calls hit for every occurrence of every needle in r, in order of offset, then of needle index. It reads
// in chunks, carrying the last longest-needle-minus-one bytes over, so that memory stays bounded: candidates are
// the positions whose first two bytes start some needle (a table lookup per byte), then compared in full.
func findAll(r io.Reader, needles [][]byte, hit func(off int64, index int)) error {
	var first [1 << 16]bool
	byKey := map[uint16][]int{}
	longest := 0
	for i, n := range needles {
		key := uint16(n[0])<<8 | uint16(n[1])
		first[key] = true
		byKey[key] = append(byKey[key], i)
		if len(n) > longest {
			longest = len(n)
		}
	}
	buf := make([]byte, findChunk+longest)
	var base int64 // file offset of buf[0]
	carry := 0
	for {
		n, err := io.ReadFull(r, buf[carry:])
		end := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
		if err != nil && !end {
			return err
		}
		data := buf[:carry+n]
		limit := len(data) // positions checked in this round: those a later read cannot extend
		if !end && len(data) > longest-1 {
			limit = len(data) - (longest - 1)
		} else if !end {
			limit = 0
		}
		for i := 0; i < limit && i+1 < len(data); i++ {
			key := uint16(data[i])<<8 | uint16(data[i+1])
			if !first[key] {
				continue
			}
			for _, index := range byKey[key] {
				if hasPrefix(data[i:], needles[index]) {
					hit(base+int64(i), index)
				}
			}
		}
		if end {
			return nil
		}
		carry = copy(buf, data[limit:])
		base += int64(limit)
	}
}

func hasPrefix(data, needle []byte) bool {
	return len(data) >= len(needle) && string(data[:len(needle)]) == string(needle)
}
