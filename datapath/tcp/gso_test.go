package tcp

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestVirtioNetHdr checks the header a packet gets for the packet socket
// (linux/virtio_net.h: flags, gso_type, hdr_len, gso_size, csum_start,
// csum_offset, in the host's byte order) and the slices it hands out.
func TestVirtioNetHdr(t *testing.T) {
	type want struct {
		flags, gsoType                         uint8
		hdrLen, gsoSize, csumStart, csumOffset uint16
	}
	for _, c := range []struct {
		name    string
		proto   uint16
		l3, l4  int
		payload int
		gso     stack.GSO
		want    want
	}{
		{"v4 larger than a segment", uint16(ipv4.ProtocolNumber), 20, 32, 10000,
			stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: 1448, L3HdrLen: 20},
			want{1, 1, 14 + 20 + 32, 1448, 14 + 20, 16}},
		{"v6 larger than a segment", uint16(ipv6.ProtocolNumber), 40, 32, 3000,
			stack.GSO{Type: stack.GSOTCPv6, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: 1428, L3HdrLen: 40},
			want{1, 4, 14 + 40 + 32, 1428, 14 + 40, 16}},
		{"one segment: checksum only", uint16(ipv4.ProtocolNumber), 20, 32, 1448,
			stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: 1448, L3HdrLen: 20},
			want{1, 0, 0, 0, 14 + 20, 16}},
		{"complete packet", uint16(ipv4.ProtocolNumber), 20, 20, 0, stack.GSO{}, want{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			pay := make([]byte, c.payload)
			for i := range pay {
				pay[i] = byte(i)
			}
			pb := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: c.l3 + c.l4, Payload: buffer.MakeWithData(pay)})
			defer pb.DecRef()
			l4 := pb.TransportHeader().Push(c.l4)
			l3 := pb.NetworkHeader().Push(c.l3)
			for i := range l4 {
				l4[i] = 0xa0
			}
			for i := range l3 {
				l3[i] = 0xb0
			}
			pb.GSOOptions = c.gso
			p := Packet{pb: pb, proto: tcpip.NetworkProtocolNumber(c.proto)}
			var h [VirtioNetHdrLen]byte
			h[0] = 0xff // overwritten
			p.VirtioNetHdr(&h, 14)
			ne := binary.NativeEndian
			got := want{h[0], h[1], ne.Uint16(h[2:]), ne.Uint16(h[4:]), ne.Uint16(h[6:]), ne.Uint16(h[8:])}
			if got != c.want {
				t.Fatalf("header %+v, want %+v", got, c.want)
			}
			var all []byte
			for _, s := range p.AppendSlices(nil) {
				all = append(all, s...)
			}
			if len(all) != c.l3+c.l4+c.payload || all[0] != 0xb0 || all[c.l3] != 0xa0 {
				t.Fatalf("slices: %d bytes, want %d, headers first", len(all), c.l3+c.l4+c.payload)
			}
			for i, b := range all[c.l3+c.l4:] {
				if b != byte(i) {
					t.Fatalf("payload byte %d is %d", i, b)
				}
			}
		})
	}
}
