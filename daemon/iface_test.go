package daemon

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestInterfaceLost: a link that goes down and up, or whose peer does, is
// not lost (show stats' interface_state follows: down, no-carrier, up; the
// log says each change);
// once the daemon's interface is deleted, InterfaceLost is closed within a
// moment, its error names the interface, the state says gone, and the
// daemon still answers its control socket and closes cleanly, with no
// error logged for what went with the interface.
func TestInterfaceLost(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	var logMu sync.Mutex
	var logs strings.Builder
	d := startDaemon(t, onB(rig), func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			logMu.Lock()
			defer logMu.Unlock()
			return logs.Write(p)
		}), nil))
	})
	count := func(what string) int {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Count(logs.String(), what)
	}
	// logged waits for a line more than n of what (a link coming up may
	// pass through no-carrier on its way, which is logged too).
	logged := func(n int, what string) {
		t.Helper()
		waitFor(t, "a log line "+what, 5*time.Second, func() bool { return count(what) > n })
	}
	const (
		downLine      = `msg="interface down: nothing reaches the datapath until it is up and running"`
		noCarrierLine = `msg="interface no-carrier: nothing reaches`
		upLine        = `msg="interface up and running: the datapath receives again"`
	)
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
	metrics := d.metricsHandler()
	state := func(want string) {
		t.Helper()
		waitFor(t, "interface_state "+want, 5*time.Second, func() bool { return d.Stats().InterfaceState == want })
		rec := httptest.NewRecorder()
		metrics.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		up := 0.0
		if want == "up" {
			up = 1
		}
		if v := metric(t, rec.Body.String(), `xsessiond_interface_up{state="`+want+`"}`); v != up {
			t.Fatalf("xsessiond_interface_up{state=%q} %v, want %v", want, v, up)
		}
	}
	state("up")
	n := count(downLine)
	link(rig.B, netlink.LinkSetDown)
	state("down")
	logged(n, downLine+" iface="+rig.B.Link)
	n = count(upLine)
	link(rig.B, netlink.LinkSetUp)
	state("up")
	logged(n, upLine+" iface="+rig.B.Link)
	n = count(noCarrierLine)
	link(rig.A, netlink.LinkSetDown) // the peer: B has no carrier
	state("no-carrier")
	logged(n, noCarrierLine)
	n = count(upLine)
	link(rig.A, netlink.LinkSetUp)
	state("up")
	logged(n, upLine)
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
	state("gone")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// Its interface gone, the daemon has nothing of it to give back: a
	// close that finds it gone is no error to log.
	logMu.Lock()
	defer logMu.Unlock()
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=ERROR") && !strings.Contains(l, `msg="interface lost`) {
			t.Errorf("logged after the interface was deleted: %s", l)
		}
	}
}

// writerFunc is an io.Writer of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
