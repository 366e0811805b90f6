package daemon

import (
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
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
	rig, d := tcpRig(t)
	second := netip.MustParseAddr("10.77.1.2")
	client := netip.MustParseAddr("10.88.0.1")
	ipIn(t, rig.A, "addr", "add", client.String()+"/32", "dev", "lo")
	ipIn(t, rig.A, "link", "set", "dev", "lo", "up")
	ipIn(t, rig.A, "route", "add", "10.77.1.0/24", "dev", rig.A.Link)
	ipIn(t, rig.B, "addr", "add", second.String()+"/24", "dev", rig.B.Link)
	// The main table's way to the client's network is a router that is
	// not there; the second address's table has host A.
	ipIn(t, rig.B, "route", "add", "10.88.0.0/16", "via", "10.77.0.9", "dev", rig.B.Link)
	ipIn(t, rig.B, "route", "add", "10.88.0.0/16", "via", rig.A.IPv4.String(), "dev", rig.B.Link, "table", "100")
	ipIn(t, rig.B, "rule", "add", "from", second.String(), "lookup", "100", "priority", "100")
	out, err := exec.Command("ip", "-n", rig.B.Name, "route", "get", client.String(), "from", second.String()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "via "+rig.A.IPv4.String()) {
		t.Fatalf("the kernel's route from %v to %v: %s %v", second, client, out, err)
	}
	waitFor(t, "the daemon to serve "+second.String(), 5*time.Second, func() bool {
		a := attach(t, d, app.Options{Name: "probe"})
		defer a.Close()
		pc, err := a.ListenPacket("udp://" + netip.AddrPortFrom(second, 0).String())
		if err == nil {
			pc.Close()
		}
		return err == nil
	})
	a := attach(t, d, app.Options{Name: "policy"})
	pc, err := a.ListenPacket("udp://" + netip.AddrPortFrom(second, port).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go echoPackets(pc)
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
