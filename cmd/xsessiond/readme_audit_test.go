package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestReadmeShowAppsExample checks the show apps output README.md shows
// for udpecho against what show apps prints for it: its columns and its
// fifo size.
func TestReadmeShowAppsExample(t *testing.T) {
	nstest.RequirePrivileged(t)
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "$ xsessiond ctl show apps\n")
	if !ok {
		t.Fatal("README.md shows no xsessiond ctl show apps")
	}
	lines := strings.SplitN(rest, "\n", 3)
	if len(lines) < 2 {
		t.Fatal("README.md's show apps has no row")
	}
	docHeader, docRow := strings.Fields(lines[0]), strings.Fields(lines[1])

	_, echo := binaries(t)
	_, sock, _ := startRigDaemon(t)
	p := startProcess(t, echo, "--socket", sock, "--listen", "udp://0.0.0.0:9000")
	p.waitLine(t, "echoing on", 10*time.Second)
	out, err := ctl(t, sock, "show", "apps")
	if err != nil {
		t.Fatal(err)
	}
	rows := checkColumns(t, out)
	if len(rows) != 1 {
		t.Fatalf("show apps:\n%s", out)
	}
	header := strings.Fields(strings.SplitN(out, "\n", 2)[0])
	if strings.Join(header, " ") != strings.Join(docHeader, " ") {
		t.Errorf("README.md's show apps header %q, show apps prints %q", docHeader, header)
	}
	fifo := rows[0]["FIFO USED/SIZE"]
	if len(docRow) == 0 || docRow[len(docRow)-1] != fifo {
		t.Errorf("README.md's show apps row %q: udpecho's fifo is %s", docRow, fifo)
	}
}

// TestReloadNamesChangedKeys checks that what a SIGHUP cannot apply names
// the config keys that changed and their values, not every value of the
// section.
func TestReloadNamesChangedKeys(t *testing.T) {
	merged := func(file string) []string {
		return restartNeeded(mergedConfig(t, "", "a"), mergedConfig(t, file, "a"))
	}
	for _, tc := range []struct{ file, want string }{
		{"limits: {max_apps: 1000}\n", "limits max_apps default -> 1000"},
		{"limits: {max_apps: 1000, max_ports_per_uid: 10}\n", "limits max_apps default -> 1000, max_ports_per_uid default -> 10"},
		{"control: {send_timeout: 5s}\n", "control send_timeout default -> 5s"},
		{"authorization: {admin: root}\n", "authorization admin default -> root"},
		{"interfaces: [{name: a, reassembly: {timeout: 10s}}]\n", "reassembly timeout default -> 10s"},
	} {
		got := merged(tc.file)
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("%q: %q, want %q", tc.file, got, tc.want)
		}
		if len(got) == 1 && regexp.MustCompile(`[{}]`).MatchString(got[0]) {
			t.Errorf("%q: %q prints a whole section", tc.file, got[0])
		}
	}
}
