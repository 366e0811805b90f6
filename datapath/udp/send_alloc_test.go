package udp

import (
	"net/netip"
	"testing"
)

// TestSendNoAllocs: Send allocates nothing per datagram. Every datagram
// to a multicast group goes through Send (whatever its size), so an
// allocation here is one per datagram of a multicast stream.
func TestSendNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's runtime allocates")
	}
	for _, c := range []struct{ bind, a netip.Addr }{
		{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1")},
		{netip.IPv4Unspecified(), netip.MustParseAddr("127.0.0.1")},
		{netip.IPv6Loopback(), netip.IPv6Loopback()},
		{netip.IPv6Unspecified(), netip.IPv6Loopback()},
	} {
		a := c.a
		r, err := Reserve(netip.AddrPortFrom(c.bind, 0))
		if err != nil {
			t.Fatalf("reserve %v: %v", c.bind, err)
		}
		defer r.Close()
		// Its own port: its filter drops what it receives.
		dst := netip.AddrPortFrom(a, r.Addr().Port())
		var oob [64]byte
		p := []byte("datagram")
		if err := r.Send(p, dst, netip.Addr{}, oob[:], false); err != nil {
			t.Fatalf("send from %v bound to %v: %v", a, c.bind, err)
		}
		if n := testing.AllocsPerRun(200, func() { _ = r.Send(p, dst, netip.Addr{}, oob[:], false) }); n != 0 {
			t.Errorf("send from %v bound to %v: %v allocations per datagram, want 0", a, c.bind, n)
		}
		if n := testing.AllocsPerRun(200, func() { _ = r.Send(p, dst, a, oob[:], true) }); n != 0 {
			t.Errorf("send from %v bound to %v, with a source and don't fragment: %v allocations per datagram, want 0", a, c.bind, n)
		}
	}
}
