package tcp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// fixSums recomputes pkt's IPv4 header checksum and TCP checksum after its
// bytes were edited.
func fixSums(pkt []byte) []byte {
	ipLen, total := header.IPv6MinimumSize, header.IPv6MinimumSize+int(binary.BigEndian.Uint16(pkt[4:6]))
	var sa, da tcpip.Address
	if pkt[0]>>4 == 4 {
		ipLen, total = int(pkt[0]&0xf)*4, int(binary.BigEndian.Uint16(pkt[2:4]))
		ip := header.IPv4(pkt)
		ip.SetChecksum(0)
		ip.SetChecksum(^checksum.Checksum(pkt[:ipLen], 0))
		sa, da = tcpip.AddrFrom4([4]byte(pkt[12:16])), tcpip.AddrFrom4([4]byte(pkt[16:20]))
	} else {
		sa, da = tcpip.AddrFrom16([16]byte(pkt[8:24])), tcpip.AddrFrom16([16]byte(pkt[24:40]))
	}
	tcp := header.TCP(pkt[ipLen:total])
	tcp.SetChecksum(0)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, sa, da, uint16(len(tcp)))
	tcp.SetChecksum(^checksum.Checksum(tcp, sum))
	return pkt
}

// moreFlow builds n in-order data segments of mss bytes of one connection
// of fam, with timestamps, each passed to edit (its index, the packet, where
// its TCP header starts) before its checksums are set.
func moreFlow(r *rand.Rand, fam int, n, mss int, edit func(i int, pkt []byte, at int) []byte) [][]byte {
	f := linkFamilies[fam]
	seq := uint32(1000)
	var out [][]byte
	for i := range n {
		s := segment{local: f.local, remote: f.remote, flags: header.TCPFlagAck, seq: seq, ack: 77, win: 500,
			opts: []byte{1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3}, payload: mss}
		p := dataSeg(r, s)
		at := header.IPv4MinimumSize
		if f.local.Addr().Is6() {
			at = header.IPv6MinimumSize
		}
		if edit != nil {
			p = edit(i, p, at)
		}
		_, payload := tcpOfRaw(p)
		seq += uint32(len(payload))
		out = append(out, fixSums(p))
	}
	return out
}

// tcpOfRaw returns pkt's TCP header and payload, without checks.
func tcpOfRaw(pkt []byte) (header.TCP, []byte) {
	ipLen, total := header.IPv6MinimumSize, header.IPv6MinimumSize+int(binary.BigEndian.Uint16(pkt[4:6]))
	if pkt[0]>>4 == 4 {
		ipLen, total = int(pkt[0]&0xf)*4, int(binary.BigEndian.Uint16(pkt[2:4]))
	}
	tcp := header.TCP(pkt[ipLen:total])
	return tcp, tcp[tcp.DataOffset():]
}

// TestCoalesceKeepsApart: a segment that differs from the one before it in
// anything Linux's GRO compares is not merged into it, and every header
// field gVisor reads of every segment reaches it unchanged.
func TestCoalesceKeepsApart(t *testing.T) {
	type edit func(pkt []byte, at int) []byte
	ipv4Only := func(f edit) edit {
		return func(pkt []byte, at int) []byte {
			if pkt[0]>>4 != 4 {
				return nil
			}
			return f(pkt, at)
		}
	}
	ipv6Only := func(f edit) edit {
		return func(pkt []byte, at int) []byte {
			if pkt[0]>>4 != 6 {
				return nil
			}
			return f(pkt, at)
		}
	}
	cases := []struct {
		name string
		e    edit
		want int // packets gVisor gets for six segments, the third edited
	}{
		{"TTL", ipv4Only(func(p []byte, _ int) []byte { p[8]--; return p }), 3},
		{"DSCP", ipv4Only(func(p []byte, _ int) []byte { p[1] = 0x28; return p }), 3},
		{"ECN CE", ipv4Only(func(p []byte, _ int) []byte { p[1] |= 3; return p }), 3},
		{"traffic class", ipv6Only(func(p []byte, _ int) []byte { p[1] |= 0x30; return p }), 3},
		{"flow label", ipv6Only(func(p []byte, _ int) []byte { p[3] ^= 1; return p }), 3},
		{"hop limit", ipv6Only(func(p []byte, _ int) []byte { p[7]--; return p }), 3},
		{"acknowledgement", func(p []byte, at int) []byte { p[at+11]++; return p }, 3},
		{"window", func(p []byte, at int) []byte { p[at+15]++; return p }, 3},
		{"timestamp value", func(p []byte, at int) []byte { p[at+27]++; return p }, 3},
		{"timestamp echo", func(p []byte, at int) []byte { p[at+31]++; return p }, 3},
		{"ECE", func(p []byte, at int) []byte { p[at+13] |= uint8(header.TCPFlagEce); return p }, 3},
		{"CWR", func(p []byte, at int) []byte { p[at+13] |= uint8(header.TCPFlagCwr); return p }, 3},
		{"URG", func(p []byte, at int) []byte { p[at+13] |= uint8(header.TCPFlagUrg); p[at+19] = 5; return p }, 3},
		{"AE", func(p []byte, at int) []byte { p[at+12] |= 1; return p }, 3},
		{"PSH", func(p []byte, at int) []byte { p[at+13] |= uint8(header.TCPFlagPsh); return p }, 2},
	}
	for fi, fam := range linkFamilies {
		for _, tc := range cases {
			r := rand.New(rand.NewPCG(11, 12))
			skip := false
			in := moreFlow(r, fi, 6, 1000, func(i int, p []byte, at int) []byte {
				if i != 2 {
					return p
				}
				q := tc.e(p, at)
				if q == nil {
					skip = true
					return p
				}
				return q
			})
			if skip {
				continue
			}
			t.Run(fam.name+"/"+tc.name, func(t *testing.T) {
				got := checkCoalesced(t, in, tc.want)
				checkHeaders(t, in, got)
			})
		}
	}
}

// checkHeaders checks that each byte of payload gVisor got came with the
// IP and TCP header fields (but lengths, checksums, sequence number and
// PSH/FIN) of the segment that carried it.
func checkHeaders(t *testing.T, in [][]byte, got []captured) {
	t.Helper()
	type key struct {
		port uint16
		seq  uint32
	}
	hdrOf := func(p []byte) []byte {
		h := bytes.Clone(p)
		tcp, _ := tcpOfRaw(h)
		ipLen := header.IPv6MinimumSize
		if h[0]>>4 == 4 {
			ipLen = int(h[0]&0xf) * 4
			clear(h[2:4])   // length
			clear(h[4:6])   // ID
			clear(h[10:12]) // checksum
		} else {
			clear(h[4:6]) // length
		}
		clear(tcp[4:8])   // sequence number
		clear(tcp[16:18]) // checksum
		tcp[13] &^= uint8(header.TCPFlagPsh | header.TCPFlagFin)
		return h[:ipLen+int(tcp.DataOffset())]
	}
	want := map[key][]byte{}
	for _, p := range in {
		tcp, payload := tcpOfRaw(p)
		for i := range max(len(payload), 1) {
			want[key{tcp.SourcePort(), tcp.SequenceNumber() + uint32(i)}] = hdrOf(p)
		}
	}
	for _, g := range got {
		tcp, payload := tcpOfRaw(g.b)
		h := hdrOf(g.b)
		for i := range max(len(payload), 1) {
			k := key{tcp.SourcePort(), tcp.SequenceNumber() + uint32(i)}
			if w, ok := want[k]; !ok {
				t.Fatalf("byte %d of a packet (seq %d) was not sent", i, tcp.SequenceNumber())
			} else if !bytes.Equal(w, h) {
				t.Fatalf("seq %d came with headers\n%x, sent with\n%x", k.seq, h, w)
			}
		}
	}
}

// FuzzCoalesce feeds InjectBatch batches of segments of two connections
// built from the input, then cut, bent and flipped: nothing may panic, and
// what gVisor gets must be IP packets no longer than 64 KiB.
func FuzzCoalesce(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{0xff, 0x10, 0x22, 0x33, 0x44, 0x55})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 2 {
			return
		}
		r := rand.New(rand.NewPCG(uint64(in[0]), uint64(len(in))))
		for fi := range linkFamilies {
			var batch [][]byte
			for i, b := range in[1:] {
				p := moreFlow(r, fi, 1, int(b)*7, nil)[0]
				tcp, _ := tcpOfRaw(p)
				tcp.SetSequenceNumber(uint32(1000 + i*int(b)))
				switch r.IntN(8) {
				case 0:
					p = p[:r.IntN(len(p)+1)]
				case 1:
					p[r.IntN(len(p))] ^= byte(1 << r.IntN(8))
				case 2:
					p[r.IntN(min(len(p), 60))] = byte(r.Uint32())
				}
				batch = append(batch, p)
			}
			e, c := coalesceLink()
			e.InjectBatch(batch)
			for _, g := range c.got {
				if len(g.b) > coalesceMax {
					t.Fatalf("a packet of %d bytes", len(g.b))
				}
			}
		}
	})
}

// TestDelayedAckDuplicateGoesAtOnce: an acknowledgement that repeats the
// one held back (a duplicate acknowledgement, as the stack sends for each
// segment past a hole when the peer has no SACK, or a window update) goes
// out at once, and so do the ones after it: a peer without SACK finds a
// lost segment by three duplicate acknowledgements, and held and replaced
// one by one it got a single acknowledgement, after the delay.
func TestDelayedAckDuplicateGoesAtOnce(t *testing.T) {
	ack := header.TCPFlagAck
	ts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}
	for _, fam := range linkFamilies {
		t.Run(fam.name, func(t *testing.T) {
			l := newAckLink(t, fam.local, fam.remote, time.Hour)
			l.out(t, ack, 101, ts, 0)
			l.expect(t, "the handshake's acknowledgement again", 101)
			l.out(t, ack, 1101, ts, 0)
			l.expect(t, "an acknowledgement of one segment")
			for i := range 3 {
				l.out(t, ack, 1101, ts, 0)
				l.expect(t, fmt.Sprintf("duplicate acknowledgement %d", i+1), 1101)
			}
			// A window update repeating a held acknowledgement goes too.
			l.out(t, ack, 2101, ts, 0)
			l.expect(t, "an acknowledgement of one more segment")
			l.outWin(t, ack, 2101, 2000)
			l.expect(t, "a window update", 2101)
		})
	}
}

// outWin hands the link a bare acknowledgement advertising window win.
func (l *ackLink) outWin(t *testing.T, flags header.TCPFlags, ack uint32, win uint16) {
	t.Helper()
	var got []byte
	outbound(t, l.e, &got, segment{local: l.local, remote: l.remote, flags: flags, seq: 1, ack: ack, win: win})
}

// TestRetransmittedSYNKeepsTracking: a copy of the handshake's SYN or
// SYN-ACK arriving once the connection is tracked (the peer retransmits it
// when the stack's acknowledgement of it was lost) leaves the connection
// followed: later acknowledgements still move its edge and its send queue
// (an orphan whose send queue seemed stuck was reset after CloseTimeout
// while its peer took its data). So does a SYN with another initial
// sequence number, which gVisor answers with a challenge ACK
// (TestSYNOverLiveConnectionKeepsItsWindow).
func TestRetransmittedSYNKeepsTracking(t *testing.T) {
	ack := header.TCPFlagAck
	for _, fam := range linkFamilies {
		for _, hs := range []struct {
			name  string
			flags header.TCPFlags
		}{{"SYN-ACK", header.TCPFlagSyn | ack}, {"SYN", header.TCPFlagSyn}} {
			t.Run(fam.name+"/"+hs.name, func(t *testing.T) {
				var got []byte
				e := newLinkEndpoint(WriterFunc(func(p Packet) bool { got = p.AppendTo(got[:0]); return true }), 1500, false, false, 0)
				seg := func(flags header.TCPFlags, seq, ack uint32, win uint16) segment {
					return segment{local: fam.local, remote: fam.remote, flags: flags, seq: seq, ack: ack, win: win}
				}
				in := func(s segment) {
					t.Helper()
					if n := e.InjectBatch([][]byte{s.bytes(), s.bytes()}); n != 2 {
						t.Fatal("the link refused a good segment")
					}
				}
				e.Attach(&capture{})
				syn := seg(hs.flags, 100, 0, 65535)
				if hs.flags&ack != 0 {
					syn.ack = 1 // the stack's initial sequence number was 0
				}
				syn.opts = []byte{1, 3, 3, 7}
				in(syn)
				pw := e.win.track(fam.local, fam.remote)
				if pw == nil {
					t.Fatal("not tracked")
				}
				in(seg(ack, 101, 1000, 10)) // edge 1000 + 10<<7
				in(syn)                     // a retransmission
				in(seg(ack, 101, 1500, 10))
				if e.win.lookup(keyOf(fam.local, fam.remote)) != pw {
					t.Fatal("a retransmitted handshake segment ended the tracking")
				}
				if s := seqOf(t, outbound(t, e, &got, seg(ack, 5000, 101, 1000))); s != 1500+10<<7 {
					t.Fatalf("a bare acknowledgement past the edge: seq %d, want %d", s, 1500+10<<7)
				}
				if hs.flags&ack != 0 {
					if q, ok := pw.unacked(1600); !ok || q != 101 {
						t.Fatalf("send queue %d (%v) of 1600 bytes sent, want 101", q, ok)
					}
				}
				other := syn
				other.seq = 7000
				in(other)
				if e.win.lookup(keyOf(fam.local, fam.remote)) != pw {
					t.Fatal("a SYN with another initial sequence number ended the tracking")
				}
			})
		}
	}
}
