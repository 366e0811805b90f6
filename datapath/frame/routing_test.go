package frame

import (
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

// routing6 returns an IPv6 routing header of type typ with segleft
// segments left, next header nh and one address.
func routing6(nh layers.IPProtocol, typ, segleft byte) []byte {
	b := make([]byte, 24)
	b[0], b[1], b[2], b[3] = byte(nh), 2, typ, segleft
	a := ip6B.As16()
	copy(b[8:], a[:])
	return b
}

// TestDecodeRoutingHeader: the routing headers the kernel skips
// (segments left 0, a type it has no rule for) and those for which it
// drops the packet (ipv6_rthdr_rcv; TestWireIPv6RoutingHeaderAsKernel
// compares the rig's kernel).
func TestDecodeRoutingHeader(t *testing.T) {
	multicastMAC := [6]byte{0x33, 0x33, 0, 0, 0, 1}
	for _, c := range []struct {
		name   string
		p      pkt
		dstMAC *[6]byte
		want   Reason
	}{
		{"type 0, segments left 0", pkt{ext: routing6(layers.IPProtocolUDP, 0, 0)}, nil, OK},
		{"unknown type, segments left 0", pkt{ext: routing6(layers.IPProtocolUDP, 30, 0)}, nil, OK},
		{"type 0, segments left 1", pkt{ext: routing6(layers.IPProtocolUDP, 0, 1)}, nil, BadExtHeader},
		{"unknown type, segments left 12", pkt{ext: routing6(layers.IPProtocolUDP, 30, 12)}, nil, BadExtHeader},
		{"mobile ipv6, segments left 0", pkt{ext: routing6(layers.IPProtocolUDP, 2, 0)}, nil, BadExtHeader},
		{"rpl, segments left 0", pkt{ext: routing6(layers.IPProtocolUDP, 3, 0)}, nil, BadExtHeader},
		{"segment routing, segments left 0", pkt{ext: routing6(layers.IPProtocolUDP, 4, 0)}, nil, BadExtHeader},
		{"to a multicast mac", pkt{ext: routing6(layers.IPProtocolUDP, 0, 0)}, &multicastMAC, BadExtHeader},
		{"to a multicast address", pkt{dst: netip.MustParseAddr("ff12::1"), ext: routing6(layers.IPProtocolUDP, 0, 0)}, nil, BadExtHeader},
		{"tcp, segments left 1", pkt{proto: layers.IPProtocolTCP, ext: routing6(layers.IPProtocolTCP, 0, 1)}, nil, BadExtHeader},
		{"tcp, segments left 0", pkt{proto: layers.IPProtocolTCP, ext: routing6(layers.IPProtocolTCP, 0, 0)}, nil, NotUDP},
	} {
		c.p.v6, c.p.extNext, c.p.payload, c.p.sport, c.p.dport = true, layers.IPProtocolIPv6Routing, payload64, 1, 2
		b := c.p.build(t)
		if c.dstMAC != nil {
			copy(b[0:6], c.dstMAC[:])
		}
		var p Packet
		if r := Decode(b, &p); r != c.want {
			t.Errorf("%s: %v, want %v", c.name, r, c.want)
		}
	}
}
