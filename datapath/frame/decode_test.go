package frame

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/xsessiond/xsessiond/flow"
)

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	ip4A = netip.MustParseAddr("10.77.0.1")
	ip4B = netip.MustParseAddr("10.77.0.2")
	ip6A = netip.MustParseAddr("fd77::1")
	ip6B = netip.MustParseAddr("fd77::2")
)

// pkt describes a frame for gopacket to build.
type pkt struct {
	tags      []uint16 // VLAN TCIs, outer first
	qinq      bool     // outer tag is 802.1ad
	v6        bool
	ihlWords  int                 // IPv4 options: header length in words (0 = 5)
	opts      []layers.IPv4Option // IPv4 options, with ihlWords 0
	src, dst  netip.Addr          // zero: A's and B's of the family
	ext       []byte              // raw IPv6 extension headers; ipv6 NextHeader is extNext
	extNext   layers.IPProtocol
	fragOff   uint16 // IPv4 fragment offset in 8-byte units
	mf        bool
	proto     layers.IPProtocol // 0 = UDP
	noUDPCsum bool
	payload   []byte
	sport     uint16
	dport     uint16
}

// build serializes p with gopacket, computing lengths and checksums.
func (p pkt) build(t testing.TB) []byte {
	t.Helper()
	var ls []gopacket.SerializableLayer
	eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB}
	ls = append(ls, eth)
	l3type := layers.EthernetTypeIPv4
	if p.v6 {
		l3type = layers.EthernetTypeIPv6
	}
	prev := &eth.EthernetType
	for i, tci := range p.tags {
		if i == 0 && p.qinq {
			*prev = layers.EthernetTypeQinQ
		} else {
			*prev = layers.EthernetTypeDot1Q
		}
		d := &layers.Dot1Q{Priority: uint8(tci >> 13), DropEligible: tci&0x1000 != 0, VLANIdentifier: tci & 0x0fff}
		ls = append(ls, d)
		prev = &d.Type
	}
	*prev = l3type
	proto := p.proto
	if proto == 0 {
		proto = layers.IPProtocolUDP
	}
	var nl gopacket.NetworkLayer
	if p.v6 {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: or(p.src, ip6A).AsSlice(), DstIP: or(p.dst, ip6B).AsSlice()}
		if p.ext != nil {
			ip.NextHeader = p.extNext
		}
		ls = append(ls, ip)
		if p.ext != nil {
			ls = append(ls, gopacket.Payload(p.ext))
		}
		nl = ip
	} else {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: or(p.src, ip4A).AsSlice(), DstIP: or(p.dst, ip4B).AsSlice(), Id: 0x1234, FragOffset: p.fragOff,
			Options: p.opts}
		if p.mf {
			ip.Flags = layers.IPv4MoreFragments
		}
		if p.ihlWords > 5 {
			n := (p.ihlWords - 5) * 4
			data := make([]byte, n-2)
			for i := range data {
				data[i] = byte(i)
			}
			ip.Options = []layers.IPv4Option{{OptionType: 0x88, OptionLength: uint8(n), OptionData: data}}
		}
		ls = append(ls, ip)
		nl = ip
	}
	if proto == layers.IPProtocolUDP {
		u := &layers.UDP{SrcPort: layers.UDPPort(p.sport), DstPort: layers.UDPPort(p.dport)}
		if err := u.SetNetworkLayerForChecksum(nl); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, u)
	}
	ls = append(ls, gopacket.Payload(p.payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), buf.Bytes()...)
	if p.noUDPCsum && proto == layers.IPProtocolUDP {
		off := len(b) - len(p.payload) - UDPHeaderLen
		b[off+6], b[off+7] = 0, 0
	}
	return b
}

// ext6 returns an IPv6 extension header of the given type (hop-by-hop,
// routing, destination options) of 8*(1+units) bytes with next header nh.
func ext6(nh layers.IPProtocol, units int) []byte {
	b := make([]byte, 8*(1+units))
	b[0] = byte(nh)
	b[1] = byte(units)
	// One option fills the rest: PadN in a header of 8 bytes; in a
	// longer one an option of a type to skip when unknown (RFC 3692's
	// experimental 0x1e), as the kernel drops a packet with more than 7
	// bytes of padding in a row.
	b[2] = 1
	if units > 0 {
		b[2] = 0x1e
	}
	b[3] = byte(len(b) - 4)
	return b
}

func fragHdr6(nh layers.IPProtocol, offset8 uint16, more bool, id uint32) []byte {
	b := make([]byte, 8)
	b[0] = byte(nh)
	fo := offset8 << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(b[2:], fo)
	binary.BigEndian.PutUint32(b[4:], id)
	return b
}

// or returns a, or b when a is the zero Addr.
func or(a, b netip.Addr) netip.Addr {
	if a.IsValid() {
		return a
	}
	return b
}

// ext6Opts returns an IPv6 option header (hop-by-hop, destination
// options) with next header nh holding opts, which must fill it to a
// multiple of 8 bytes.
func ext6Opts(nh layers.IPProtocol, opts ...byte) []byte {
	return append([]byte{byte(nh), byte((2+len(opts))/8 - 1)}, opts...)
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

var payload64 = func() []byte {
	b := make([]byte, 64)
	for i := range b {
		b[i] = byte(i*3 + 1)
	}
	return b
}()

type decodeCase struct {
	name string
	p    pkt
	want Reason
}

var decodeCases = []decodeCase{
	{"ipv4-udp", pkt{payload: payload64, sport: 4000, dport: 9000}, OK},
	{"ipv4-udp-empty", pkt{payload: nil, sport: 1, dport: 2}, OK},
	{"ipv4-udp-odd", pkt{payload: payload64[:33], sport: 1, dport: 2}, OK},
	{"ipv4-udp-nocsum", pkt{payload: payload64, sport: 4000, dport: 9000, noUDPCsum: true}, OK},
	{"ipv4-options-6", pkt{ihlWords: 6, payload: payload64, sport: 5, dport: 6}, OK},
	{"ipv4-options-15", pkt{ihlWords: 15, payload: payload64, sport: 5, dport: 6}, OK},
	{"dot1q-ipv4-udp", pkt{tags: []uint16{0x2064}, payload: payload64, sport: 7, dport: 8}, OK},
	{"qinq-ipv4-udp", pkt{tags: []uint16{0x0100, 0xa200}, qinq: true, payload: payload64, sport: 7, dport: 8}, OK},
	{"dot1q-dot1q-ipv6-udp", pkt{tags: []uint16{3, 4}, v6: true, payload: payload64, sport: 7, dport: 8}, OK},
	{"three-tags", pkt{tags: []uint16{1, 2, 3}, payload: payload64, sport: 7, dport: 8}, TooManyVLANs},
	{"ipv6-udp", pkt{v6: true, payload: payload64, sport: 5300, dport: 9000}, OK},
	{"ipv6-udp-odd", pkt{v6: true, payload: payload64[:17], sport: 5300, dport: 9000}, OK},
	{"ipv6-udp-nocsum", pkt{v6: true, payload: payload64, sport: 5300, dport: 9000, noUDPCsum: true}, BadUDPCsum},
	{"ipv6-hbh-dst-udp", pkt{v6: true, ext: cat(ext6(layers.IPProtocolIPv6Destination, 0), ext6(layers.IPProtocolUDP, 2)), extNext: layers.IPProtocolIPv6HopByHop, payload: payload64, sport: 1, dport: 2}, OK},
	{"ipv6-routing-udp", pkt{v6: true, ext: routing6(layers.IPProtocolUDP, 0, 0), extNext: layers.IPProtocolIPv6Routing, payload: payload64, sport: 1, dport: 2}, OK},
	{"ipv6-atomic-frag-udp", pkt{v6: true, ext: fragHdr6(layers.IPProtocolUDP, 0, false, 9), extNext: layers.IPProtocolIPv6Fragment, payload: payload64, sport: 1, dport: 2}, OK},
	{"ipv6-frag-first", pkt{v6: true, ext: fragHdr6(layers.IPProtocolUDP, 0, true, 9), extNext: layers.IPProtocolIPv6Fragment, payload: payload64, sport: 1, dport: 2}, Fragment},
	{"ipv6-frag-later", pkt{v6: true, ext: fragHdr6(layers.IPProtocolUDP, 10, false, 9), extNext: layers.IPProtocolIPv6Fragment, payload: payload64, sport: 1, dport: 2}, Fragment},
	{"ipv6-too-many-ext", pkt{v6: true, ext: cat(ext6(0, 0), ext6(0, 0), ext6(0, 0), ext6(0, 0), ext6(0, 0), ext6(0, 0), ext6(0, 0), ext6(0, 0), ext6(0, 0), ext6(layers.IPProtocolUDP, 0)), extNext: layers.IPProtocolIPv6HopByHop, payload: payload64, sport: 1, dport: 2}, BadExtHeader},
	{"ipv6-tcp", pkt{v6: true, proto: layers.IPProtocolTCP, payload: payload64}, NotUDP},
	// Addresses the kernel drops from a link as martian.
	{"ipv4-from-loopback", pkt{src: netip.MustParseAddr("127.0.0.1"), payload: payload64, sport: 1, dport: 2}, MartianAddr},
	{"ipv4-from-multicast", pkt{src: netip.MustParseAddr("224.0.0.1"), payload: payload64, sport: 1, dport: 2}, MartianAddr},
	{"ipv4-from-broadcast", pkt{src: netip.MustParseAddr("255.255.255.255"), payload: payload64, sport: 1, dport: 2}, MartianAddr},
	{"ipv4-from-zeronet", pkt{src: netip.MustParseAddr("0.0.0.0"), payload: payload64, sport: 1, dport: 2}, MartianAddr},
	{"ipv4-from-zero-to-broadcast", pkt{src: netip.MustParseAddr("0.0.0.0"), dst: netip.MustParseAddr("255.255.255.255"), payload: payload64, sport: 1, dport: 2}, OK},
	{"ipv4-to-loopback", pkt{dst: netip.MustParseAddr("127.0.0.1"), payload: payload64, sport: 1, dport: 2}, MartianAddr},
	{"ipv4-tcp-from-loopback", pkt{src: netip.MustParseAddr("127.0.0.1"), proto: layers.IPProtocolTCP, payload: payload64}, MartianAddr},
	{"ipv6-from-loopback", pkt{v6: true, src: netip.IPv6Loopback(), payload: payload64, sport: 1, dport: 2}, MartianAddr},
	{"ipv6-from-multicast", pkt{v6: true, src: netip.MustParseAddr("ff02::1"), payload: payload64, sport: 1, dport: 2}, MartianAddr},
	{"ipv6-to-interface-local-multicast", pkt{v6: true, dst: netip.MustParseAddr("ff01::1"), payload: payload64, sport: 1, dport: 2}, MartianAddr},
	{"ipv6-to-link-local-multicast", pkt{v6: true, dst: netip.MustParseAddr("ff02::1"), payload: payload64, sport: 1, dport: 2}, OK},
	// Options the kernel refuses, and some it takes.
	{"ipv4-options-nop-eol", pkt{opts: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}, payload: payload64, sport: 1, dport: 2}, OK},
	{"ipv4-option-rr-short", pkt{opts: []layers.IPv4Option{{OptionType: 7, OptionLength: 2}, {OptionType: 1}, {OptionType: 0}}, payload: payload64, sport: 1, dport: 2}, BadIPOptions},
	{"ipv4-option-rr", pkt{opts: []layers.IPv4Option{{OptionType: 7, OptionLength: 7, OptionData: []byte{4, 0, 0, 0, 0}}, {OptionType: 0}}, payload: payload64, sport: 1, dport: 2}, OK},
	{"ipv4-option-ts-unknown-flag-no-room", pkt{opts: []layers.IPv4Option{{OptionType: 68, OptionLength: 6, OptionData: []byte{5, 2, 0, 0}}, {OptionType: 1}, {OptionType: 0}}, payload: payload64, sport: 1, dport: 2}, BadIPOptions},
	{"ipv4-option-lsrr", pkt{opts: []layers.IPv4Option{{OptionType: 131, OptionLength: 7, OptionData: []byte{4, 10, 77, 0, 2}}, {OptionType: 0}}, payload: payload64, sport: 1, dport: 2}, BadIPOptions},
	{"ipv6-dst-unknown-skip", pkt{v6: true, ext: ext6Opts(layers.IPProtocolUDP, 0x1e, 2, 0, 0, 1, 0), extNext: layers.IPProtocolIPv6Destination, payload: payload64, sport: 1, dport: 2}, OK},
	{"ipv6-dst-unknown-discard", pkt{v6: true, ext: ext6Opts(layers.IPProtocolUDP, 0x5e, 2, 0, 0, 1, 0), extNext: layers.IPProtocolIPv6Destination, payload: payload64, sport: 1, dport: 2}, BadIPOptions},
	{"ipv6-dst-padding-8", pkt{v6: true, ext: ext6Opts(layers.IPProtocolUDP, 1, 4, 0, 0, 0, 0, 1, 0, 1, 6, 0, 0, 0, 0, 0, 0), extNext: layers.IPProtocolIPv6Destination, payload: payload64, sport: 1, dport: 2}, BadIPOptions},
	{"ipv6-dst-padn-nonzero", pkt{v6: true, ext: ext6Opts(layers.IPProtocolUDP, 1, 4, 0, 0, 7, 0), extNext: layers.IPProtocolIPv6Destination, payload: payload64, sport: 1, dport: 2}, BadIPOptions},
	{"ipv6-dst-option-past-header", pkt{v6: true, ext: ext6Opts(layers.IPProtocolUDP, 0x1e, 5, 0, 0, 0, 0), extNext: layers.IPProtocolIPv6Destination, payload: payload64, sport: 1, dport: 2}, BadIPOptions},
	{"ipv6-hbh-router-alert", pkt{v6: true, ext: ext6Opts(layers.IPProtocolUDP, 5, 2, 0, 0, 1, 0), extNext: layers.IPProtocolIPv6HopByHop, payload: payload64, sport: 1, dport: 2}, OK},
	{"ipv6-hbh-jumbo-with-length", pkt{v6: true, ext: ext6Opts(layers.IPProtocolUDP, 0xc2, 4, 0, 1, 0, 0), extNext: layers.IPProtocolIPv6HopByHop, payload: payload64, sport: 1, dport: 2}, BadIPOptions},
	{"ipv6-hbh-not-first", pkt{v6: true, ext: cat(ext6(layers.IPProtocolIPv6HopByHop, 0), ext6(layers.IPProtocolUDP, 0)), extNext: layers.IPProtocolIPv6Destination, payload: payload64, sport: 1, dport: 2}, BadExtHeader},
	{"ipv4-frag-first", pkt{mf: true, payload: payload64, sport: 1, dport: 2}, Fragment},
	{"ipv4-frag-later", pkt{fragOff: 100, payload: payload64, sport: 1, dport: 2}, Fragment},
	{"ipv4-icmp", pkt{proto: layers.IPProtocolICMPv4, payload: payload64}, NotUDP},
}

// gopacketView is what gopacket makes of a frame, in Packet's terms.
func gopacketView(t *testing.T, b []byte) (Packet, []byte) {
	t.Helper()
	var want Packet
	gp := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	if el := gp.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	eth := gp.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	copy(want.DstMAC[:], eth.DstMAC)
	copy(want.SrcMAC[:], eth.SrcMAC)
	for _, l := range gp.Layers() {
		if d, ok := l.(*layers.Dot1Q); ok {
			var tci uint16 = uint16(d.Priority)<<13 | d.VLANIdentifier
			if d.DropEligible {
				tci |= 0x1000
			}
			want.VLAN[want.NumVLAN] = tci
			want.NumVLAN++
		}
	}
	if ip, ok := gp.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		want.Family = flow.Family4
		want.Src = flow.AddrBytes(netip.AddrFrom4([4]byte(ip.SrcIP.To4())))
		want.Dst = flow.AddrBytes(netip.AddrFrom4([4]byte(ip.DstIP.To4())))
		want.HopLimit = ip.TTL
	}
	if ip, ok := gp.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		want.Family = flow.Family6
		want.Src = flow.AddrBytes(netip.AddrFrom16([16]byte(ip.SrcIP)))
		want.Dst = flow.AddrBytes(netip.AddrFrom16([16]byte(ip.DstIP)))
		want.HopLimit = ip.HopLimit
	}
	var payload []byte
	if u, ok := gp.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		want.SrcPort, want.DstPort = uint16(u.SrcPort), uint16(u.DstPort)
		want.Proto = flow.TransportUDP
		payload = u.Payload
	}
	return want, payload
}

func TestDecodeAgainstGopacket(t *testing.T) {
	for _, c := range decodeCases {
		t.Run(c.name, func(t *testing.T) {
			b := c.p.build(t)
			var p Packet
			got := Decode(b, &p)
			if got != c.want {
				t.Fatalf("Decode = %v, want %v", got, c.want)
			}
			if p.DstMAC != [6]byte(macB) || p.SrcMAC != [6]byte(macA) || (c.want > NotIP && p.Family == 0) {
				t.Fatalf("header fields not set: %+v", p)
			}
			if got != OK {
				if c.want == Fragment && !(p.MoreFrags || p.FragOffset != 0) {
					t.Fatalf("fragment fields not set: %+v", p)
				}
				if c.want == Fragment && p.FragOffset != c.p.fragOff*8 && c.p.ext == nil {
					t.Fatalf("FragOffset = %d, want %d", p.FragOffset, c.p.fragOff*8)
				}
				return
			}
			want, payload := gopacketView(t, b)
			if p.NumVLAN != want.NumVLAN || p.VLAN != want.VLAN {
				t.Errorf("VLAN %d %04x, gopacket %d %04x", p.NumVLAN, p.VLAN, want.NumVLAN, want.VLAN)
			}
			if p.Family != want.Family || p.Src != want.Src || p.Dst != want.Dst || p.HopLimit != want.HopLimit {
				t.Errorf("IP: got %d %x %x %d, gopacket %d %x %x %d", p.Family, p.Src, p.Dst, p.HopLimit, want.Family, want.Src, want.Dst, want.HopLimit)
			}
			if p.Proto != flow.TransportUDP || p.SrcPort != c.p.sport || p.DstPort != c.p.dport || !bytes.Equal(p.Payload(b), c.p.payload) {
				t.Errorf("UDP: got %v %d %d %x, built %d %d %x", p.Proto, p.SrcPort, p.DstPort, p.Payload(b), c.p.sport, c.p.dport, c.p.payload)
			}
			// gopacket stops at any IPv6 fragment header, atomic or not.
			if want.Proto != 0 {
				if p.SrcPort != want.SrcPort || p.DstPort != want.DstPort || !bytes.Equal(p.Payload(b), payload) {
					t.Errorf("UDP: got %d %d %x, gopacket %d %d %x", p.SrcPort, p.DstPort, p.Payload(b), want.SrcPort, want.DstPort, payload)
				}
			}
			ft := p.FiveTuple()
			if ft.Local != p.Dst || ft.RemotePort != p.SrcPort || ft.Family != p.Family || ft.Proto != flow.TransportUDP {
				t.Errorf("FiveTuple %+v", ft)
			}
			if a := testing.AllocsPerRun(100, func() { Decode(b, &p) }); a != 0 {
				t.Errorf("Decode allocates %v times per run", a)
			}
		})
	}
}

func TestDecodeNotIP(t *testing.T) {
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: macA, SourceProtAddress: ip4A.AsSlice(), DstHwAddress: make([]byte, 6), DstProtAddress: ip4B.AsSlice()}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeARP}, arp); err != nil {
		t.Fatal(err)
	}
	var p Packet
	if r := Decode(buf.Bytes(), &p); r != NotIP {
		t.Fatalf("ARP: %v, want not-ip", r)
	}
}

// TestDecodeTruncated cuts valid frames at every length: each prefix that
// drops part of the datagram must be rejected, with a reason, not a panic.
func TestDecodeTruncated(t *testing.T) {
	for _, c := range decodeCases {
		if c.want != OK {
			continue
		}
		b := c.p.build(t)
		var p Packet
		if r := Decode(b, &p); r != OK {
			t.Fatalf("%s: %v", c.name, r)
		}
		end := p.PayloadOff + p.PayloadLen // gopacket pads short frames to 60 bytes
		for n := 0; n < end; n++ {
			if r := Decode(b[:n], &p); r == OK {
				t.Fatalf("%s cut at %d of %d: OK", c.name, n, len(b))
			}
		}
	}
	b := pkt{payload: payload64, sport: 1, dport: 2}.build(t)
	var p Packet
	for n, want := range map[int]Reason{0: TruncatedEth, 13: TruncatedEth, 14: TruncatedIP, 33: TruncatedIP, 34 + 7: TruncatedIP} {
		if r := Decode(b[:n], &p); r != want {
			t.Errorf("cut at %d: %v, want %v", n, r, want)
		}
	}
}

func TestDecodePadding(t *testing.T) {
	b := pkt{payload: payload64[:4], sport: 1, dport: 2}.build(t)
	padded := append(append([]byte(nil), b...), make([]byte, 60-len(b))...)
	var p Packet
	if r := Decode(padded, &p); r != OK || p.PayloadLen != 4 {
		t.Fatalf("padded frame: %v payload %d", r, p.PayloadLen)
	}
}

// TestDecodeCorruption flips single bits and edits fields of valid frames
// and checks the damage is caught by the right check.
func TestDecodeCorruption(t *testing.T) {
	v4 := pkt{payload: payload64, sport: 4000, dport: 9000}.build(t)
	v6 := pkt{v6: true, payload: payload64, sport: 4000, dport: 9000}.build(t)
	var p Packet
	// Any single bit flip in the UDP header or payload breaks the checksum
	// (ports and length included; a length change may be caught first).
	for _, b := range [][]byte{v4, v6} {
		l4 := len(b) - len(payload64) - UDPHeaderLen
		for i := l4; i < len(b); i++ {
			for bit := 0; bit < 8; bit++ {
				c := append([]byte(nil), b...)
				c[i] ^= 1 << bit
				if r := Decode(c, &p); r == OK {
					t.Fatalf("flip byte %d bit %d: OK", i, bit)
				}
			}
		}
		// Swapping two 16-bit words is invisible to the checksum; changing
		// one to another value is not.
		c := append([]byte(nil), b...)
		c[len(c)-1]++
		if r := Decode(c, &p); r != BadUDPCsum {
			t.Fatalf("payload edit: %v, want bad-udp-csum", r)
		}
	}
	// IPv4 header: TTL, addresses and identification are only covered by
	// the header checksum.
	for _, i := range []int{14 + 4, 14 + 8, 14 + 12, 14 + 19} {
		c := append([]byte(nil), v4...)
		c[i] ^= 0x10
		if r := Decode(c, &p); r != BadIPCsum {
			t.Fatalf("IPv4 byte %d: %v, want bad-ip-csum", i, r)
		}
	}
	edit := func(b []byte, f func(c []byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	fixIPCsum := func(c []byte) {
		hl := int(c[14]&15) * 4
		c[24], c[25] = 0, 0
		binary.BigEndian.PutUint16(c[24:], Checksum(c[14:14+hl]))
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want Reason
	}{
		{"ihl-4", edit(v4, func(c []byte) { c[14] = 0x44; fixIPCsum(c) }), BadIHL},
		{"version-6-in-v4", edit(v4, func(c []byte) { c[14] = 0x65 }), BadIPVersion},
		{"version-4-in-v6", edit(v6, func(c []byte) { c[14] = 0x40 }), BadIPVersion},
		{"totlen-short", edit(v4, func(c []byte) { binary.BigEndian.PutUint16(c[16:], 19); fixIPCsum(c) }), BadIPLen},
		{"totlen-long", edit(v4, func(c []byte) { binary.BigEndian.PutUint16(c[16:], 1000); fixIPCsum(c) }), TruncatedIP},
		{"totlen-cuts-udp", edit(v4, func(c []byte) { binary.BigEndian.PutUint16(c[16:], 24); fixIPCsum(c) }), TruncatedUDP},
		{"udplen-7", edit(v4, func(c []byte) { binary.BigEndian.PutUint16(c[38:], 7) }), BadUDPLen},
		{"udplen-beyond-ip", edit(v4, func(c []byte) { binary.BigEndian.PutUint16(c[38:], 200) }), BadUDPLen},
		{"ipv6-paylen-0", edit(v6, func(c []byte) { c[18], c[19] = 0, 0 }), BadIPLen},
		{"ipv6-paylen-long", edit(v6, func(c []byte) { c[18], c[19] = 0xff, 0 }), TruncatedIP},
	} {
		if r := Decode(tc.b, &p); r != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, r, tc.want)
		}
	}
	// SkipUDPChecksum accepts a corrupted payload.
	c := edit(v4, func(c []byte) { c[len(c)-1]++ })
	if r := DecodeFlags(c, &p, SkipUDPChecksum); r != OK {
		t.Fatalf("SkipUDPChecksum: %v", r)
	}
}

func TestReasonString(t *testing.T) {
	seen := map[string]bool{}
	for r := Reason(0); r < numReasons; r++ {
		s := r.String()
		if s == "" || s == "unknown" || seen[s] {
			t.Fatalf("reason %d has name %q", r, s)
		}
		seen[s] = true
	}
	if Reason(200).String() != "unknown" {
		t.Fatal("out-of-range reason")
	}
}

// TestDecodeBigTCP: a TCP segment longer than an IP length field holds,
// which says 0 (BIG TCP: IPv4, IPv6 without and with a jumbo option's
// hop-by-hop header), decodes to its TCP header and the frame's end; the
// same length field in a frame within 64 KiB, or with UDP, stays a bad
// length.
func TestDecodeBigTCP(t *testing.T) {
	const n = 70000
	v4 := make([]byte, EthHeaderLen+IPv4HeaderLen+20+n)
	binary.BigEndian.PutUint16(v4[12:], EtherTypeIPv4)
	v4[14], v4[14+8], v4[14+9] = 0x45, 64, byte(flow.TransportTCP)
	binary.BigEndian.PutUint16(v4[14+6:], 0x4000) // DF
	binary.BigEndian.PutUint16(v4[14+10:], Checksum(v4[14:34]))
	v6 := make([]byte, EthHeaderLen+IPv6HeaderLen+20+n)
	binary.BigEndian.PutUint16(v6[12:], EtherTypeIPv6)
	v6[14], v6[14+6], v6[14+7] = 0x60, byte(flow.TransportTCP), 64
	jumbo := make([]byte, 0, len(v6)+8)
	jumbo = append(jumbo, v6[:14+40]...)
	jumbo = append(jumbo, byte(flow.TransportTCP), 0, ipv6OptJumbo, 4, 0, 0, 0, 0)
	jumbo = append(jumbo, v6[14+40:]...)
	jumbo[14+6] = ipv6HopByHop
	binary.BigEndian.PutUint32(jumbo[14+44:], uint32(len(jumbo)-14-40))
	var p Packet
	for _, tc := range []struct {
		name string
		b    []byte
		l4   int
		want Reason
	}{
		{"ipv4", v4, 34, NotUDP},
		{"ipv6", v6, 54, NotUDP},
		{"ipv6 jumbo option", jumbo, 62, NotUDP},
		{"ipv4 within 64 KiB", v4[:60000], 0, BadIPLen},
		{"ipv6 within 64 KiB", v6[:60000], 0, BadIPLen},
		{"ipv6 udp", func() []byte { c := append([]byte(nil), v6...); c[14+6] = byte(flow.TransportUDP); return c }(), 0, BadIPLen},
	} {
		r := Decode(tc.b, &p)
		if r != tc.want || (r == NotUDP && (p.Proto != flow.TransportTCP || p.L4Off != tc.l4)) {
			t.Errorf("%s: %v, proto %v at %d; want %v at %d", tc.name, r, p.Proto, p.L4Off, tc.want, tc.l4)
		}
	}
}
