package tcp

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestChecksumReplace32: the incremental update equals a full sum of the
// changed bytes, for random data and words (the edges included).
func TestChecksumReplace32(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	words := []uint32{0, 0xffffffff, 0xffff0000, 0x0000ffff, 1}
	for i := range 20000 {
		b := make([]byte, 4+r.IntN(60))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		at := r.IntN(len(b)/2-1) * 2
		if i < len(words)*len(words) {
			binary.BigEndian.PutUint32(b[at:], words[i/len(words)])
		}
		old := binary.BigEndian.Uint32(b[at:])
		sum := ^checksum.Checksum(b, 0)
		nw := r.Uint32()
		if i < len(words)*len(words) {
			nw = words[i%len(words)]
		}
		binary.BigEndian.PutUint32(b[at:], nw)
		want := ^checksum.Checksum(b, 0)
		got := checksumReplace32(sum, old, nw)
		// 0x0000 and 0xffff are the same sum in one's complement.
		if got != want && !(got|want == 0xffff && got&want == 0) {
			t.Fatalf("%x at %d: %#08x->%#08x: got %#04x, want %#04x", b, at, old, nw, got, want)
		}
	}
}

// linkFamilies are the ends of the link tests' connection, seen from the
// stack, in IPv4 and IPv6.
var linkFamilies = []struct {
	name          string
	local, remote netip.AddrPort
}{
	{"IPv4", netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:80")},
	{"IPv6", netip.MustParseAddrPort("[fd00::1]:5000"), netip.MustParseAddrPort("[fd00::2]:80")},
}

// segment is a TCP segment for the window tests, seen from the stack:
// inbound ones go from remote to local.
type segment struct {
	local, remote netip.AddrPort
	flags         header.TCPFlags
	seq, ack      uint32
	win           uint16
	opts          []byte
	payload       int
}

// bytes builds seg as an inbound IP packet with correct checksums.
func (seg segment) bytes() []byte {
	return buildSegment(seg.remote, seg.local, seg)
}

func buildSegment(src, dst netip.AddrPort, seg segment) []byte {
	tl := header.TCPMinimumSize + len(seg.opts)
	tcp := make([]byte, tl+seg.payload)
	header.TCP(tcp).Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seg.seq, AckNum: seg.ack,
		DataOffset: uint8(tl), Flags: seg.flags, WindowSize: seg.win})
	copy(tcp[header.TCPMinimumSize:], seg.opts)
	sa, da := tcpip.AddrFromSlice(src.Addr().AsSlice()), tcpip.AddrFromSlice(dst.Addr().AsSlice())
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, sa, da, uint16(len(tcp)))
	header.TCP(tcp).SetChecksum(^checksum.Checksum(tcp, sum))
	if src.Addr().Is4() {
		ip := make([]byte, header.IPv4MinimumSize)
		header.IPv4(ip).Encode(&header.IPv4Fields{TotalLength: uint16(len(ip) + len(tcp)), TTL: 64,
			Protocol: uint8(header.TCPProtocolNumber), SrcAddr: sa, DstAddr: da})
		header.IPv4(ip).SetChecksum(^header.IPv4(ip).CalculateChecksum())
		return append(ip, tcp...)
	}
	ip := make([]byte, header.IPv6MinimumSize)
	header.IPv6(ip).Encode(&header.IPv6Fields{PayloadLength: uint16(len(tcp)), TransportProtocol: header.TCPProtocolNumber,
		HopLimit: 64, SrcAddr: sa, DstAddr: da})
	return append(ip, tcp...)
}

// outbound hands seg, as the stack would send it, through the link's
// send path and returns what the Writer got.
func outbound(t *testing.T, e *LinkEndpoint, got *[]byte, seg segment) []byte {
	t.Helper()
	b := buildSegment(seg.local, seg.remote, seg)
	ipLen := header.IPv4MinimumSize
	proto := ipv4.ProtocolNumber
	if seg.local.Addr().Is6() {
		ipLen, proto = header.IPv6MinimumSize, ipv6.ProtocolNumber
	}
	tl := header.TCPMinimumSize + len(seg.opts)
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: ipLen + tl,
		Payload: buffer.MakeWithData(b[ipLen+tl:])})
	defer pb.DecRef()
	copy(pb.TransportHeader().Push(tl), b[ipLen:ipLen+tl])
	copy(pb.NetworkHeader().Push(ipLen), b[:ipLen])
	pb.NetworkProtocolNumber, pb.TransportProtocolNumber = proto, header.TCPProtocolNumber
	if err := e.writePacket(pb); err != nil {
		t.Fatal(err)
	}
	return *got
}

// seqOf returns the sequence number of an IP packet's TCP segment and
// whether its checksum holds.
func seqOf(t *testing.T, pkt []byte) uint32 {
	t.Helper()
	proto, ok := classify(pkt)
	if !ok || !checksumsValid(pkt, proto) {
		t.Fatalf("the link sent a bad packet: %x", pkt)
	}
	off := header.IPv6MinimumSize
	if proto == ipv4.ProtocolNumber {
		off = int(pkt[0]&0xf) * 4
	}
	return binary.BigEndian.Uint32(pkt[off+4:])
}

// TestBareAckInsidePeerWindow: a bare acknowledgement whose sequence
// number lies past the right edge of the window the peer last advertised
// leaves the link with that edge instead (its checksum updated); one
// within the window's rounding, a segment with data, one of an untracked
// connection and any after untracking leave as they came. The peer's
// scale comes from its SYN; a reordered older acknowledgement does not
// move the edge back; one acknowledging what was never sent (forged)
// sets no edge; a new connection of the same addresses and ports starts
// afresh.
func TestBareAckInsidePeerWindow(t *testing.T) {
	for _, fam := range linkFamilies {
		t.Run(fam.name, func(t *testing.T) {
			var got []byte
			e := newLinkEndpoint(WriterFunc(func(p Packet) bool { got = p.AppendTo(got[:0]); return true }), 1500, false, false, 0)
			seg := func(flags header.TCPFlags, seq, ack uint32, win uint16, payload int) segment {
				return segment{local: fam.local, remote: fam.remote, flags: flags, seq: seq, ack: ack, win: win, payload: payload}
			}
			in := func(s segment) {
				t.Helper()
				if _, ok := checkAndNote(e, s.bytes()); !ok {
					t.Fatal("the link refused a good segment")
				}
			}
			ack := header.TCPFlagAck
			// Not tracked yet: nothing changes.
			if s := seqOf(t, outbound(t, e, &got, seg(ack, 9000, 1, 100, 0))); s != 9000 {
				t.Fatalf("untracked: seq %d, want 9000", s)
			}
			if e.win.track(fam.local, fam.remote) != nil {
				t.Fatal("tracked a connection whose SYN the link never saw")
			}
			// The peer's SYN-ACK: window scale 7 (NOP, WS).
			synack := seg(header.TCPFlagSyn|ack, 100, 1, 65535, 0)
			synack.opts = []byte{1, 3, 3, 7}
			in(synack)
			pw := e.win.track(fam.local, fam.remote)
			if pw == nil {
				t.Fatal("the SYN-ACK's scale was not kept")
			}
			in(seg(ack, 101, 1000, 10, 0)) // edge 1000 + 10<<7 = 2280
			cases := []struct {
				what      string
				seq, want uint32
				payload   int
			}{
				{"past the edge", 5000, 2280, 0},
				{"within the scale's rounding", 2280 + 127, 2280 + 127, 0},
				{"at the edge", 2280, 2280, 0},
				{"with data", 5000, 5000, 100},
			}
			for _, c := range cases {
				if s := seqOf(t, outbound(t, e, &got, seg(ack, c.seq, 101, 1000, c.payload))); s != c.want {
					t.Fatalf("%s: seq %d, want %d", c.what, s, c.want)
				}
			}
			for _, f := range []header.TCPFlags{header.TCPFlagFin | ack, header.TCPFlagRst | ack} {
				if s := seqOf(t, outbound(t, e, &got, seg(f, 5000, 101, 1000, 0))); s != 5000 {
					t.Fatalf("flags %#x: seq %d, want 5000", f, s)
				}
			}
			// A keepalive or window probe (the peer's ack less one) is
			// neither lowered nor taken for a sign of forgery.
			if s := seqOf(t, outbound(t, e, &got, seg(ack, 999, 101, 1000, 0))); s != 999 {
				t.Fatalf("a probe: seq %d, want 999", s)
			}
			if s := seqOf(t, outbound(t, e, &got, seg(ack, 5000, 101, 1000, 0))); s != 2280 {
				t.Fatalf("after a probe: seq %d, want 2280", s)
			}
			in(seg(ack, 102, 6000, 0, 0)) // acks what was never sent
			if s := seqOf(t, outbound(t, e, &got, seg(ack, 5000, 101, 1000, 0))); s != 5000 {
				t.Fatalf("after a forged ack: seq %d, want 5000", s)
			}
			in(seg(ack, 103, 1000, 10, 0))
			in(seg(ack, 100, 900, 0, 0)) // older: ignored
			if s := seqOf(t, outbound(t, e, &got, seg(ack, 5000, 101, 1000, 0))); s != 2280 {
				t.Fatalf("after an older ack: seq %d, want 2280", s)
			}
			in(seg(ack, 101, 3000, 0, 0)) // a zero window at 3000
			if s := seqOf(t, outbound(t, e, &got, seg(ack, 5000, 101, 1000, 0))); s != 3000 {
				t.Fatalf("after a zero window: seq %d, want 3000", s)
			}
			if n := e.win.clamped.Load(); n != 4 {
				t.Fatalf("%d acknowledgements counted as lowered, want 4", n)
			}
			// A later connection of the same addresses and ports starts
			// afresh, and the first one's end leaves it tracked.
			in(synack)
			pw2 := e.win.track(fam.local, fam.remote)
			if s := seqOf(t, outbound(t, e, &got, seg(ack, 5000, 101, 1000, 0))); s != 5000 {
				t.Fatalf("a new connection: seq %d, want 5000 (no window seen yet)", s)
			}
			e.win.untrack(fam.local, fam.remote, pw, e.send)
			in(seg(ack, 101, 1000, 10, 0))
			if s := seqOf(t, outbound(t, e, &got, seg(ack, 5000, 101, 1000, 0))); s != 2280 {
				t.Fatalf("the new connection after the old one's end: seq %d, want 2280", s)
			}
			e.win.untrack(fam.local, fam.remote, pw2, e.send)
			if s := seqOf(t, outbound(t, e, &got, seg(ack, 5000, 101, 1000, 0))); s != 5000 {
				t.Fatalf("untracked again: seq %d, want 5000", s)
			}
		})
	}
}

// TestSYNScale: the scale kept from a SYN is its option's, at most 14,
// or 0 without one; a malformed option list stops the search.
func TestSYNScale(t *testing.T) {
	local, remote := netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("10.0.0.2:4000")
	for _, c := range []struct {
		opts []byte
		want uint8
	}{
		{nil, 0},
		{[]byte{3, 3, 9, 0}, 9},
		{[]byte{2, 4, 5, 180, 1, 3, 3, 15}, 14},
		{[]byte{1, 1, 1, 0, 3, 3, 5, 0}, 0},  // after the end of the list
		{[]byte{8, 0, 3, 3, 5, 0, 0, 0}, 0},  // a zero length
		{[]byte{1, 1, 8, 10, 3, 3, 5, 0}, 0}, // a length past the options
	} {
		e := newLinkEndpoint(WriterFunc(func(Packet) bool { return true }), 1500, false, false, 0)
		syn := segment{local: local, remote: remote, flags: header.TCPFlagSyn, seq: 1, win: 100, opts: c.opts}
		if _, ok := checkAndNote(e, syn.bytes()); !ok {
			t.Fatalf("%x: refused", c.opts)
		}
		pw := e.win.track(local, remote)
		if pw == nil {
			t.Fatalf("%x: not tracked", c.opts)
		}
		if s := pw.scale; s != c.want {
			t.Fatalf("%x: scale %d, want %d", c.opts, s, c.want)
		}
	}
}

// checkAndNote passes pkt through the link's inbound check and, if it
// passes, notes its window as delivering it to gVisor would.
func checkAndNote(e *LinkEndpoint, pkt []byte) (tcpip.NetworkProtocolNumber, bool) {
	proto, ok := e.check(pkt)
	if ok {
		e.win.inbound(pkt)
	}
	return proto, ok
}

// TestUnackedIgnoresForgedAck: an acknowledgement of more than the stack
// sent (and its FIN) is a forged segment's, noted before gVisor refused
// it: unacked reports it as not known rather than as everything taken, or
// a peer forging it could make an orphan's sweep give back its accounting
// while gVisor still holds its data.
func TestUnackedIgnoresForgedAck(t *testing.T) {
	const iss = 1000
	pw := &peerWindow{hasISS: true, iss: iss, known: true}
	for _, c := range []struct {
		ack   uint32
		sent  uint64
		want  int
		known bool
	}{
		{iss + 1, 500, 500, true},           // nothing acknowledged
		{iss + 1 + 200, 500, 300, true},     // some
		{iss + 1 + 500, 500, 0, true},       // all
		{iss + 1 + 501, 500, 0, true},       // all and the FIN
		{iss + 1 + 502, 500, 0, false},      // past the FIN: forged
		{iss + 1 + 1<<20, 500, 0, false},    // far past
		{iss + 1 + 1<<31, 1 << 31, 0, true}, // all of 2 GiB
	} {
		pw.ack = c.ack
		if q, known := pw.unacked(c.sent); q != c.want || known != c.known {
			t.Errorf("ack %d after sending %d: unacked %d, %v; want %d, %v", c.ack-iss-1, c.sent, q, known, c.want, c.known)
		}
	}
}

// TestSYNOverLiveConnectionKeepsItsWindow: a SYN of a tracked
// connection's addresses and ports with another initial sequence number
// (spoofed, or a peer that lost the connection) leaves the connection's
// entry: gVisor answers it with a challenge ACK and keeps the connection
// (RFC 5961), which must stay followed (its bare ACKs clamped, its
// acknowledgements noted). A connection that does start anew over the
// addresses replaces the entry when it is tracked.
func TestSYNOverLiveConnectionKeepsItsWindow(t *testing.T) {
	local, remote := netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("10.0.0.2:4000")
	e := newLinkEndpoint(WriterFunc(func(Packet) bool { return true }), 1500, false, false, 0)
	syn := segment{local: local, remote: remote, flags: header.TCPFlagSyn, seq: 1, win: 100}
	if _, ok := checkAndNote(e, syn.bytes()); !ok {
		t.Fatal("SYN refused")
	}
	pw := e.win.track(local, remote)
	if pw == nil {
		t.Fatal("not tracked")
	}
	ack := segment{local: local, remote: remote, flags: header.TCPFlagAck, seq: 2, ack: 1000, win: 100}
	checkAndNote(e, ack.bytes())
	other := segment{local: local, remote: remote, flags: header.TCPFlagSyn, seq: 777777, win: 100}
	if _, ok := checkAndNote(e, other.bytes()); !ok {
		t.Fatal("second SYN refused by the link")
	}
	if got := e.win.lookup(keyOf(local, remote)); got != pw {
		t.Fatalf("the live connection's entry after a SYN with another ISN: %p, want %p", got, pw)
	}
	ack.ack = 1500
	checkAndNote(e, ack.bytes())
	pw.mu.Lock()
	got := pw.ack
	pw.mu.Unlock()
	if got != 1500 {
		t.Errorf("the connection's latest acknowledgement %d, want 1500: no longer followed", got)
	}
	// A new connection of the same addresses, tracked, takes the place.
	if nw := e.win.track(local, remote); nw == nil || nw == pw || e.win.lookup(keyOf(local, remote)) != nw {
		t.Errorf("a new connection over the addresses: %p, want a new entry in place of %p", nw, pw)
	}
}
