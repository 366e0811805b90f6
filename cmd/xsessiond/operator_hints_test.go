package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestOperatorCleanupNamesNetns: cleanup --iface of an interface that is
// in a named netns, given without --netns, says to give --netns and names
// the namespace that has it.
func TestOperatorCleanupNamesNetns(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	xs, _ := binaries(t)
	mistake(t, xs, []string{"cleanup", "--iface", rig.B.Link},
		`interface "`+rig.B.Link+`" does not exist in this netns`, "--netns", rig.B.Name, "cleanup --stale")
	mistake(t, xs, []string{"cleanup", "--iface", "nosuchif0", "--netns", rig.B.Name},
		`"nosuchif0" does not exist in netns "`+rig.B.Name+`"`, "ip -n "+rig.B.Name+" link")
}

// TestOperatorCleanupStaleUnprivileged: cleanup --stale as a user who may
// not read the pins fails, says to run it as root, and does not claim
// that nothing is stale.
func TestOperatorCleanupStaleUnprivileged(t *testing.T) {
	nstest.RequirePrivileged(t)
	if os.Getuid() != 0 {
		t.Skip("needs root to run the binary as another user")
	}
	xs, _ := binaries(t)
	if err := os.Chmod(filepath.Dir(xs), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(xs, "cleanup", "--stale")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	s := string(out)
	t.Logf("cleanup --stale as uid 65534: %v: %s", err, s)
	if err == nil {
		t.Error("cleanup --stale as uid 65534 succeeded")
	}
	if strings.Contains(s, "nothing stale") {
		t.Error("cleanup --stale as uid 65534 claims nothing is stale")
	}
	if !strings.Contains(s, "run it as root") {
		t.Error("cleanup --stale as uid 65534 does not say to run it as root")
	}
}

// TestOperatorSecondDaemonOnSocket: run on a socket a daemon serves says
// to give another --socket or to stop the first.
func TestOperatorSecondDaemonOnSocket(t *testing.T) {
	xs, _ := binaries(t)
	d := startDaemon(t)
	mistake(t, xs, []string{"run", "--iface", "lo", "--socket", d.Socket(), "--log-level", "error"},
		"another xsessiond is already running on "+d.Socket(), "another --socket", "stop")
}
