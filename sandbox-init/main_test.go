package main

import (
	"strings"
	"testing"
)

func TestFlagsStopAtDoubleDash(t *testing.T) {
	f, rest := flags([]string{"--pid-base", "300", "--", "java", "--pid-base", "1"}, "pid-base", "user")
	if f["pid-base"] != "300" || strings.Join(rest, " ") != "java --pid-base 1" {
		t.Fatalf("got %v %v", f, rest)
	}
}
