package nsbind

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestWatchNextHops: a neighbour entry replaced on the watched interface
// comes as its new MAC, one deleted as not usable, a route added as a
// route change; a neighbour of another interface does not come; the
// watch's subscriptions go when Run returns.
func TestWatchNextHops(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	ns := openNamed(t, p.B.Name)
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true})
	w, err := ns.WatchNextHops(p.B.IfIndex)
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan NextHopChange, 64)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); w.Run(ctx, func(c NextHopChange) { changes <- c }) }()
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", p.B.Name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	next := func(want func(NextHopChange) bool) NextHopChange {
		t.Helper()
		for {
			select {
			case c := <-changes:
				if want(c) {
					return c
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no such change within 5 s")
			}
		}
	}
	nb := netip.MustParseAddr("10.77.0.9")
	mac := net.HardwareAddr{2, 0x77, 0, 0, 0, 9}
	ip("neigh", "replace", nb.String(), "lladdr", mac.String(), "dev", p.B.Link, "nud", "reachable")
	if c := next(func(c NextHopChange) bool { return !c.Route && c.IP == nb }); !c.Usable || !slices.Equal(c.MAC, mac) {
		t.Errorf("replaced neighbour: %+v, want usable %v", c, mac)
	}
	ip("neigh", "del", nb.String(), "dev", p.B.Link)
	if c := next(func(c NextHopChange) bool { return !c.Route && c.IP == nb }); c.Usable {
		t.Errorf("deleted neighbour: %+v, want not usable", c)
	}
	ip("route", "add", "192.0.2.0/24", "via", p.A.IPv4.String())
	next(func(c NextHopChange) bool { return c.Route })
	// Another interface's neighbour does not come.
	ip("link", "add", "xsw0", "type", "veth", "peer", "name", "xsw1")
	ip("neigh", "replace", "10.99.0.9", "lladdr", mac.String(), "dev", "xsw0")
	ip("neigh", "replace", nb.String(), "lladdr", mac.String(), "dev", p.B.Link, "nud", "reachable")
	if c := next(func(c NextHopChange) bool { return !c.Route }); c.IP != nb {
		t.Errorf("a change of another interface's neighbour came: %+v", c)
	}
	cancel()
	<-ran
	leaks.Check(t)
}
