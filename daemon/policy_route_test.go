package daemon

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestSourcePolicyRouting: host B routes by source (an `ip rule from ADDR
// lookup TABLE`, as a host with an address of a second provider's subnet
// on the same link does), and the daemon's packets take the route the
// kernel gives their source, as a kernel socket's do: replies of an app's
// UDP listener and TCP listener on B's second address to a client beyond
// a router go through the router of that address's table, not the main
// table's (a router that is not there). Before, the daemon looked the
// route up by destination alone and dropped them (no_neighbour).
func TestSourcePolicyRouting(t *testing.T) {
	const port = 7571
	rig, d, second, client := secondAddrRig(t)
	// The main table's way to the client's network is a router that is
	// not there; the second address's table has host A.
	ipIn(t, rig.B, "route", "add", "10.88.0.0/16", "via", "10.77.0.9", "dev", rig.B.Link)
	ipIn(t, rig.B, "route", "add", "10.88.0.0/16", "via", rig.A.IPv4.String(), "dev", rig.B.Link, "table", "100", "mtu", "1300")
	ipIn(t, rig.B, "rule", "add", "from", second.String(), "lookup", "100", "priority", "100")
	out, err := exec.Command("ip", "-n", rig.B.Name, "route", "get", client.String(), "from", second.String()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "via "+rig.A.IPv4.String()) {
		t.Fatalf("the kernel's route from %v to %v: %s %v", second, client, out, err)
	}
	a, pc := echoOnAddr(t, d, "policy", netip.AddrPortFrom(second, port))
	defer pc.Close()
	go echoServe(listenApp(t, a, "tcp://"+netip.AddrPortFrom(second, port+1).String()))

	k, err := rig.A.ListenUDP(netip.AddrPortFrom(client, 0), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	got, from, err := udpRoundTrip(k, netip.AddrPortFrom(second, port), []byte("by source"))
	if err != nil || string(got) != "by source" {
		t.Errorf("udp from %v to the app on %v: %q from %v, %v (drops %v)", client, second, got, from, err, d.Stats().Totals.Drops)
	}
	var c net.Conn
	if err := rig.A.Do(func() (err error) {
		dl := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: client.AsSlice()}}
		c, err = dl.Dial("tcp", netip.AddrPortFrom(second, port+1).String())
		return err
	}); err != nil {
		t.Fatalf("tcp from %v to the app on %v: %v (drops %v)", client, second, err, d.Stats().Totals.Drops)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("by source")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 9)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "by source" {
		t.Errorf("tcp echo from %v: %q, %v", second, b, err)
	}

	// The path MTU from the second address is its table's route's, as a
	// kernel socket bound to it learns (IP_MTU); a wildcard listener's
	// is the main table's. Before, both were the main table's.
	cl := rawApp(t, d)
	for _, c := range []struct {
		uri  string
		want uint32
	}{{"udp://" + netip.AddrPortFrom(second, port+2).String(), 1300}, {fmt.Sprintf("udp://0.0.0.0:%d", port+3), 1500}} {
		if mtu, err := askPathMTU(cl, rawBind(t, cl, c.uri), client); err != nil || mtu != c.want {
			t.Errorf("path mtu from %s to %v: %d, %v; want %d", c.uri, client, mtu, err, c.want)
		}
	}

	// A connect whose route in the main table picks the second address
	// as its source, and whose source's table prohibits the
	// destination, fails as the kernel's does (EACCES): the kernel's
	// connect looks the route up again from the source it chose.
	ipIn(t, rig.B, "route", "add", "10.99.0.0/16", "via", rig.A.IPv4.String(), "dev", rig.B.Link, "src", second.String())
	ipIn(t, rig.B, "route", "add", "prohibit", "10.99.0.0/16", "table", "100")
	for _, network := range []string{"tcp", "udp"} {
		dst := netip.MustParseAddrPort("10.99.0.1:80")
		kout, kerr := kernelDialOutcome(t, rig.B, network, dst.String())
		aout, aerr := appDialOutcome(a, network, dst.String())
		if aout != kout || kout != "dial: connect EACCES" {
			t.Errorf("%s to %v, prohibited in the source's table: app %s (%v), kernel %s (%v); want both EACCES", network, dst, aout, aerr, kout, kerr)
		}
	}
}

// secondAddrRig starts a daemon on host B of a TCP rig, gives B a second
// address, 10.77.1.2/24 on its link, and host A a client address beyond
// it, 10.88.0.1 on lo, with A's route to the second address's subnet; B's
// routes to the client are the test's to add.
func secondAddrRig(t *testing.T) (rig *nstest.Pair, d *Daemon, second, client netip.Addr) {
	t.Helper()
	rig, d = tcpRig(t)
	second = netip.MustParseAddr("10.77.1.2")
	client = netip.MustParseAddr("10.88.0.1")
	ipIn(t, rig.A, "addr", "add", client.String()+"/32", "dev", "lo")
	ipIn(t, rig.A, "link", "set", "dev", "lo", "up")
	ipIn(t, rig.A, "route", "add", "10.77.1.0/24", "dev", rig.A.Link)
	ipIn(t, rig.B, "addr", "add", second.String()+"/24", "dev", rig.B.Link)
	return rig, d, second, client
}

// echoOnAddr waits until the daemon serves ap's address (an address just
// added to host B), then attaches an app called name whose UDP listener
// on ap echoes what it receives.
func echoOnAddr(t *testing.T, d *Daemon, name string, ap netip.AddrPort) (*app.App, net.PacketConn) {
	t.Helper()
	waitFor(t, "the daemon to serve "+ap.Addr().String(), 5*time.Second, func() bool {
		a := attach(t, d, app.Options{Name: "probe"})
		defer a.Close()
		pc, err := a.ListenPacket("udp://" + netip.AddrPortFrom(ap.Addr(), 0).String())
		if err == nil {
			pc.Close()
		}
		return err == nil
	})
	a := attach(t, d, app.Options{Name: name})
	pc, err := a.ListenPacket("udp://" + ap.String())
	if err != nil {
		t.Fatal(err)
	}
	go echoPackets(pc)
	return a, pc
}

// TestRuleChangeFollowed: a policy routing rule added or deleted moves the
// daemon's packets at once, as it moves a kernel socket's: the next hop
// the daemon resolved for a source is not kept until it would have been
// asked again (5 s). Host B's main table sends the client's network to a
// router whose static neighbour entry is a MAC no one has (frames lost);
// table 100 sends it to host A. Before, the replies of an app's listener
// kept going to the lost router for seconds after `ip rule add`, and to
// host A for seconds after the rule was deleted.
func TestRuleChangeFollowed(t *testing.T) {
	const port = 7581
	rig, d, second, client := secondAddrRig(t)
	ipIn(t, rig.B, "neigh", "replace", "10.77.0.9", "lladdr", "02:00:00:00:00:99", "nud", "permanent", "dev", rig.B.Link)
	ipIn(t, rig.B, "route", "add", "10.88.0.0/16", "via", "10.77.0.9", "dev", rig.B.Link)
	ipIn(t, rig.B, "route", "add", "10.88.0.0/16", "via", rig.A.IPv4.String(), "dev", rig.B.Link, "table", "100")
	ipIn(t, rig.B, "route", "add", "10.88.0.0/16", "via", "10.77.0.9", "dev", rig.B.Link, "table", "101")
	_, pc := echoOnAddr(t, d, "rules", netip.AddrPortFrom(second, port))
	defer pc.Close()
	k, err := rig.A.ListenUDP(netip.AddrPortFrom(client, 0), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	dst := netip.AddrPortFrom(second, port)
	// echoed reports whether a reply comes back within d, sending a
	// datagram every 100 ms.
	echoed := func(d time.Duration) bool {
		b := make([]byte, 64)
		for end := time.Now().Add(d); time.Now().Before(end); {
			if _, err := k.WriteToUDPAddrPort([]byte("rule"), dst); err != nil {
				t.Fatal(err)
			}
			k.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, _, err := k.ReadFromUDPAddrPort(b); err == nil && string(b[:n]) == "rule" {
				return true
			}
		}
		return false
	}
	drain := func() {
		b := make([]byte, 64)
		k.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			if _, _, err := k.ReadFromUDPAddrPort(b); err != nil {
				return
			}
		}
	}
	if echoed(300 * time.Millisecond) {
		t.Fatal("a reply came back through the main table's router, whose MAC no one has")
	}
	// The rule sends the second address's packets by table 100.
	ipIn(t, rig.B, "rule", "add", "from", second.String(), "lookup", "100", "priority", "100")
	if !echoed(1500 * time.Millisecond) {
		t.Errorf("after ip rule add: no reply within 1.5 s (drops %v)", d.Stats().Totals.Drops)
	}
	// A rule before it sends them to the lost router again... The first
	// reply after a change may still go the old way: the daemon keeps
	// what it resolved usable while it asks the kernel again.
	ipIn(t, rig.B, "rule", "add", "from", second.String(), "lookup", "101", "priority", "90")
	echoed(100 * time.Millisecond)
	drain()
	if echoed(1500 * time.Millisecond) {
		t.Errorf("after ip rule add of table 101: a reply still came back through table 100")
	}
	// ... and deleting it brings them back.
	ipIn(t, rig.B, "rule", "del", "priority", "90")
	if !echoed(1500 * time.Millisecond) {
		t.Errorf("after ip rule del: no reply within 1.5 s (drops %v)", d.Stats().Totals.Drops)
	}
}
