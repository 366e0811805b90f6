package leakcheck

import (
	"os"
	"strings"
	"testing"
)

// Mappings counts the process's memory mappings whose line in
// /proc/self/maps contains s ("memfd:" for the shared memory segments of
// the daemon, "memfd:xsessiond:ct-" for cut-through ones). Mappings are
// not in a Snapshot: a test counts them before and after what it checks.
func Mappings(tb testing.TB, s string) int {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}
