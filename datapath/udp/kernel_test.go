package udp

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestSendDontFragment: through a route of mtu 1,280 from host B to host
// A, a reservation on B's wildcard address sends, from B's address (a
// pktinfo control message), 1,000 bytes with don't fragment; 1,400 bytes
// with it fail with EMSGSIZE and reach nothing; without it they arrive
// (fragmented by B's kernel); with it again they fail again: the mode
// follows each datagram.
func TestSendDontFragment(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	for _, fam := range []struct {
		name     string
		wildcard netip.Addr
		a, b     netip.Addr
	}{
		{"ipv4", netip.IPv4Unspecified(), rig.A.IPv4, rig.B.IPv4},
		{"ipv6", netip.IPv6Unspecified(), rig.A.IPv6, rig.B.IPv6},
	} {
		t.Run(fam.name, func(t *testing.T) {
			var r *Reservation
			if err := rig.B.Do(func() error {
				l, err := netlink.LinkByName(rig.B.Link)
				if err != nil {
					return err
				}
				bits := fam.a.BitLen()
				if err := netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index,
					Dst: &net.IPNet{IP: fam.a.AsSlice(), Mask: net.CIDRMask(bits, bits)}, MTU: 1280}); err != nil {
					return err
				}
				r, err = Reserve(netip.AddrPortFrom(fam.wildcard, 0))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if err := r.Open(); err != nil {
				t.Fatal(err)
			}
			var peer *net.UDPConn
			if err := rig.A.Do(func() error {
				var err error
				peer, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(fam.a, 0)))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			dst := peer.LocalAddr().(*net.UDPAddr).AddrPort()
			oob := make([]byte, 64)
			buf := make([]byte, 2048)
			// received reports whether A gets msg within d.
			received := func(msg []byte, d time.Duration) bool {
				peer.SetReadDeadline(time.Now().Add(d))
				for {
					n, _, err := peer.ReadFrom(buf)
					if err != nil {
						return false
					}
					if bytes.Equal(buf[:n], msg) {
						return true
					}
				}
			}
			small, big := bytes.Repeat([]byte{1}, 1000), bytes.Repeat([]byte{2}, 1400)
			for i, step := range []struct {
				msg  []byte
				df   bool
				fail bool
			}{
				{small, true, false},
				{big, true, true},
				{big, false, false},
				{big, true, true},
				{small, true, false},
			} {
				err := r.Send(step.msg, dst, fam.b, oob, step.df)
				if step.fail {
					if !errors.Is(err, unix.EMSGSIZE) {
						t.Fatalf("step %d: %d bytes, don't fragment: %v, want EMSGSIZE", i, len(step.msg), err)
					}
					if received(step.msg, 200*time.Millisecond) {
						t.Fatalf("step %d: %d bytes refused, yet A got them", i, len(step.msg))
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %d bytes, don't fragment %v: %v", i, len(step.msg), step.df, err)
				}
				if !received(step.msg, 2*time.Second) {
					t.Fatalf("step %d: %d bytes, don't fragment %v: A got nothing", i, len(step.msg), step.df)
				}
			}
			if err := r.Err(); err != nil {
				t.Fatalf("the refusals left a socket error: %v", err)
			}
		})
	}
}
