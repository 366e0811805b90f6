package frame

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

// TestDecodeDatagram: the UDP datagram of a whole frame, checked as a
// reassembled one (the addresses from its IP header), decodes to the
// same ports and payload; a corrupt byte, a zero IPv6 checksum, a UDP
// length past the data or below the header are refused; bytes past the
// UDP length are ignored.
func TestDecodeDatagram(t *testing.T) {
	payload := bytes.Repeat([]byte("reassembled "), 100)
	for _, v6 := range []bool{false, true} {
		f := pkt{v6: v6, payload: payload, sport: 4000, dport: 53}.build(t)
		var whole Packet
		if r := Decode(f, &whole); r != OK {
			t.Fatalf("v6 %v: the whole frame: %v", v6, r)
		}
		dg := f[whole.L4Off:]
		ip := Packet{Family: whole.Family, Src: whole.Src, Dst: whole.Dst}
		check := func(name string, dg []byte, want Reason) *Packet {
			t.Helper()
			p := ip
			if r := DecodeDatagram(dg, &p); r != want {
				t.Fatalf("v6 %v, %s: %v, want %v", v6, name, r, want)
			}
			return &p
		}
		p := check("as sent", dg, OK)
		if p.SrcPort != 4000 || p.DstPort != 53 || !bytes.Equal(dg[p.PayloadOff:p.PayloadOff+p.PayloadLen], payload) {
			t.Fatalf("v6 %v: ports %d %d, payload %d bytes at %d", v6, p.SrcPort, p.DstPort, p.PayloadLen, p.PayloadOff)
		}
		check("with bytes after it", append(bytes.Clone(dg), 1, 2, 3), OK)
		bad := bytes.Clone(dg)
		bad[100] ^= 0x40
		check("a byte changed", bad, BadUDPCsum)
		zero := bytes.Clone(dg)
		zero[6], zero[7] = 0, 0
		if v6 {
			check("no checksum", zero, BadUDPCsum)
		} else {
			check("no checksum", zero, OK)
		}
		long := bytes.Clone(dg)
		binary.BigEndian.PutUint16(long[4:], uint16(len(dg)+1))
		check("UDP length past the data", long, BadUDPLen)
		short := bytes.Clone(dg)
		binary.BigEndian.PutUint16(short[4:], 7)
		check("UDP length below its header", short, BadUDPLen)
		check("shorter than a UDP header", dg[:7], TruncatedUDP)
	}
}

// TestDecodeFragmentData: Decode of a fragment gives its data's place in
// the frame and the largest end its datagram may reach.
func TestDecodeFragmentData(t *testing.T) {
	data := bytes.Repeat([]byte{0xab}, 64)
	for _, c := range []struct {
		name   string
		p      pkt
		maxEnd int
	}{
		{"ipv4", pkt{fragOff: 3, mf: true, proto: layers.IPProtocol(ProtoUDP), payload: data}, 0xffff - IPv4HeaderLen},
		{"ipv6", pkt{v6: true, ext: fragHdr6(layers.IPProtocolUDP, 3, true, 7), extNext: layers.IPProtocolIPv6Fragment, payload: data}, 0xffff},
		{"ipv6 after hop-by-hop", pkt{v6: true, ext: cat(ext6(layers.IPProtocolIPv6Fragment, 1), fragHdr6(layers.IPProtocolUDP, 3, true, 7)),
			extNext: layers.IPProtocolIPv6HopByHop, payload: data}, 0xffff - 16},
	} {
		c.p.noUDPCsum = true
		if c.p.v6 || c.p.fragOff != 0 {
			// No UDP header: the fragment's data is the payload.
			c.p.proto = layers.IPProtocol(0xfd)
		}
		f := c.p.build(t)
		if c.p.v6 {
			f[14+6] = byte(c.p.extNext) // the builder wrote the proto
		} else {
			f[14+9] = ProtoUDP
			binary.BigEndian.PutUint16(f[14+10:], 0)
			binary.BigEndian.PutUint16(f[14+10:], Checksum(f[14:34]))
		}
		var p Packet
		if r := Decode(f, &p); r != Fragment {
			t.Fatalf("%s: %v", c.name, r)
		}
		if got := f[p.PayloadOff : p.PayloadOff+p.PayloadLen]; !bytes.Equal(got, data) || p.FragOffset != 24 || !p.MoreFrags || p.FragMaxEnd != c.maxEnd {
			t.Fatalf("%s: data %d bytes at %d, offset %d, more %v, max end %d", c.name, p.PayloadLen, p.PayloadOff, p.FragOffset, p.MoreFrags, p.FragMaxEnd)
		}
	}
}
