package tcp

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// packetOf makes a Packet of the stack's kind from an IP packet b.
func packetOf(t *testing.T, b []byte, gso stack.GSO) Packet {
	t.Helper()
	proto, ipLen := ipv4.ProtocolNumber, header.IPv4MinimumSize
	if b[0]>>4 == 6 {
		proto, ipLen = ipv6.ProtocolNumber, header.IPv6MinimumSize
	}
	tl := int(header.TCP(b[ipLen:]).DataOffset())
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: ipLen + tl,
		Payload: buffer.MakeWithData(b[ipLen+tl:])})
	t.Cleanup(pb.DecRef)
	copy(pb.TransportHeader().Push(tl), b[ipLen:ipLen+tl])
	copy(pb.NetworkHeader().Push(ipLen), b[:ipLen])
	pb.NetworkProtocolNumber, pb.TransportProtocolNumber = proto, header.TCPProtocolNumber
	pb.GSOOptions = gso
	return Packet{pb: pb, proto: proto}
}

// mssOf returns the MSS option of a TCP header, 0 if it has none.
func mssOf(th header.TCP) uint16 {
	return header.ParseSynOptions(th.Options(), th.Flags().Contains(header.TCPFlagAck)).MSS
}

// TestClampMSS: a SYN-ACK's MSS option is lowered to fit a route's MTU,
// wherever the option sits (an odd offset adds to the checksum
// byte-swapped), with a checksum that still holds; a partial checksum is
// left alone; a smaller MSS, a segment that is not a SYN and a SYN
// without the option are not touched.
func TestClampMSS(t *testing.T) {
	v4 := [2]netip.AddrPort{netip.MustParseAddrPort("10.0.0.2:80"), netip.MustParseAddrPort("10.0.0.1:40000")}
	v6 := [2]netip.AddrPort{netip.MustParseAddrPort("[fd00::2]:80"), netip.MustParseAddrPort("[fd00::1]:40000")}
	mss := func(v uint16) []byte { return []byte{header.TCPOptionMSS, 4, byte(v >> 8), byte(v)} }
	cat := func(bs ...[]byte) []byte {
		var o []byte
		for _, b := range bs {
			o = append(o, b...)
		}
		return o
	}
	nop, ws := []byte{header.TCPOptionNOP}, []byte{header.TCPOptionWS, 3, 7}
	synAck := header.TCPFlagSyn | header.TCPFlagAck
	for _, c := range []struct {
		name    string
		ends    [2]netip.AddrPort
		flags   header.TCPFlags
		opts    []byte
		gso     stack.GSO
		mtu     int
		want    uint16 // the MSS after
		changed bool
	}{
		{"v4 SYN-ACK, MSS first", v4, synAck, cat(mss(1460), nop, ws), stack.GSO{}, 1280, 1240, true},
		{"v4 SYN, MSS at an odd offset", v4, header.TCPFlagSyn, cat(nop, mss(1460), ws), stack.GSO{}, 1280, 1240, true},
		{"v6 SYN-ACK", v6, synAck, cat(ws, nop, mss(1440), nop, nop, nop), stack.GSO{}, 1280, 1220, true},
		{"v6 SYN-ACK, MSS at an odd offset", v6, synAck, cat(ws, mss(1440), nop), stack.GSO{}, 1400, 1340, true},
		{"a smaller MSS stays", v4, synAck, cat(mss(1200), nop, ws), stack.GSO{}, 1280, 1200, false},
		{"not a SYN", v4, header.TCPFlagAck, cat(mss(1460), nop, ws), stack.GSO{}, 1280, 0, false},
		{"no MSS option", v4, synAck, cat(nop, ws), stack.GSO{}, 1280, 0, false},
		{"an option running past the header", v4, synAck, cat(nop, []byte{header.TCPOptionWS, 9, 7}), stack.GSO{}, 1280, 0, false},
		{"a small MTU: no lower than Linux's floor", v4, synAck, cat(mss(1460), nop, ws), stack.GSO{}, 100, 256, true},
		{"a small MTU, v6: no lower than Linux's floor", v6, synAck, cat(mss(1440), nop, ws), stack.GSO{}, 1000, 1220, true},
		{"the floor above the MSS", v4, synAck, cat(mss(200), nop, ws), stack.GSO{}, 100, 200, false},
		{"partial checksum", v4, synAck, cat(mss(1460), nop, ws),
			stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: 1448, L3HdrLen: 20}, 1280, 1240, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			for len(c.opts)%4 != 0 {
				c.opts = append(c.opts, header.TCPOptionEOL)
			}
			b := buildSegment(c.ends[0], c.ends[1], segment{flags: c.flags, seq: 7, ack: 9, win: 1000, opts: c.opts})
			p := packetOf(t, b, c.gso)
			sumBefore := header.TCP(p.pb.TransportHeader().Slice()).Checksum()
			if got := p.ClampMSS(c.mtu); got != c.changed {
				t.Fatalf("ClampMSS(%d) = %v, want %v", c.mtu, got, c.changed)
			}
			out := p.AppendTo(nil)
			ipLen := header.IPv4MinimumSize
			if c.ends[0].Addr().Is6() {
				ipLen = header.IPv6MinimumSize
			}
			th := header.TCP(out[ipLen:])
			if c.flags.Contains(header.TCPFlagSyn) {
				if got := mssOf(th); got != c.want && !(c.want == 0 && got == header.TCPDefaultMSS) {
					t.Errorf("MSS %d, want %d", got, c.want)
				}
			}
			proto, _ := classify(out)
			switch {
			case c.gso.NeedsCsum:
				if th.Checksum() != sumBefore {
					t.Errorf("a partial checksum changed: %#x, was %#x", th.Checksum(), sumBefore)
				}
			case !checksumsValid(out, proto):
				t.Errorf("the checksum no longer holds: %x", out)
			}
			if !c.changed && string(out) != string(b) {
				t.Errorf("the packet changed:\n%x\nwas\n%x", out, b)
			}
		})
	}
}
