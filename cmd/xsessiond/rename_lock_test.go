package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestCleanupRefusedAfterRename: a daemon follows its interface when it
// is renamed, and its instance lock follows it too (it is the interface's
// index, not its name): `cleanup --iface NEW` refuses, as beside a daemon
// under the old name, and leaves its XDP program attached. Before, the
// lock of the new name was free, and cleanup detached the running
// daemon's program (it went on, receiving nothing).
func TestCleanupRefusedAfterRename(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	xs, _ := binaries(t)
	sock := filepath.Join(t.TempDir(), "api.sock")
	d := startProcess(t, xs, "run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	const renamed = "veth-renamed"
	rename := func(from, to string) {
		t.Helper()
		if err := rig.B.Do(func() error {
			l, err := netlink.LinkByName(from)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetName(l, to); err == nil {
				return nil
			}
			// A link that is up may not be renamed: down, renamed, up.
			if err := netlink.LinkSetDown(l); err != nil {
				return err
			}
			if err := netlink.LinkSetName(l, to); err != nil {
				return err
			}
			return netlink.LinkSetUp(l)
		}); err != nil {
			t.Fatal(err)
		}
	}
	rename(rig.B.Link, renamed)
	defer rename(renamed, rig.B.Link)
	line := oneLine(t, xs, "cleanup", "--netns", rig.B.Name, "--iface", renamed)
	if !strings.Contains(line, "another xsessiond serves this interface") {
		t.Errorf("cleanup of the renamed interface beside its daemon: %q", line)
	}
	if !xdpAttachedTo(t, rig.B, renamed) {
		t.Error("cleanup detached the running daemon's XDP program")
	}
	d.stop(t)
}
