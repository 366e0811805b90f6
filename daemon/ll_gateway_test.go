package daemon

import (
	"io"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
)

// TestLinkLocalGateway: IPv6 routes whose next hop is a router's
// link-local address (as router advertisements install them: default via
// fe80::… dev eth0) carry an app's TCP connection and datagrams to a host
// beyond the router, as they carry a kernel socket's.
func TestLinkLocalGateway(t *testing.T) {
	const port = 7581
	rig, d := tcpRig(t)
	var ll netip.Addr
	waitFor(t, "A's link-local address", 5*time.Second, func() bool {
		rig.A.Do(func() error {
			l, err := netlink.LinkByName(rig.A.Link)
			if err != nil {
				return err
			}
			as, err := netlink.AddrList(l, netlink.FAMILY_V6)
			for _, a := range as {
				if x, ok := netip.AddrFromSlice(a.IP); ok && x.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
					ll = x
				}
			}
			return err
		})
		return ll.IsValid()
	})
	far := netip.MustParseAddr("fd99::1")
	ipIn(t, rig.A, "addr", "add", far.String()+"/128", "dev", "lo")
	ipIn(t, rig.A, "link", "set", "dev", "lo", "up")
	ipIn(t, rig.B, "-6", "route", "add", "fd99::/64", "via", ll.String(), "dev", rig.B.Link)
	kl := kernelListen(t, rig.A, "[::]:"+strconv.Itoa(port))
	go echoServe(kl)
	a := attach(t, d, app.Options{Name: "llgw"})
	c := dialApp(t, a, "tcp://"+netip.AddrPortFrom(far, port).String())
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("via ll")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "via ll" {
		t.Fatalf("tcp echo through the link-local router: %q, %v", b, err)
	}
	pc, err := a.ListenPacket("udp://[::]:" + strconv.Itoa(port+1))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	u, err := rig.A.ListenUDP(netip.AddrPortFrom(far, 0), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for i := 0; i < 20; i++ {
		if _, err := pc.WriteTo([]byte("x"), u.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		u.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err := u.ReadFrom(b); err == nil && string(b[:n]) == "x" {
			return
		}
	}
	t.Fatalf("no datagram through the link-local router in 2 s (drops %v)", d.Stats().Totals.Drops)
}
