package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// XDP verdicts.
const (
	xdpPass     = 2
	xdpRedirect = 4
)

// testIfindex is the ingress ifindex the tests give BPF_PROG_TEST_RUN: the
// loopback device of the test's namespace (the kernel checks that it exists
// and that the rx queue is below its queue count).
const testIfindex = 1

// otherIfindex keys entries of an interface the test packets never arrive on.
const otherIfindex = 7

// xdpMD mirrors struct xdp_md, the context of BPF_PROG_TEST_RUN.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

func runXDP(tb testing.TB, prog *ebpf.Program, pkt []byte) uint32 {
	tb.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{
		Data:    pkt,
		Context: xdpMD{DataEnd: uint32(len(pkt)), IngressIfindex: testIfindex},
	})
	if err != nil {
		tb.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret
}

func loadObjects(tb testing.TB, opts ObjectsOptions) *Objects {
	tb.Helper()
	nstest.RequirePrivileged(tb)
	spec, err := LoadSpec()
	if err != nil {
		tb.Fatal(err)
	}
	o, err := spec.Load(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { o.Close() })
	return o
}

// progEnv loads the program with the entries the table tests hit, and an
// AF_XDP socket in the xsks slot of queue 0 (unbound: BPF_PROG_TEST_RUN
// only reports the verdict; nothing is delivered).
func progEnv(tb testing.TB) *Objects {
	tb.Helper()
	return progEnvWith(tb, ObjectsOptions{Queues: 4, MAC: macLocal})
}

// progEnvWith is progEnv with the program loaded with opts.
func progEnvWith(tb testing.TB, opts ObjectsOptions) *Objects {
	tb.Helper()
	o := loadObjects(tb, opts)
	lst := []struct {
		ifindex int
		t       flow.FiveTuple
	}{
		{testIfindex, listener(flow.TransportUDP, v4Local, 9000)},
		{testIfindex, listener(flow.TransportUDP, zero4, 9000)},
		{testIfindex, listener(flow.TransportUDP, zero4, 9001)},
		{testIfindex, listener(flow.TransportTCP, v4Local, 80)},
		{testIfindex, listener(flow.TransportUDP, v6Local, 9000)},
		{testIfindex, listener(flow.TransportUDP, zero6, 9001)},
		{testIfindex, listener(flow.TransportTCP, zero6, 443)},
		{otherIfindex, listener(flow.TransportUDP, v4Local, 9002)},
	}
	for i, l := range lst {
		if err := o.Listeners.Put(l.ifindex, l.t, Value{Handle: flow.Handle(0x100 + i), FIB: 1}); err != nil {
			tb.Fatal(err)
		}
	}
	est := []struct {
		ifindex int
		t       flow.FiveTuple
	}{
		{testIfindex, tuple(flow.TransportUDP, v4Local, 9001, v4Remote, 5555)},
		{testIfindex, tuple(flow.TransportTCP, v6Local, 8080, v6Remote, 40000)},
		{otherIfindex, tuple(flow.TransportUDP, v4Local, 9003, v4Remote, 5555)},
	}
	for i, e := range est {
		if err := o.Established.Put(e.ifindex, e.t, Value{Handle: flow.MakeHandle(1, uint32(i)), FIB: 1}); err != nil {
			tb.Fatal(err)
		}
	}
	x, err := newTestXSK(0, 0, 64)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { x.Close() })
	if err := o.XSKs.Set(0, x.FD()); err != nil {
		tb.Fatal(err)
	}
	return o
}

// Expected counter deltas.
func passed(set func(*Counters)) Counters {
	c := Counters{Pass: 1}
	set(&c)
	return c
}

func malformed(set func(*Counters)) Counters {
	c := Counters{Pass: 1, Malformed: 1}
	set(&c)
	return c
}

func redirected(set func(*Counters)) Counters {
	c := Counters{Redirect: 1}
	set(&c)
	return c
}

var (
	notIP        = func(c *Counters) { c.NotIP++ }
	notL4        = func(c *Counters) { c.NotL4++ }
	noMatch      = func(c *Counters) { c.NoMatch++ }
	fragment     = func(c *Counters) { c.Fragment++ }
	fragHit      = func(c *Counters) { c.FragmentHit++ }
	udpMulti     = func(c *Counters) { c.UDPMultiBuffer++ }
	extHeader    = func(c *Counters) { c.ExtHeader++ }
	vlanDepth    = func(c *Counters) { c.VLANDepth++ }
	otherHost    = func(c *Counters) { c.OtherHost++ }
	estHit       = func(c *Counters) { c.EstablishedHit++ }
	exactHit     = func(c *Counters) { c.ListenerExactHit++ }
	wildHit      = func(c *Counters) { c.ListenerWildcardHit++ }
	truncVLAN    = func(c *Counters) { c.TruncVLAN++ }
	truncIPv4    = func(c *Counters) { c.TruncIPv4++ }
	truncIPv6    = func(c *Counters) { c.TruncIPv6++ }
	truncExt     = func(c *Counters) { c.TruncExt++ }
	truncUDP     = func(c *Counters) { c.TruncUDP++ }
	truncTCP     = func(c *Counters) { c.TruncTCP++ }
	badVersion   = func(c *Counters) { c.BadVersion++ }
	badIHL       = func(c *Counters) { c.BadIHL++ }
	badLength    = func(c *Counters) { c.BadLength++ }
	badTCPOff    = func(c *Counters) { c.BadTCPOffset++ }
	zero4, zero6 = mustAddr("0.0.0.0"), mustAddr("::")
)

// patch returns a copy of b with vals written at off.
func patch(b []byte, off int, vals ...byte) []byte {
	c := append([]byte(nil), b...)
	copy(c[off:], vals)
	return c
}

func put16(b []byte, off int, v uint16) []byte {
	c := append([]byte(nil), b...)
	binary.BigEndian.PutUint16(c[off:], v)
	return c
}

// withIPv4Options inserts opts (a multiple of 4 bytes) after the 20-byte
// IPv4 header at l3 and fixes IHL and total length.
func withIPv4Options(b []byte, l3 int, opts []byte) []byte {
	c := make([]byte, 0, len(b)+len(opts))
	c = append(c, b[:l3+20]...)
	c = append(c, opts...)
	c = append(c, b[l3+20:]...)
	c[l3] = 0x40 | byte((20+len(opts))/4)
	binary.BigEndian.PutUint16(c[l3+2:], binary.BigEndian.Uint16(c[l3+2:])+uint16(len(opts)))
	return c
}

type progCase struct {
	name string
	pkt  []byte
	want uint32
	cnt  Counters
}

func progCases(tb testing.TB) []progCase {
	const l3, l4 = 14, 34 // offsets in an untagged IPv4 frame without options
	u4 := udp4Frame(tb, 5556, 9000)
	t4 := tcp4Frame(tb, 5556, 80)
	u6 := udp6Frame(tb, 5556, 9000)
	t6 := tcp6Frame(tb, 40000, 8080)

	arp := serialize(tb, eth(layers.EthernetTypeARP), &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: macRemote, SourceProtAddress: v4Remote.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: v4Local.AsSlice(),
	})
	vlanARP := serialize(tb, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 5, Type: layers.EthernetTypeARP}, &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: macRemote, SourceProtAddress: v4Remote.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: v4Local.AsSlice(),
	})
	icmp4 := serialize(tb, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}, payload)
	icmp6 := func(l ...gopacket.SerializableLayer) []byte {
		i := ip6(layers.IPProtocolICMPv6)
		ic := l[0].(*layers.ICMPv6)
		ic.SetNetworkLayerForChecksum(i)
		return serialize(tb, append([]gopacket.SerializableLayer{eth(layers.EthernetTypeIPv6), i}, l...)...)
	}
	echo6 := icmp6(&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)},
		&layers.ICMPv6Echo{Identifier: 1, SeqNumber: 1}, payload)
	ns6 := icmp6(&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)},
		&layers.ICMPv6NeighborSolicitation{TargetAddress: v6Local.AsSlice(), Options: layers.ICMPv6Options{
			{Type: layers.ICMPv6OptSourceAddress, Data: macRemote}}})

	// vlan tags a frame with priority tags (VLAN id 0: the untagged
	// interface's frames), the last one's id vid.
	vlanID := func(vid uint16, tags []layers.EthernetType, inner layers.EthernetType, rest ...gopacket.SerializableLayer) []byte {
		ls := []gopacket.SerializableLayer{eth(tags[0])}
		for i := range tags {
			next, id := inner, vid
			if i+1 < len(tags) {
				next, id = tags[i+1], 0
			}
			ls = append(ls, &layers.Dot1Q{Priority: uint8(i + 1), VLANIdentifier: id, Type: next})
		}
		return serialize(tb, append(ls, rest...)...)
	}
	vlan := func(tags []layers.EthernetType, inner layers.EthernetType, rest ...gopacket.SerializableLayer) []byte {
		return vlanID(0, tags, inner, rest...)
	}
	withDst := func(b []byte, mac net.HardwareAddr) []byte { return patch(b, 0, mac...) }
	udp4L := func(sport, dport uint16) []gopacket.SerializableLayer {
		u, i := udp(sport, dport), ip4(layers.IPProtocolUDP)
		u.SetNetworkLayerForChecksum(i)
		return []gopacket.SerializableLayer{i, u, payload}
	}
	udp6L := func(sport, dport uint16, ext ...gopacket.Payload) []gopacket.SerializableLayer {
		u := udp(sport, dport)
		first := layers.IPProtocolUDP
		if len(ext) > 0 {
			first = layers.IPProtocol(0) // set below
		}
		i := ip6(first)
		u.SetNetworkLayerForChecksum(i)
		ls := []gopacket.SerializableLayer{i}
		for _, e := range ext {
			ls = append(ls, e)
		}
		return append(ls, u, payload)
	}
	tcp4L := func(sport, dport uint16) []gopacket.SerializableLayer {
		tc, i := tcp(sport, dport), ip4(layers.IPProtocolTCP)
		tc.SetNetworkLayerForChecksum(i)
		return []gopacket.SerializableLayer{i, tc, payload}
	}
	tcp6Ext := func(sport, dport uint16, first layers.IPProtocol, ext ...gopacket.Payload) []byte {
		tc, i := tcp(sport, dport), ip6(first)
		tc.SetNetworkLayerForChecksum(i)
		ls := []gopacket.SerializableLayer{eth(layers.EthernetTypeIPv6), i}
		for _, e := range ext {
			ls = append(ls, e)
		}
		return serialize(tb, append(ls, tc, payload)...)
	}
	udp6Ext := func(first layers.IPProtocol, ext ...gopacket.Payload) []byte {
		ls := udp6L(5556, 9000, ext...)
		ls[0].(*layers.IPv6).NextHeader = first
		return serialize(tb, append([]gopacket.SerializableLayer{eth(layers.EthernetTypeIPv6)}, ls...)...)
	}
	hbh, dst, rt := layers.IPProtocolIPv6HopByHop, layers.IPProtocolIPv6Destination, layers.IPProtocolIPv6Routing
	udpP, tcpP := layers.IPProtocolUDP, layers.IPProtocolTCP

	// An IPv4 frame short enough to need Ethernet padding.
	small := udp4Frame(tb, 5556, 9000)
	small = small[:len(small)-len(payload)]
	binary.BigEndian.PutUint16(small[l3+2:], 28)
	binary.BigEndian.PutUint16(small[l4+4:], 8)
	small = append(small, make([]byte, 60-len(small))...)

	routerAlert := []byte{148, 4, 0, 0}
	nops := make([]byte, 40)
	for i := range nops {
		nops[i] = 1
	}
	nops[39] = 0

	dgram := make([]byte, 32) // fragment bodies: 4 units of 8 bytes
	for i := range dgram {
		dgram[i] = byte(i)
	}

	return []progCase{
		{"arp", arp, xdpPass, passed(notIP)},
		{"arp in vlan", vlanARP, xdpPass, passed(otherHost)},
		{"icmpv4 echo", icmp4, xdpPass, passed(notL4)},
		{"icmpv6 echo", echo6, xdpPass, passed(notL4)},
		{"icmpv6 neighbour solicitation", ns6, xdpPass, passed(notL4)},

		{"udp4 exact listener beats wildcard", u4, xdpRedirect, redirected(exactHit)},
		{"udp4 wildcard listener", udp4Frame(tb, 5556, 9001), xdpRedirect, redirected(wildHit)},
		{"udp4 no listener on port", udp4Frame(tb, 5556, 9999), xdpPass, passed(noMatch)},
		{"udp4 listener of another interface", udp4Frame(tb, 5556, 9002), xdpPass, passed(noMatch)},
		{"udp4 established", udp4Frame(tb, 5555, 9001), xdpRedirect, redirected(estHit)},
		{"udp4 established of another interface", udp4Frame(tb, 5555, 9003), xdpPass, passed(noMatch)},
		{"tcp4 exact listener", t4, xdpRedirect, redirected(exactHit)},
		{"tcp4 to a udp-only port", tcp4Frame(tb, 5556, 9000), xdpPass, passed(noMatch)},
		// Larger than a page: BPF_PROG_TEST_RUN hands the program a
		// multi-buffer frame, as generic XDP does with a 64 KiB segment.
		{"tcp4 64 KiB segment in fragments", bigTCP4(tb, 64000, 0), xdpRedirect, redirected(exactHit)},
		{"tcp6 established 9000 bytes in fragments", bigTCP6(tb, 9000), xdpRedirect, redirected(estHit)},
		{"tcp4 in fragments, IP length past the frame", bigTCP4(tb, 9000, 100), xdpPass, malformed(badLength)},
		// BIG TCP: longer than an IP length field holds, which says 0.
		{"tcp4 BIG TCP segment, total length 0", bigTCPZeroLen(tb, false, 68000), xdpRedirect, redirected(exactHit)},
		{"tcp6 BIG TCP segment, payload length 0", bigTCPZeroLen(tb, true, 68000), xdpRedirect, redirected(estHit)},
		{"tcp4 total length 0 within 64 KiB", bigTCPZeroLen(tb, false, 9000), xdpPass, malformed(badLength)},
		{"tcp6 payload length 0 within 64 KiB", bigTCPZeroLen(tb, true, 9000), xdpPass, malformed(badLength)},
		{"tcp6 BIG TCP segment with a jumbo option", withJumbo(bigTCPZeroLen(tb, true, 68000), 0xc2), xdpRedirect, redirected(estHit)},
		{"tcp6 payload length 0 behind another hop-by-hop option", withJumbo(bigTCPZeroLen(tb, true, 68000), 0x05), xdpPass, malformed(badLength)},
		{"udp4 to a listener, in fragments: the kernel's", func() []byte {
			u, i := udp(5556, 9000), ip4(layers.IPProtocolUDP)
			u.SetNetworkLayerForChecksum(i)
			return serialize(tb, eth(layers.EthernetTypeIPv4), i, u, gopacket.Payload(make([]byte, 8000)))
		}(), xdpPass, passed(udpMulti)},
		{"tcp4 with options", func() []byte {
			tc, i := tcp(5556, 80), ip4(layers.IPProtocolTCP)
			tc.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}},
				{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2}}
			tc.SetNetworkLayerForChecksum(i)
			return serialize(tb, eth(layers.EthernetTypeIPv4), i, tc, payload)
		}(), xdpRedirect, redirected(exactHit)},
		{"udp6 exact listener", u6, xdpRedirect, redirected(exactHit)},
		{"udp6 wildcard listener", udp6Frame(tb, 5556, 9001), xdpRedirect, redirected(wildHit)},
		{"udp6 no listener", udp6Frame(tb, 5556, 9999), xdpPass, passed(noMatch)},
		{"tcp6 wildcard listener", tcp6Frame(tb, 40000, 443), xdpRedirect, redirected(wildHit)},
		{"tcp6 established", t6, xdpRedirect, redirected(estHit)},
		{"tcp6 established, other remote port", tcp6Frame(tb, 40001, 8080), xdpPass, passed(noMatch)},
		{"udp4 ethernet padding", small, xdpRedirect, redirected(exactHit)},
		{"udp4 to 0.0.0.0 is no exact hit", func() []byte {
			u, i := udp(5556, 9000), ip4(layers.IPProtocolUDP)
			i.DstIP = zero4.AsSlice()
			u.SetNetworkLayerForChecksum(i)
			return serialize(tb, eth(layers.EthernetTypeIPv4), i, u, payload)
		}(), xdpRedirect, redirected(wildHit)},

		{"802.1q udp4", vlan([]layers.EthernetType{layers.EthernetTypeDot1Q}, layers.EthernetTypeIPv4, udp4L(5556, 9000)...), xdpRedirect, redirected(exactHit)},
		{"qinq 802.1ad+802.1q udp6", vlan([]layers.EthernetType{layers.EthernetTypeQinQ, layers.EthernetTypeDot1Q}, layers.EthernetTypeIPv6, udp6L(5556, 9000)...), xdpRedirect, redirected(exactHit)},
		{"qinq 802.1q+802.1q tcp4", vlan([]layers.EthernetType{layers.EthernetTypeDot1Q, layers.EthernetTypeDot1Q}, layers.EthernetTypeIPv4, tcp4L(5556, 80)...), xdpRedirect, redirected(exactHit)},
		{"802.1q vlan 100 udp4", vlanID(100, []layers.EthernetType{layers.EthernetTypeDot1Q}, layers.EthernetTypeIPv4, udp4L(5556, 9000)...), xdpPass, passed(otherHost)},
		{"qinq outer tag vlan 7 udp6", vlanID(7, []layers.EthernetType{layers.EthernetTypeQinQ}, layers.EthernetTypeIPv6, udp6L(5556, 9000)...), xdpPass, passed(otherHost)},
		{"another host's mac udp4", withDst(u4, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x09}), xdpPass, passed(otherHost)},
		{"another host's mac tcp4", withDst(t4, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x09}), xdpPass, passed(otherHost)},
		{"broadcast mac udp4", withDst(u4, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), xdpRedirect, redirected(exactHit)},
		{"multicast mac udp6", withDst(u6, net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}), xdpRedirect, redirected(exactHit)},
		{"three vlan tags", vlan([]layers.EthernetType{layers.EthernetTypeQinQ, layers.EthernetTypeDot1Q, layers.EthernetTypeDot1Q}, layers.EthernetTypeIPv4, udp4L(5556, 9000)...), xdpPass, passed(vlanDepth)},

		{"ipv4 options ihl 6", withIPv4Options(u4, l3, routerAlert), xdpRedirect, redirected(exactHit)},
		{"ipv4 options ihl 15", withIPv4Options(u4, l3, nops), xdpRedirect, redirected(exactHit)},
		{"ipv4 more fragments, unbound port", patch(put16(u4, l4+2, 9999), l3+6, 0x20, 0x00), xdpPass, passed(fragment)},
		{"ipv4 fragment offset, unbound port", patch(u4, l3+6, 0x00, 0x10), xdpPass, passed(fragment)},
		{"ipv4 don't fragment is no fragment", patch(u4, l3+6, 0x40, 0x00), xdpRedirect, redirected(exactHit)},
		{"ipv6 fragment header", udp6Ext(layers.IPProtocolIPv6Fragment, gopacket.Payload{byte(udpP), 0, 0, 1, 0, 0, 0, 1}), xdpRedirect, redirected(fragHit)},
		{"ipv6 hop-by-hop and destination options", udp6Ext(hbh, ext6(dst, 0), ext6(udpP, 1)), xdpRedirect, redirected(exactHit)},
		{"ipv6 routing header to tcp wildcard", tcp6Ext(40000, 443, rt, routing6(tcpP)), xdpRedirect, redirected(wildHit)},
		{"ipv6 four extension headers", udp6Ext(hbh, ext6(dst, 0), routing6(dst), ext6(dst, 2), ext6(udpP, 0)), xdpRedirect, redirected(exactHit)},
		{"ipv6 five extension headers", udp6Ext(hbh, ext6(dst, 0), routing6(dst), ext6(dst, 0), ext6(dst, 0), ext6(udpP, 0)), xdpPass, passed(extHeader)},
		{"ipv6 authentication header", udp6Ext(layers.IPProtocolAH, gopacket.Payload{byte(udpP), 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1}), xdpPass, passed(extHeader)},
		{"ipv6 fragment after hop-by-hop", udp6Ext(hbh, ext6(layers.IPProtocolIPv6Fragment, 0), gopacket.Payload{byte(udpP), 0, 0, 1, 0, 0, 0, 2}), xdpRedirect, redirected(fragHit)},

		// UDP fragments follow their datagram's first fragment; a datagram
		// whose later fragment comes first is the kernel's.
		{"udp4 first fragment, exact listener", frag4Frame(tb, udpP, 100, 0, true, udpHead(5556, 9000, 3000, dgram)), xdpRedirect, redirected(fragHit)},
		{"udp4 middle fragment", frag4Frame(tb, udpP, 100, 4, true, dgram), xdpRedirect, redirected(fragHit)},
		{"udp4 last fragment", frag4Frame(tb, udpP, 100, 8, false, dgram), xdpRedirect, redirected(fragHit)},
		{"udp4 first fragment, established", frag4Frame(tb, udpP, 101, 0, true, udpHead(5555, 9001, 3000, dgram)), xdpRedirect, redirected(fragHit)},
		{"udp4 first fragment, unbound port", frag4Frame(tb, udpP, 102, 0, true, udpHead(5556, 9999, 3000, dgram)), xdpPass, passed(fragment)},
		{"udp4 later fragment, unbound port", frag4Frame(tb, udpP, 102, 4, false, dgram), xdpPass, passed(fragment)},
		{"udp4 later fragment before the first", frag4Frame(tb, udpP, 103, 4, false, dgram), xdpPass, passed(fragment)},
		{"udp4 first fragment after a later one", frag4Frame(tb, udpP, 103, 0, true, udpHead(5556, 9000, 3000, dgram)), xdpPass, passed(fragment)},
		{"udp4 fragment of another interface's listener", frag4Frame(tb, udpP, 104, 0, true, udpHead(5556, 9002, 3000, dgram)), xdpPass, passed(fragment)},
		{"tcp4 fragment to a listener", frag4Frame(tb, tcpP, 105, 0, true, t4[l4:]), xdpPass, passed(fragment)},
		{"icmpv4 fragment", frag4Frame(tb, layers.IPProtocolICMPv4, 106, 0, true, dgram), xdpPass, passed(fragment)},
		{"udp4 first fragment, udp length below 8", frag4Frame(tb, udpP, 107, 0, true, udpHead(5556, 9000, 7, dgram)), xdpPass, malformed(badLength)},
		{"udp4 first fragment, udp header cut", frag4Frame(tb, udpP, 108, 0, true, []byte{0x15, 0xb4, 0x23, 0x28})[:l4+4], xdpPass, malformed(truncUDP)},
		{"udp4 first fragment, ip payload cuts the udp header", put16(frag4Frame(tb, udpP, 109, 0, true, udpHead(5556, 9000, 3000, dgram)), l3+2, 24), xdpPass, malformed(badLength)},
		{"udp4 first fragment, total length beyond frame", put16(frag4Frame(tb, udpP, 110, 0, true, udpHead(5556, 9000, 3000, dgram)), l3+2, 1000), xdpPass, malformed(badLength)},
		{"udp6 first fragment, exact listener", frag6Frame(tb, udpP, 200, 0, true, udpHead(5556, 9000, 3000, dgram), 0), xdpRedirect, redirected(fragHit)},
		{"udp6 last fragment", frag6Frame(tb, udpP, 200, 4, false, dgram, 0), xdpRedirect, redirected(fragHit)},
		{"udp6 first fragment after hop-by-hop, wildcard", frag6Frame(tb, udpP, 201, 0, true, udpHead(5556, 9001, 3000, dgram), hbh, ext6(layers.IPProtocolIPv6Fragment, 0)), xdpRedirect, redirected(fragHit)},
		{"udp6 later fragment after routing", frag6Frame(tb, udpP, 201, 4, true, dgram, rt, routing6(layers.IPProtocolIPv6Fragment)), xdpRedirect, redirected(fragHit)},
		{"udp6 later fragment before the first", frag6Frame(tb, udpP, 202, 4, false, dgram, 0), xdpPass, passed(fragment)},
		{"udp6 first fragment after a later one", frag6Frame(tb, udpP, 202, 0, true, udpHead(5556, 9000, 3000, dgram), 0), xdpPass, passed(fragment)},
		{"udp6 first fragment, unbound port", frag6Frame(tb, udpP, 203, 0, true, udpHead(5556, 9999, 3000, dgram), 0), xdpPass, passed(fragment)},
		{"udp6 atomic fragment", frag6Frame(tb, udpP, 204, 0, false, udpHead(5556, 9000, 8+uint16(len(dgram)), dgram), 0), xdpPass, passed(fragment)},
		{"tcp6 fragment", frag6Frame(tb, tcpP, 205, 0, true, t6[l3+40:], 0), xdpPass, passed(fragment)},
		{"udp6 fragment, destination options after the fragment header", frag6Frame(tb, dst, 206, 0, true, append(ext6(udpP, 0), udpHead(5556, 9000, 3000, dgram)...), 0), xdpPass, passed(fragment)},
		{"udp6 fragment header cut", udp6Ext(layers.IPProtocolIPv6Fragment)[:l3+40+4], xdpPass, malformed(truncExt)},
		{"udp6 first fragment, udp header cut", frag6Frame(tb, udpP, 207, 0, true, []byte{0x15, 0xb4}, 0), xdpPass, malformed(truncUDP)},
		{"udp6 first fragment, payload length beyond frame", put16(frag6Frame(tb, udpP, 208, 0, true, udpHead(5556, 9000, 3000, dgram), 0), l3+4, 1000), xdpPass, malformed(badLength)},
		{"ipv6 no next header", udp6Ext(layers.IPProtocolNoNextHeader), xdpPass, passed(notL4)},

		{"ipv4 ihl 4", patch(u4, l3, 0x44), xdpPass, malformed(badIHL)},
		{"ipv4 ihl 0", patch(u4, l3, 0x40), xdpPass, malformed(badIHL)},
		{"ipv4 ethertype, version 6", patch(u4, l3, 0x65), xdpPass, malformed(badVersion)},
		{"ipv6 ethertype, version 4", patch(u6, l3, 0x45), xdpPass, malformed(badVersion)},
		{"ipv4 total length beyond frame", put16(u4, l3+2, uint16(len(u4)-l3+1)), xdpPass, malformed(badLength)},
		{"ipv4 total length below ihl", put16(u4, l3+2, 19), xdpPass, malformed(badLength)},
		{"ipv4 total length cuts udp header", put16(u4, l3+2, 24), xdpPass, malformed(badLength)},
		{"udp length below 8", put16(u4, l4+4, 7), xdpPass, malformed(badLength)},
		{"udp length beyond ip payload", put16(u4, l4+4, uint16(len(u4)-l4+1)), xdpPass, malformed(badLength)},
		{"tcp data offset 4", patch(t4, l4+12, 0x40), xdpPass, malformed(badTCPOff)},
		{"tcp data offset beyond segment", patch(t4, l4+12, 0xf0), xdpPass, malformed(badTCPOff)},
		{"ipv6 payload length beyond frame", put16(u6, l3+4, uint16(len(u6)-l3-40+1)), xdpPass, malformed(badLength)},
		{"ipv6 payload length below extension headers", func() []byte {
			b := udp6Ext(hbh, ext6(udpP, 1))
			return put16(b, l3+4, 8)
		}(), xdpPass, malformed(badLength)},
	}
}

// bigTCP4 is a TCP segment to the IPv4 listener on port 80 with n bytes
// of payload, its IP total length claiming extra bytes more.
func bigTCP4(tb testing.TB, n, extra int) []byte {
	tc, i := tcp(5556, 80), ip4(layers.IPProtocolTCP)
	tc.SetNetworkLayerForChecksum(i)
	b := serialize(tb, eth(layers.EthernetTypeIPv4), i, tc, gopacket.Payload(make([]byte, n)))
	if extra != 0 {
		binary.BigEndian.PutUint16(b[16:], binary.BigEndian.Uint16(b[16:])+uint16(extra))
	}
	return b
}

// bigTCP6 is a TCP segment of the established IPv6 connection with n bytes
// of payload.
func bigTCP6(tb testing.TB, n int) []byte {
	tc, i := tcp(40000, 8080), ip6(layers.IPProtocolTCP)
	tc.SetNetworkLayerForChecksum(i)
	return serialize(tb, eth(layers.EthernetTypeIPv6), i, tc, gopacket.Payload(make([]byte, n)))
}

// bigTCPZeroLen is a TCP segment with n bytes of payload and its IP length
// field 0, as Linux sends a BIG TCP segment (longer than the field holds):
// of the established IPv6 connection (v6) or to the IPv4 listener.
func bigTCPZeroLen(tb testing.TB, v6 bool, n int) []byte {
	b, lenAt := bigTCP4(tb, 0, 0), 14+2
	if v6 {
		b, lenAt = bigTCP6(tb, 0), 14+4
	}
	b = append(b, make([]byte, n)...)
	binary.BigEndian.PutUint16(b[lenAt:], 0)
	return b
}

// withJumbo inserts after the IPv6 header of b a hop-by-hop header of 8
// bytes holding one option of type opt and 4 bytes (0xc2: the jumbo
// payload option, the packet's length after the IPv6 header), as older
// Linux sends a BIG TCP segment.
func withJumbo(b []byte, opt byte) []byte {
	const l3 = 14
	c := make([]byte, 0, len(b)+8)
	c = append(c, b[:l3+40]...)
	c = append(c, b[l3+6], 0, opt, 4, 0, 0, 0, 0)
	c = append(c, b[l3+40:]...)
	c[l3+6] = 0 // hop-by-hop
	binary.BigEndian.PutUint32(c[l3+40+4:], uint32(len(c)-l3-40))
	return c
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestProgramVerdicts runs the program on packets built with gopacket and
// checks the verdict and the exact counter deltas of each.
func TestProgramVerdicts(t *testing.T) {
	o := progEnv(t)
	prog := o.Program()
	cases := progCases(t)
	if len(cases) < 25 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			model, merr := modelRun(o, testIfindex, c.pkt)
			before, err := o.Counters.Read()
			if err != nil {
				t.Fatal(err)
			}
			got := runXDP(t, prog, c.pkt)
			after, err := o.Counters.Read()
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("verdict %d, want %d", got, c.want)
			}
			if d := after.Sub(before); d != c.cnt {
				t.Errorf("counters moved by\n%s\nwant\n%s", fmtCounters(d), fmtCounters(c.cnt))
			}
			if merr != nil || model.reason != reasonOf(c.cnt) {
				t.Errorf("the model says %q (%v), the case %q", model.reason, merr, reasonOf(c.cnt))
			} else if err := model.check(o); err != nil {
				t.Error(err)
			}
		})
	}
}

func fmtCounters(c Counters) string {
	s := ""
	c.Each(func(name string, v uint64) {
		if v != 0 {
			s += fmt.Sprintf(" %s=%d", name, v)
		}
	})
	if s == "" {
		return " (none)"
	}
	return s
}

// TestProgramNoSocket checks that a hit on a queue without a socket comes
// back as XDP_PASS (bpf_redirect_map's fallback) and is counted as such.
func TestProgramNoSocket(t *testing.T) {
	o := progEnv(t)
	if err := o.XSKs.Delete(0); err != nil {
		t.Fatal(err)
	}
	if err := o.XSKs.Delete(0); err != nil {
		t.Fatalf("deleting an empty slot: %v", err)
	}
	if err := o.XSKs.Delete(4); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("delete beyond the map: %v, want ErrInvalidKey", err)
	}
	for _, c := range []struct {
		name string
		pkt  []byte
		hit  func(*Counters)
	}{
		{"exact", udp4Frame(t, 5556, 9000), exactHit},
		{"wildcard", udp6Frame(t, 5556, 9001), wildHit},
		{"established", udp4Frame(t, 5555, 9001), estHit},
		{"first fragment", frag4Frame(t, layers.IPProtocolUDP, 1, 0, true, udpHead(5556, 9000, 3000, nil)), fragHit},
		{"later fragment", frag4Frame(t, layers.IPProtocolUDP, 1, 4, false, make([]byte, 32)), fragHit},
	} {
		before, _ := o.Counters.Read()
		if got := runXDP(t, o.Program(), c.pkt); got != xdpPass {
			t.Errorf("%s: verdict %d, want XDP_PASS", c.name, got)
		}
		after, _ := o.Counters.Read()
		want := passed(c.hit)
		want.NoXSK = 1
		if d := after.Sub(before); d != want {
			t.Errorf("%s: counters moved by%s, want%s", c.name, fmtCounters(d), fmtCounters(want))
		}
	}
}

// TestProgramPortIndex checks that the program skips the lookups the port
// index rules out: with the bits of a bound port cleared behind the
// loader's back, its packets are no longer matched.
func TestProgramPortIndex(t *testing.T) {
	o := progEnv(t)
	pkt := udp4Frame(t, 5556, 9000)
	if got := runXDP(t, o.Program(), pkt); got != xdpRedirect {
		t.Fatalf("verdict %d before clearing the bits", got)
	}
	idx := makePortSlot(17, 9000, 0, 4).index
	if err := o.objs.Ports.Put(idx, uint32(0)); err != nil {
		t.Fatal(err)
	}
	before, _ := o.Counters.Read()
	if got := runXDP(t, o.Program(), pkt); got != xdpPass {
		t.Fatalf("verdict %d with the bits cleared", got)
	}
	after, _ := o.Counters.Read()
	if d := after.Sub(before); d != passed(noMatch) {
		t.Fatalf("counters moved by%s", fmtCounters(d))
	}
	// Only the wildcard bit: the exact listener is skipped, the wildcard hits.
	if err := o.objs.Ports.Put(idx, uint32(1<<4)); err != nil {
		t.Fatal(err)
	}
	before, _ = o.Counters.Read()
	if got := runXDP(t, o.Program(), pkt); got != xdpRedirect {
		t.Fatalf("verdict %d with the wildcard bit only", got)
	}
	after, _ = o.Counters.Read()
	if d := after.Sub(before); d != redirected(wildHit) {
		t.Fatalf("counters moved by%s", fmtCounters(d))
	}
}

// TestProgramCheckLocal: loaded with CheckLocal, the program steers a
// packet to a wildcard listener's port only when its destination is in
// the locals map; one routed through the host, or to an address it no
// longer has, goes to the kernel (not_local). Exact listeners and
// established sessions, whose entries name the address, are not looked
// up there. The Go model agrees on each.
func TestProgramCheckLocal(t *testing.T) {
	o := progEnvWith(t, ObjectsOptions{Queues: 4, MAC: macLocal, CheckLocal: true})
	routed := netip.MustParseAddr("10.0.9.9")
	toRouted := func(f []byte) []byte {
		c := patch(f, 14+16, routed.AsSlice()...)
		binary.BigEndian.PutUint16(c[14+10:], 0) // the IPv4 header checksum is not the program's
		return c
	}
	notLocal := func(c *Counters) { c.NotLocal++ }
	for _, step := range []struct {
		locals []netip.Addr
		cases  []progCase
	}{
		{[]netip.Addr{v4Local, v6Local}, []progCase{
			{"wildcard, local destination", udp4Frame(t, 5556, 9001), xdpRedirect, redirected(wildHit)},
			{"wildcard, routed destination", toRouted(udp4Frame(t, 5556, 9001)), xdpPass, passed(notLocal)},
			{"exact listener", udp4Frame(t, 5556, 9000), xdpRedirect, redirected(exactHit)},
			{"established", udp4Frame(t, 5555, 9001), xdpRedirect, redirected(estHit)},
			{"ipv6 wildcard, local destination", udp6Frame(t, 5556, 9001), xdpRedirect, redirected(wildHit)},
		}},
		{[]netip.Addr{v6Local}, []progCase{
			{"wildcard, an address the host no longer has", udp4Frame(t, 5556, 9001), xdpPass, passed(notLocal)},
			{"ipv6 wildcard, still local", udp6Frame(t, 5556, 9001), xdpRedirect, redirected(wildHit)},
		}},
	} {
		if err := o.Locals.Set(step.locals); err != nil {
			t.Fatal(err)
		}
		for _, c := range step.cases {
			checkProgStep(t, o, c, fmt.Sprintf("locals %v", step.locals))
		}
	}
}

// TestProgramSetMAC: after SetMAC the program takes frames to the new MAC
// and passes those to the old one, as the kernel does once the
// interface's address changed.
func TestProgramSetMAC(t *testing.T) {
	o := progEnvWith(t, ObjectsOptions{Queues: 4, MAC: macLocal})
	newMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x42}
	u4 := udp4Frame(t, 5555, 9001)
	toNew := patch(u4, 0, newMAC...)
	for _, step := range []struct {
		mac   net.HardwareAddr
		cases []progCase
	}{
		{macLocal, []progCase{
			{"to the interface's mac", u4, xdpRedirect, redirected(estHit)},
			{"to the mac it will have", toNew, xdpPass, passed(otherHost)},
		}},
		{newMAC, []progCase{
			{"to the old mac", u4, xdpPass, passed(otherHost)},
			{"to the new mac", toNew, xdpRedirect, redirected(estHit)},
		}},
	} {
		if err := o.SetMAC(step.mac); err != nil {
			t.Fatal(err)
		}
		for _, c := range step.cases {
			checkProgStep(t, o, c, fmt.Sprintf("mac %v", step.mac))
		}
	}
	if err := o.SetMAC(net.HardwareAddr{1, 2, 3}); err == nil {
		t.Error("SetMAC of 3 bytes: no error")
	}
}

// checkProgStep runs case c through the program, in the state that the
// step named by state set, and checks its verdict, the counters and the
// model's reason.
func checkProgStep(t *testing.T, o *Objects, c progCase, state string) {
	t.Helper()
	before, _ := o.Counters.Read()
	got := runXDP(t, o.Program(), c.pkt)
	after, _ := o.Counters.Read()
	if d := after.Sub(before); got != c.want || d != c.cnt {
		t.Errorf("%s (%s): verdict %d, counters%s; want %d,%s", c.name, state, got, fmtCounters(d), c.want, fmtCounters(c.cnt))
	}
	model, err := modelRun(o, testIfindex, c.pkt)
	if err != nil {
		t.Fatal(err)
	}
	if want := reasonOf(c.cnt); model.reason != want {
		t.Errorf("%s: the model says %s, the program %s", c.name, model.reason, want)
	}
}
