package loader

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/xsessiond/xsessiond/flow"
)

// Addresses of the packets built here: the receiving host is "local".
var (
	macLocal  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	macRemote = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	v4Local   = netip.MustParseAddr("10.0.0.2")
	v4Remote  = netip.MustParseAddr("10.0.0.1")
	v6Local   = netip.MustParseAddr("fd00::2")
	v6Remote  = netip.MustParseAddr("fd00::1")
)

// serialize builds a frame with lengths and checksums filled in.
func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: macRemote, DstMAC: macLocal, EthernetType: t}
}

func ip4(proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: v4Remote.AsSlice(), DstIP: v4Local.AsSlice()}
}

func ip6(next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: v6Remote.AsSlice(), DstIP: v6Local.AsSlice()}
}

func udp(sport, dport uint16) *layers.UDP {
	return &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
}

func tcp(sport, dport uint16) *layers.TCP {
	return &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), SYN: true, Window: 65535, Seq: 1}
}

var payload = gopacket.Payload([]byte("hello, sessions"))

// udp4Frame is Ethernet / IPv4 / UDP sport→dport / payload.
func udp4Frame(tb testing.TB, sport, dport uint16) []byte {
	u := udp(sport, dport)
	i := ip4(layers.IPProtocolUDP)
	u.SetNetworkLayerForChecksum(i)
	return serialize(tb, eth(layers.EthernetTypeIPv4), i, u, payload)
}

func udp6Frame(tb testing.TB, sport, dport uint16) []byte {
	u := udp(sport, dport)
	i := ip6(layers.IPProtocolUDP)
	u.SetNetworkLayerForChecksum(i)
	return serialize(tb, eth(layers.EthernetTypeIPv6), i, u, payload)
}

func tcp4Frame(tb testing.TB, sport, dport uint16) []byte {
	tc := tcp(sport, dport)
	i := ip4(layers.IPProtocolTCP)
	tc.SetNetworkLayerForChecksum(i)
	return serialize(tb, eth(layers.EthernetTypeIPv4), i, tc, payload)
}

func tcp6Frame(tb testing.TB, sport, dport uint16) []byte {
	tc := tcp(sport, dport)
	i := ip6(layers.IPProtocolTCP)
	tc.SetNetworkLayerForChecksum(i)
	return serialize(tb, eth(layers.EthernetTypeIPv6), i, tc, payload)
}

// ext6 is a raw IPv6 extension header of (units+1)*8 bytes whose body is
// one PadN option.
func ext6(next layers.IPProtocol, units uint8) gopacket.Payload {
	b := make([]byte, (int(units)+1)*8)
	b[0] = byte(next)
	b[1] = units
	b[2] = 1 // PadN
	b[3] = byte(len(b) - 4)
	return b
}

// routing6 is a type-0-free routing header (type 4, segments left 0) of 8
// bytes.
func routing6(next layers.IPProtocol) gopacket.Payload {
	return gopacket.Payload{byte(next), 0, 4, 0, 0, 0, 0, 0}
}

// tuple4/tuple6 are the FiveTuple of a packet from remote:rport to
// local:lport as the receiving host keys it.
func tuple(proto flow.Transport, local netip.Addr, lport uint16, remote netip.Addr, rport uint16) flow.FiveTuple {
	fam := flow.Family6
	if local.Is4() {
		fam = flow.Family4
	}
	return flow.FiveTuple{
		Local: flow.AddrBytes(local), Remote: flow.AddrBytes(remote),
		LocalPort: lport, RemotePort: rport, Proto: proto, Family: fam,
	}
}

// listener is the FiveTuple of a listener on addr:port.
func listener(proto flow.Transport, addr netip.Addr, port uint16) flow.FiveTuple {
	fam := flow.Family6
	if addr.Is4() {
		fam = flow.Family4
	}
	return flow.FiveTuple{Local: flow.AddrBytes(addr), LocalPort: port, Proto: proto, Family: fam}
}

// udpHead is a UDP header from sport to dport whose length field says
// ulen, followed by body: the start of a datagram's first fragment.
func udpHead(sport, dport, ulen uint16, body []byte) []byte {
	b := make([]byte, 8, 8+len(body))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], ulen)
	return append(b, body...)
}

// frag4Frame is Ethernet / IPv4 (identification id, protocol proto, offset
// off in 8-byte units, MF as more says) / body.
func frag4Frame(tb testing.TB, proto layers.IPProtocol, id, off uint16, more bool, body []byte) []byte {
	i := ip4(proto)
	i.Id = id
	i.FragOffset = off
	if more {
		i.Flags = layers.IPv4MoreFragments
	}
	return serialize(tb, eth(layers.EthernetTypeIPv4), i, gopacket.Payload(body))
}

// frag6Hdr is an IPv6 fragment header.
func frag6Hdr(next layers.IPProtocol, id uint32, off uint16, more bool) gopacket.Payload {
	b := make([]byte, 8)
	b[0] = byte(next)
	fo := off << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(b[2:], fo)
	binary.BigEndian.PutUint32(b[4:], id)
	return b
}

// frag6Frame is Ethernet / IPv6 / the extension headers ext (the first of
// type first) / a fragment header / body. Without ext, first is ignored.
func frag6Frame(tb testing.TB, next layers.IPProtocol, id uint32, off uint16, more bool, body []byte, first layers.IPProtocol, ext ...gopacket.Payload) []byte {
	nh := layers.IPProtocolIPv6Fragment
	if len(ext) > 0 {
		nh = first
	}
	ls := []gopacket.SerializableLayer{eth(layers.EthernetTypeIPv6), ip6(nh)}
	for _, e := range ext {
		ls = append(ls, e)
	}
	ls = append(ls, frag6Hdr(next, id, off, more), gopacket.Payload(body))
	return serialize(tb, ls...)
}
