package main

import (
	"bytes"
	"math/rand"
	"strings"
	"testing"
)

type findHit struct {
	off   int64
	index int
}

// Every occurrence, as a naive search finds them: planted across the chunk boundary, overlapping, at both ends.
func TestFindAllAgreesWithNaiveSearch(t *testing.T) {
	needles := [][]byte{[]byte("AKIA"), []byte("-----BEGIN "), []byte("ab"), []byte("abab"), []byte("secret-value")}
	data := make([]byte, findChunk*2+1000)
	rand.New(rand.NewSource(1)).Read(data)
	for _, at := range []int{0, 5, findChunk - 1, findChunk - 6, findChunk + 3, 2*findChunk - 2, len(data) - 12} {
		copy(data[at:], needles[(at%len(needles)+len(needles))%len(needles)])
	}
	copy(data[1000:], "ababab-----BEGIN secret-value")
	var want []findHit
	for i := range data {
		for j, n := range needles {
			if bytes.HasPrefix(data[i:], n) {
				want = append(want, findHit{int64(i), j})
			}
		}
	}
	var got []findHit
	if err := findAll(bytes.NewReader(data), needles, func(off int64, index int) {
		got = append(got, findHit{off, index})
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d hits, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("hit %d: %v, want %v", i, got[i], want[i])
		}
	}
}

func TestFindNeedlesAreHexOfTwoBytesOrMore(t *testing.T) {
	for _, bad := range []string{"", "zz\n", "41\n", "4142\nnothex\n"} {
		if _, err := readNeedles(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	needles, err := readNeedles(strings.NewReader("4142\n414b4941\n"))
	if err != nil || len(needles) != 2 || string(needles[1]) != "AKIA" {
		t.Fatalf("%q, %v", needles, err)
	}
}

// A file shorter than the longest needle, and one empty.
func TestFindShortInputs(t *testing.T) {
	for _, data := range []string{"", "A", "AKI", "AKIA"} {
		var got []findHit
		if err := findAll(strings.NewReader(data), [][]byte{[]byte("AKIA"), []byte("-----BEGIN ")},
			func(off int64, index int) { got = append(got, findHit{off, index}) }); err != nil {
			t.Fatal(err)
		}
		if want := strings.Count(data, "AKIA"); len(got) != want {
			t.Errorf("%q: %v", data, got)
		}
	}
}
