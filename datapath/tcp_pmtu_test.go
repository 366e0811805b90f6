package datapath

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// fragNeeded builds what a raw ICMP socket reads of an ICMPv4
// fragmentation needed message from router about a TCP segment from
// local to remote.
func fragNeeded(router netip.Addr, local, remote netip.AddrPort, mtu uint16) []byte {
	b := make([]byte, 20+8+20+8)
	b[0], b[9] = 0x45, 1
	copy(b[12:16], router.AsSlice())
	copy(b[16:20], local.Addr().AsSlice())
	icmp := b[20:]
	icmp[0], icmp[1] = 3, 4
	binary.BigEndian.PutUint16(icmp[6:8], mtu)
	in := icmp[8:]
	in[0], in[9] = 0x45, 6
	copy(in[12:16], local.Addr().AsSlice())
	copy(in[16:20], remote.Addr().AsSlice())
	binary.BigEndian.PutUint16(in[20:22], local.Port())
	binary.BigEndian.PutUint16(in[22:24], remote.Port())
	return b
}

// packetTooBig builds what a raw ICMPv6 socket reads of a packet too big
// message about a TCP segment from local to remote.
func packetTooBig(local, remote netip.AddrPort, mtu uint32) []byte {
	b := make([]byte, 8+40+8)
	b[0] = 2
	binary.BigEndian.PutUint32(b[4:8], mtu)
	in := b[8:]
	in[0], in[6] = 0x60, 6
	copy(in[8:24], local.Addr().AsSlice())
	copy(in[24:40], remote.Addr().AsSlice())
	binary.BigEndian.PutUint16(in[40:42], local.Port())
	binary.BigEndian.PutUint16(in[42:44], remote.Port())
	return b
}

func TestParsePathMTUMessages(t *testing.T) {
	l4, r4 := netip.MustParseAddrPort("10.0.0.2:7000"), netip.MustParseAddrPort("10.9.0.2:40000")
	l6, r6 := netip.MustParseAddrPort("[fd00::2]:7000"), netip.MustParseAddrPort("[fd09::2]:40000")
	router := netip.MustParseAddr("10.0.0.1")

	for _, c := range []struct {
		name string
		b    []byte
		mtu  uint32
		ok   bool
	}{
		{"frag needed", fragNeeded(router, l4, r4, 1280), 1280, true},
		{"frag needed, MTU below Linux's floor", fragNeeded(router, l4, r4, 300), pmtuMin4, true},
		{"frag needed, no MTU (an old router)", fragNeeded(router, l4, r4, 0), pmtuMin4, true},
		{"port unreachable", func() []byte { b := fragNeeded(router, l4, r4, 1280); b[21] = 3; return b }(), 0, false},
		{"about a UDP datagram", func() []byte { b := fragNeeded(router, l4, r4, 1280); b[20+8+9] = 17; return b }(), 0, false},
		{"header length past the end", func() []byte { b := fragNeeded(router, l4, r4, 1280); b[0] = 0x4f; return b[:40] }(), 0, false},
		{"quoted header length past the end", func() []byte { b := fragNeeded(router, l4, r4, 1280); b[28] = 0x4f; return b }(), 0, false},
		{"truncated", fragNeeded(router, l4, r4, 1280)[:50], 0, false},
		{"not IPv4", func() []byte { b := fragNeeded(router, l4, r4, 1280); b[0] = 0x65; return b }(), 0, false},
	} {
		l, r, mtu, ok := parseFragNeeded(c.b)
		if ok != c.ok || ok && (l != l4 || r != r4 || mtu != c.mtu) {
			t.Errorf("%s: %v %v %d %v, want %v %v %d %v", c.name, l, r, mtu, ok, l4, r4, c.mtu, c.ok)
		}
	}
	for _, c := range []struct {
		name string
		b    []byte
		mtu  uint32
		ok   bool
	}{
		{"packet too big", packetTooBig(l6, r6, 1400), 1400, true},
		{"MTU below IPv6's minimum", packetTooBig(l6, r6, 1000), pmtuMin6, true},
		{"another type", func() []byte { b := packetTooBig(l6, r6, 1400); b[0] = 1; return b }(), 0, false},
		{"about a UDP datagram", func() []byte { b := packetTooBig(l6, r6, 1400); b[8+6] = 17; return b }(), 0, false},
		{"truncated", packetTooBig(l6, r6, 1400)[:55], 0, false},
	} {
		l, r, mtu, ok := parsePacketTooBig(c.b)
		if ok != c.ok || ok && (l != l6 || r != r6 || mtu != c.mtu) {
			t.Errorf("%s: %v %v %d %v, want %v %v %d %v", c.name, l, r, mtu, ok, l6, r6, c.mtu, c.ok)
		}
	}
}

// FuzzPathMTUMessages: any bytes a raw ICMP socket may read are parsed
// without a panic, and what is taken never lowers the MTU below the
// floors.
func FuzzPathMTUMessages(f *testing.F) {
	f.Add(fragNeeded(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddrPort("10.0.0.2:7000"), netip.MustParseAddrPort("10.9.0.2:4000"), 1280), false)
	f.Add(packetTooBig(netip.MustParseAddrPort("[fd00::2]:7000"), netip.MustParseAddrPort("[fd09::2]:4000"), 1400), true)
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		if v6 {
			if l, _, mtu, ok := parsePacketTooBig(b); ok && (mtu < pmtuMin6 || !l.Addr().Is6()) {
				t.Fatalf("took %v, MTU %d", l, mtu)
			}
			return
		}
		if l, _, mtu, ok := parseFragNeeded(b); ok && (mtu < pmtuMin4 || !l.Addr().Is4()) {
			t.Fatalf("took %v, MTU %d", l, mtu)
		}
	})
}
