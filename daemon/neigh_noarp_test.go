package daemon

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestStaticNoARPNeighbour: a neighbour entry an operator set static with
// `ip neigh replace ADDR lladdr MAC nud noarp` (as for a peer that must
// not be probed) is one the kernel sends to (NUD_NOARP is among its
// valid states), and so does the daemon: an app's datagrams to host A,
// whose only entry in host B is such a one for each family, arrive, and
// so does a TCP connection's handshake and data. Before, the daemon took
// such an entry for unresolved and dropped what went to it.
func TestStaticNoARPNeighbour(t *testing.T) {
	const port = 7561
	rig, d := tcpRig(t)
	for _, a := range []netip.Addr{rig.A.IPv4, rig.A.IPv6} {
		ipIn(t, rig.B, "neigh", "replace", a.String(), "lladdr", rig.A.MAC.String(), "nud", "noarp", "dev", rig.B.Link)
	}
	a := attach(t, d, app.Options{Name: "noarp"})
	pc, err := a.ListenPacket("udp://:" + strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, dst := range []netip.Addr{rig.A.IPv4, rig.A.IPv6} {
		u, err := rig.A.ListenUDP(netip.AddrPortFrom(dst, 0), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		to := u.LocalAddr()
		got := false
		buf := make([]byte, 64)
		for try := 0; try < 20 && !got; try++ {
			if _, err := pc.WriteTo([]byte("noarp"), to); err != nil {
				t.Fatalf("WriteTo %v: %v", to, err)
			}
			u.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, _, err := u.ReadFrom(buf)
			got = err == nil && string(buf[:n]) == "noarp"
		}
		if !got {
			t.Errorf("no datagram from the app reached %v in 2 s through a static noarp neighbour entry (drops %v)", to, d.Stats().Totals.Drops)
		}
	}
	kl := kernelListen(t, rig.A, "[::]:"+strconv.Itoa(port+1))
	go echoServe(kl)
	for _, dst := range []netip.Addr{rig.A.IPv4, rig.A.IPv6} {
		c := dialApp(t, a, "tcp://"+netip.AddrPortFrom(dst, port+1).String())
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("noarp")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := c.Read(buf); err != nil || string(buf) != "noarp" {
			t.Errorf("tcp to %v through a static noarp neighbour entry: %q, %v", dst, buf, err)
		}
	}
}
