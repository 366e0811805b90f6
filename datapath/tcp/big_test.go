package tcp

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// TestDeliverBigCutsAsSegmentation: a BIG TCP segment reaches gVisor as
// the segments Linux's segmentation would have cut from it: each one's
// sequence number advanced, PSH and FIN on the last alone, CWR on the
// first alone (tcp_gso_segment clears it on the others), and the payload
// whole and in order.
func TestDeliverBigCutsAsSegmentation(t *testing.T) {
	const payload = 3*bigPayload + 1000
	const seq = 0xfffff000 // wraps within the segment
	pkt := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize+payload)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{TTL: 64, Protocol: uint8(header.TCPProtocolNumber)})
	ip.SetTotalLength(0) // longer than the field holds
	tcp := header.TCP(pkt[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 80, SeqNum: seq, AckNum: 1,
		DataOffset: header.TCPMinimumSize, WindowSize: 1000,
		Flags: header.TCPFlagAck | header.TCPFlagCwr | header.TCPFlagPsh | header.TCPFlagFin})
	body := pkt[header.IPv4MinimumSize+header.TCPMinimumSize:]
	for i := range body {
		body[i] = byte(i % 251)
	}
	if !isBig(pkt, ipv4.ProtocolNumber) {
		t.Fatal("the test's segment is not a BIG TCP one")
	}
	c := &capture{}
	deliverBig(c, pkt, ipv4.ProtocolNumber)
	if len(c.got) != 4 {
		t.Fatalf("%d segments, want 4", len(c.got))
	}
	off := 0
	for i, g := range c.got {
		ip := header.IPv4(g.b)
		if int(ip.TotalLength()) != len(g.b) {
			t.Errorf("segment %d: IP length %d of %d bytes", i, ip.TotalLength(), len(g.b))
		}
		th := header.TCP(g.b[header.IPv4MinimumSize:])
		if got, want := th.SequenceNumber(), uint32(seq+off); got != want {
			t.Errorf("segment %d: seq %#x, want %#x", i, got, want)
		}
		last := i == len(c.got)-1
		f := th.Flags()
		if f.Contains(header.TCPFlagPsh) != last || f.Contains(header.TCPFlagFin) != last {
			t.Errorf("segment %d: flags %v: PSH and FIN belong to the last alone", i, f)
		}
		if f.Contains(header.TCPFlagCwr) != (i == 0) {
			t.Errorf("segment %d: flags %v: CWR belongs to the first alone", i, f)
		}
		if !f.Contains(header.TCPFlagAck) {
			t.Errorf("segment %d: flags %v: ACK lost", i, f)
		}
		data := th.Payload()
		for j, b := range data {
			if b != byte((off+j)%251) {
				t.Fatalf("segment %d: payload byte %d is %d", i, off+j, b)
			}
		}
		off += len(data)
	}
	if off != payload {
		t.Errorf("%d payload bytes delivered, want %d", off, payload)
	}
}
