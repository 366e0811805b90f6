package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestRunNamesEachMissingCapability: run without one of the capabilities
// the datapath needs (its AF_XDP and packet sockets need CAP_NET_RAW)
// refuses to start with one line naming it, before it touches anything,
// instead of failing later on a socket's bare EPERM.
func TestRunNamesEachMissingCapability(t *testing.T) {
	nstest.RequirePrivileged(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv (util-linux) is missing")
	}
	xs, _ := binaries(t)
	for _, c := range []string{"net_raw", "net_admin", "bpf"} {
		got := oneLine(t, "setpriv", "--bounding-set", "-"+c, "--", xs, "run", "--iface", "lo",
			"--socket", filepath.Join(t.TempDir(), "a.sock"))
		want := "xsessiond: not privileged: missing CAP_" + strings.ToUpper(c) + "; "
		if !strings.HasPrefix(got, want) {
			t.Errorf("without CAP_%s:\n got %q\nwant %q...", strings.ToUpper(c), got, want)
		}
	}
}
