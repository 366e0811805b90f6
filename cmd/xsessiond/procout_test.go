package main

import (
	"strings"
	"testing"
)

// TestProcessOutputComplete: once a started process has exited, its
// output holds every line it wrote, the last one included.
func TestProcessOutputComplete(t *testing.T) {
	for i := range 300 {
		p := startProcess(t, "sh", "-c", "echo first; echo last")
		<-p.exited
		if out := p.output(); !strings.Contains(out, "last\n") {
			t.Fatalf("run %d: output after the exit lacks the last line: %q", i, out)
		}
	}
}
