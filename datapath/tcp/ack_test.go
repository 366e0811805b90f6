package tcp

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// ackLink is a link with delayed acknowledgements whose Writer records
// what it is given, tracking one connection from local to remote.
type ackLink struct {
	e             *LinkEndpoint
	local, remote netip.AddrPort
	pw            *peerWindow

	mu   sync.Mutex
	sent [][]byte
}

func newAckLink(t *testing.T, local, remote netip.AddrPort, delay time.Duration) *ackLink {
	t.Helper()
	l := &ackLink{local: local, remote: remote}
	l.e = newLinkEndpoint(WriterFunc(func(p Packet) bool {
		l.mu.Lock()
		l.sent = append(l.sent, p.AppendTo(nil))
		l.mu.Unlock()
		return true
	}), 1500, false, false, delay)
	synack := segment{local: local, remote: remote, flags: header.TCPFlagSyn | header.TCPFlagAck, seq: 100, ack: 1, win: 65535, opts: []byte{1, 3, 3, 7}}
	if _, ok := checkAndNote(l.e, synack.bytes()); !ok {
		t.Fatal("the link refused a good SYN-ACK")
	}
	if l.pw = l.e.win.track(local, remote); l.pw == nil {
		t.Fatal("not tracked")
	}
	return l
}

// out hands the stack's segment (seq 1, the given flags, acknowledgement,
// options and payload) to the link's send path.
func (l *ackLink) out(t *testing.T, flags header.TCPFlags, ack uint32, opts []byte, payload int) {
	t.Helper()
	var got []byte
	outbound(t, l.e, &got, segment{local: l.local, remote: l.remote, flags: flags, seq: 1, ack: ack, win: 1000, opts: opts, payload: payload})
}

// acks returns the acknowledgement numbers and payload sizes of what the
// Writer got since the last call.
func (l *ackLink) acks(t *testing.T) (acks []uint32, payloads []int) {
	t.Helper()
	l.mu.Lock()
	sent := l.sent
	l.sent = nil
	l.mu.Unlock()
	for _, p := range sent {
		seqOf(t, p) // checksums
		off := header.IPv6MinimumSize
		if proto, _ := classify(p); proto == ipv4.ProtocolNumber {
			off = int(p[0]&0xf) * 4
		}
		acks = append(acks, binary.BigEndian.Uint32(p[off+8:]))
		payloads = append(payloads, len(p)-off-int(p[off+12]>>4)*4)
	}
	return acks, payloads
}

func (l *ackLink) expect(t *testing.T, what string, want ...uint32) {
	t.Helper()
	got, _ := l.acks(t)
	if len(got) != len(want) {
		t.Fatalf("%s: the link sent acknowledgements %v, want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: the link sent acknowledgements %v, want %v", what, got, want)
		}
	}
}

// TestDelayedAck: a bare acknowledgement of at most one segment of new
// data (the first after the handshake too) is held back; the
// connection's next segment acknowledging as much replaces it, one
// acknowledging less (sent out of order) goes after it, an RST drops it,
// the end of tracking sends it. Everything else goes at once: one that
// acknowledges nothing new (a window update), one of more than a
// segment, one with a SACK block, an older one, FIN and data segments,
// and any of a connection the link does not track or of a link without
// delay.
func TestDelayedAck(t *testing.T) {
	ack, psh, fin, rst := header.TCPFlagAck, header.TCPFlagPsh, header.TCPFlagFin, header.TCPFlagRst
	ts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP timestamps
	sack := []byte{1, 1, 5, 10, 0, 0, 3, 0, 0, 0, 4, 0}
	for _, fam := range linkFamilies {
		t.Run(fam.name, func(t *testing.T) {
			// The first acknowledgement after the handshake, of the
			// peer's first 64 bytes (its SYN took sequence number 100):
			// held, as the handshake acknowledged the SYN.
			first := newAckLink(t, fam.local, fam.remote, time.Hour)
			first.out(t, ack, 165, ts, 0)
			first.expect(t, "the first request's acknowledgement")
			first.out(t, ack|psh, 165, ts, 64)
			first.expect(t, "the first response", 165)

			l := newAckLink(t, fam.local, fam.remote, time.Hour)
			l.out(t, ack, 101, ts, 0)
			l.expect(t, "an acknowledgement of nothing new", 101)

			// Request/response: the request's acknowledgement waits and
			// the response carries it.
			l.out(t, ack, 165, ts, 0)
			l.expect(t, "a 64-byte request's acknowledgement")
			l.out(t, ack|psh, 165, ts, 64)
			l.expect(t, "the response", 165)
			if c := l.e.win.coalesced.Load(); c != 1 {
				t.Fatalf("%d acknowledgements counted as coalesced, want 1", c)
			}

			// Two bare acknowledgements in a row: the later one replaces
			// the first, until one acknowledges more than a segment.
			mss := uint32(1460)
			if fam.local.Addr().Is6() {
				mss = 1440
			}
			l.out(t, ack, 665, ts, 0)
			l.out(t, ack, 165+mss, ts, 0)
			l.expect(t, "two acknowledgements of one segment's worth")
			base := 165 + mss + 1
			l.out(t, ack, base, ts, 0)
			l.expect(t, "an acknowledgement of more than a segment", base)

			// Never held.
			l.out(t, ack, base+mss+1, ts, 0)
			l.expect(t, "more than one segment", base+mss+1)
			base += mss + 1
			l.out(t, ack, base, ts, 0)
			l.expect(t, "nothing new (a window update)", base)
			l.out(t, ack, base+10, sack, 0)
			l.expect(t, "a SACK block", base+10)
			l.out(t, ack, base+5, ts, 0)
			l.expect(t, "an older acknowledgement", base+5)
			l.out(t, fin|ack, base+20, ts, 0)
			l.expect(t, "a FIN", base+20)

			// A held acknowledgement and a segment acknowledging less
			// (built before it): both go, in the order they came.
			l.out(t, ack, base+30, ts, 0)
			l.out(t, ack|psh, base+25, ts, 10)
			l.expect(t, "a segment acknowledging less than the one held", base+30, base+25)

			// An RST drops what is held.
			l.out(t, ack, base+40, ts, 0)
			l.out(t, rst, 0, nil, 0)
			l.expect(t, "an RST", 0)

			// The end of tracking sends what is held; after it nothing
			// is held.
			l.out(t, ack, base+50, ts, 0)
			l.expect(t, "before untracking")
			l.e.win.untrack(l.local, l.remote, l.pw, l.e.send)
			l.expect(t, "untracking", base+50)
			l.out(t, ack, base+60, ts, 0)
			l.expect(t, "untracked", base+60)
			if c := l.e.win.coalesced.Load(); c != 4 {
				t.Fatalf("%d acknowledgements counted as coalesced, want 4", c)
			}
			if d := l.e.win.delayed.Load(); d != 0 {
				t.Fatalf("%d acknowledgements counted as sent at their deadline, want 0", d)
			}

			// A link without delay holds nothing.
			l0 := newAckLink(t, fam.local, fam.remote, 0)
			l0.out(t, ack, 101, ts, 0)
			l0.out(t, ack, 165, ts, 0)
			l0.expect(t, "no delay", 101, 165)
		})
	}
}

// TestDelayedAckDeadline: an acknowledgement that no segment replaces
// goes out at the delay's end, once.
func TestDelayedAckDeadline(t *testing.T) {
	const delay = 20 * time.Millisecond
	l := newAckLink(t, netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("10.0.0.2:4000"), delay)
	l.out(t, header.TCPFlagAck, 101, nil, 0)
	l.expect(t, "the first acknowledgement", 101)
	start := time.Now()
	l.out(t, header.TCPFlagAck, 165, nil, 0)
	for l.e.win.delayed.Load() == 0 {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the held acknowledgement was never sent")
		}
		time.Sleep(time.Millisecond)
	}
	if el := time.Since(start); el < delay {
		t.Fatalf("sent after %v, before the delay of %v", el, delay)
	}
	l.expect(t, "at the deadline", 165)
	time.Sleep(3 * delay)
	l.expect(t, "after the deadline")
	if d := l.e.win.delayed.Load(); d != 1 {
		t.Fatalf("%d acknowledgements counted as sent at their deadline, want 1", d)
	}
}
