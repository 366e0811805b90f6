package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestInterfaceLost: a link that goes down and up is not lost; once the
// daemon's interface is deleted, InterfaceLost is closed within a moment,
// its error names the interface, and the daemon still answers its control
// socket and closes cleanly.
func TestInterfaceLost(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	link := func(h *nstest.Host, fn func(netlink.Link) error) {
		t.Helper()
		if err := h.Do(func() error {
			l, err := netlink.LinkByName(h.Link)
			if err != nil {
				return err
			}
			return fn(l)
		}); err != nil {
			t.Fatal(err)
		}
	}
	link(rig.B, netlink.LinkSetDown)
	time.Sleep(200 * time.Millisecond)
	link(rig.B, netlink.LinkSetUp)
	select {
	case <-d.InterfaceLost():
		t.Fatalf("lost after a link down and up: %v", d.InterfaceLostErr())
	case <-time.After(500 * time.Millisecond):
	}
	if err := d.InterfaceLostErr(); err != nil {
		t.Fatalf("InterfaceLostErr before the loss: %v", err)
	}
	link(rig.A, netlink.LinkDel) // the pair, B's end with it
	select {
	case <-d.InterfaceLost():
	case <-time.After(5 * time.Second):
		t.Fatal("InterfaceLost not closed 5 s after the interface was deleted")
	}
	if err := d.InterfaceLostErr(); err == nil || !strings.Contains(err.Error(), "interface "+rig.B.Link) || !strings.Contains(err.Error(), rig.B.Name) {
		t.Fatalf("InterfaceLostErr: %v; want it to name %s and netns %s", err, rig.B.Link, rig.B.Name)
	}
	if _, err := show(t, d.Socket(), "stats"); err != nil {
		t.Fatalf("show stats after the loss: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}
