package nstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestIPNetnsAddBesideRigs: on a machine whose /run/netns is no mount
// point yet (a fresh one), an `ip netns add` while a rig is up (a test
// beside it, the operator beside the demo) leaves the rig whole: its
// namespaces open by name, and closing it removes them. Before, ip's bind
// of the directory on itself put copies of the rig's mounts over the
// originals: closing the rig unmounted the copies alone and failed to
// remove the names (EBUSY), which stayed as plain files, the namespaces
// and their veths held for good by the hidden mounts. The rig is built in
// a child process of a mount namespace of its own, where /run/netns is
// made no mount point, as on a fresh machine.
func TestIPNetnsAddBesideRigs(t *testing.T) {
	RequirePrivileged(t)
	if os.Getenv("NSTEST_SHARE_CHILD") == "1" {
		ipNetnsAddBesideRig(t)
		return
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", os.Args[0], "-test.run", "^TestIPNetnsAddBesideRigs$", "-test.v")
	cmd.Env = append(os.Environ(), "NSTEST_SHARE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("child in a mount namespace of its own: %v\n%s", err, out)
	}
}

func ipNetnsAddBesideRig(t *testing.T) {
	for unix.Unmount(netnsDir, unix.MNT_DETACH) == nil {
	}
	p, err := newPair(Options{})
	if err != nil {
		if p != nil {
			p.Close()
		}
		t.Fatal(err)
	}
	probe := fmt.Sprintf("xs-probe-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		p.Close()
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", probe).Run()
	for _, h := range []*Host{p.A, p.B} {
		if out, err := exec.Command("ip", "-n", h.Name, "link", "show", h.Link).CombinedOutput(); err != nil {
			t.Errorf("%s after ip netns add: %v: %s", h.Name, err, out)
		}
	}
	names := []string{p.A.Name, p.B.Name}
	if err := p.Close(); err != nil {
		t.Errorf("close the rig: %v", err)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, n := range names {
		path := filepath.Join(netnsDir, n)
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the rig closed: %v, want it gone", path, err)
		}
		if strings.Contains(string(mounts), " "+path+" ") {
			t.Errorf("%s still mounted after the rig closed", path)
		}
	}
}
