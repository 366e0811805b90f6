package datapath

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/xsessiond/xsessiond/datapath/tcp"
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

func TestParseICMPMessages(t *testing.T) {
	l4, r4 := netip.MustParseAddrPort("10.0.0.2:7000"), netip.MustParseAddrPort("10.9.0.2:40000")
	l6, r6 := netip.MustParseAddrPort("[fd00::2]:7000"), netip.MustParseAddrPort("[fd09::2]:40000")
	router := netip.MustParseAddr("10.0.0.1")
	code4 := func(c byte) []byte { b := fragNeeded(router, l4, r4, 1280); b[21] = c; return b }
	code6 := func(typ, c byte) []byte { b := packetTooBig(l6, r6, 1400); b[0], b[1] = typ, c; return b }

	for _, c := range []struct {
		name string
		b    []byte
		want icmpMsg
		ok   bool
	}{
		{"frag needed", fragNeeded(router, l4, r4, 1280), icmpMsg{mtu: 1280}, true},
		{"frag needed, MTU below Linux's floor", fragNeeded(router, l4, r4, 300), icmpMsg{mtu: pmtuMin4}, true},
		{"frag needed, no MTU (an old router)", fragNeeded(router, l4, r4, 0), icmpMsg{mtu: pmtuMin4}, true},
		{"net unreachable", code4(0), icmpMsg{unreach: tcp.NetUnreachable}, true},
		{"host unreachable", code4(1), icmpMsg{unreach: tcp.HostUnreachable}, true},
		{"protocol unreachable (ENOPROTOOPT on Linux)", code4(2), icmpMsg{}, false},
		{"port unreachable", code4(3), icmpMsg{unreach: tcp.PortUnreachable}, true},
		{"administratively filtered", code4(13), icmpMsg{unreach: tcp.HostUnreachable}, true},
		{"an unknown code", code4(16), icmpMsg{}, false},
		{"another type", func() []byte { b := fragNeeded(router, l4, r4, 1280); b[20] = 11; return b }(), icmpMsg{}, false},
		{"about a UDP datagram", func() []byte { b := fragNeeded(router, l4, r4, 1280); b[20+8+9] = 17; return b }(), icmpMsg{}, false},
		{"header length past the end", func() []byte { b := fragNeeded(router, l4, r4, 1280); b[0] = 0x4f; return b[:40] }(), icmpMsg{}, false},
		{"quoted header length past the end", func() []byte { b := fragNeeded(router, l4, r4, 1280); b[28] = 0x4f; return b }(), icmpMsg{}, false},
		{"truncated", fragNeeded(router, l4, r4, 1280)[:50], icmpMsg{}, false},
		{"empty", nil, icmpMsg{}, false},
		{"not IPv4", func() []byte { b := fragNeeded(router, l4, r4, 1280); b[0] = 0x65; return b }(), icmpMsg{}, false},
	} {
		if c.ok {
			c.want.local, c.want.remote = l4, r4
		}
		m, ok := parseICMPv4(c.b)
		if ok != c.ok || ok && m != c.want {
			t.Errorf("%s: %+v %v, want %+v %v", c.name, m, ok, c.want, c.ok)
		}
	}
	for _, c := range []struct {
		name string
		b    []byte
		want icmpMsg
		ok   bool
	}{
		{"packet too big", packetTooBig(l6, r6, 1400), icmpMsg{mtu: 1400}, true},
		{"MTU below IPv6's minimum", packetTooBig(l6, r6, 1000), icmpMsg{mtu: pmtuMin6}, true},
		{"no route", code6(1, 0), icmpMsg{unreach: tcp.NetUnreachable}, true},
		{"administratively prohibited (EACCES on Linux)", code6(1, 1), icmpMsg{}, false},
		{"address unreachable", code6(1, 3), icmpMsg{unreach: tcp.HostUnreachable}, true},
		{"port unreachable", code6(1, 4), icmpMsg{unreach: tcp.PortUnreachable}, true},
		{"reject route", code6(1, 6), icmpMsg{}, false},
		{"time exceeded", code6(3, 0), icmpMsg{}, false},
		{"about a UDP datagram", func() []byte { b := packetTooBig(l6, r6, 1400); b[8+6] = 17; return b }(), icmpMsg{}, false},
		{"truncated", packetTooBig(l6, r6, 1400)[:55], icmpMsg{}, false},
	} {
		if c.ok {
			c.want.local, c.want.remote = l6, r6
		}
		m, ok := parseICMPv6(c.b)
		if ok != c.ok || ok && m != c.want {
			t.Errorf("%s: %+v %v, want %+v %v", c.name, m, ok, c.want, c.ok)
		}
	}
}

// FuzzICMPMessages: any bytes a raw ICMP socket may read are parsed
// without a panic, and what is taken is one thing, a path MTU no lower
// than the floors or an unreachable peer, about a TCP connection of the
// socket's family.
func FuzzICMPMessages(f *testing.F) {
	f.Add(fragNeeded(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddrPort("10.0.0.2:7000"), netip.MustParseAddrPort("10.9.0.2:4000"), 1280), false)
	f.Add(packetTooBig(netip.MustParseAddrPort("[fd00::2]:7000"), netip.MustParseAddrPort("[fd09::2]:4000"), 1400), true)
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		parse, floor := parseICMPv4, uint32(pmtuMin4)
		if v6 {
			parse, floor = parseICMPv6, pmtuMin6
		}
		m, ok := parse(b)
		if !ok {
			return
		}
		if (m.unreach == 0) == (m.mtu == 0) || m.unreach == 0 && m.mtu < floor || m.local.Addr().Is6() != v6 || m.remote.Addr().Is6() != v6 {
			t.Fatalf("took %+v", m)
		}
	})
}
