package tcp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// captured is one packet InjectBatch handed to gVisor.
type captured struct {
	proto     tcpip.NetworkProtocolNumber
	b         []byte
	validated bool
}

// capture is a NetworkDispatcher that keeps what it is given.
type capture struct{ got []captured }

func (c *capture) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	c.got = append(c.got, captured{proto, pkt.Data().AsRange().ToSlice(), pkt.RXChecksumValidated})
}

func (*capture) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// coalesceLink is a link endpoint whose inbound packets land in a capture.
func coalesceLink() (*LinkEndpoint, *capture) {
	e := newLinkEndpoint(WriterFunc(func(Packet) bool { return true }), 1500, true, false, 0)
	c := &capture{}
	e.Attach(c)
	return e, c
}

// dataSeg builds seg (inbound) with random payload bytes and correct
// checksums.
func dataSeg(r *rand.Rand, seg segment) []byte {
	b := seg.bytes()
	ipLen := header.IPv4MinimumSize
	if seg.local.Addr().Is6() {
		ipLen = header.IPv6MinimumSize
	}
	tcp := header.TCP(b[ipLen:])
	for i := int(tcp.DataOffset()); i < len(tcp); i++ {
		tcp[i] = byte(r.Uint32())
	}
	tcp.SetChecksum(0)
	sa, da := tcpip.AddrFromSlice(seg.remote.Addr().AsSlice()), tcpip.AddrFromSlice(seg.local.Addr().AsSlice())
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, sa, da, uint16(len(tcp)))
	tcp.SetChecksum(^checksum.Checksum(tcp, sum))
	return b
}

// tcpOf returns pkt's TCP header and payload.
func tcpOf(t *testing.T, pkt []byte) (header.TCP, []byte) {
	t.Helper()
	ipLen, total := header.IPv6MinimumSize, 0
	if pkt[0]>>4 == 4 {
		ipLen = int(pkt[0]&0xf) * 4
		total = int(binary.BigEndian.Uint16(pkt[2:4]))
		if checksum.Checksum(pkt[:ipLen], 0) != 0xffff {
			t.Fatalf("IPv4 header checksum wrong in %x", pkt[:ipLen])
		}
	} else {
		total = header.IPv6MinimumSize + int(binary.BigEndian.Uint16(pkt[4:6]))
	}
	if total != len(pkt) {
		t.Fatalf("IP length %d, packet %d bytes", total, len(pkt))
	}
	tcp := header.TCP(pkt[ipLen:])
	return tcp, pkt[ipLen+int(tcp.DataOffset()):]
}

// byteAt is one byte of a connection's stream with the header fields of the
// segment that carried it.
type byteAt struct {
	port     uint16
	seq      uint32
	b        byte
	ack      uint32
	win      uint16
	ctlFlags header.TCPFlags // the flags but PSH and FIN
}

// stream flattens packets into their bytes, connection by connection (by
// source port), in the order given; a segment without payload counts as a
// zero byte at its sequence number, so that its place is checked too.
func stream(t *testing.T, pkts [][]byte) map[uint16][]byteAt {
	t.Helper()
	m := map[uint16][]byteAt{}
	for _, p := range pkts {
		tcp, payload := tcpOf(t, p)
		base := byteAt{port: tcp.SourcePort(), seq: tcp.SequenceNumber(), ack: tcp.AckNumber(), win: tcp.WindowSize(),
			ctlFlags: tcp.Flags() &^ (header.TCPFlagPsh | header.TCPFlagFin)}
		if len(payload) == 0 {
			m[base.port] = append(m[base.port], base)
		}
		for i, b := range payload {
			x := base
			x.seq += uint32(i)
			x.b = b
			m[base.port] = append(m[base.port], x)
		}
	}
	return m
}

// checkCoalesced injects in as one batch and checks that gVisor gets every
// connection's bytes, acknowledgements, windows and flags in order, in want
// packets (want < 0: any number), each with consistent headers; it returns
// what gVisor got.
func checkCoalesced(t *testing.T, in [][]byte, want int) []captured {
	t.Helper()
	e, c := coalesceLink()
	if n := e.InjectBatch(in); n != len(in) {
		t.Fatalf("InjectBatch accepted %d of %d", n, len(in))
	}
	if want >= 0 && len(c.got) != want {
		t.Errorf("gVisor got %d packets, want %d", len(c.got), want)
	}
	var out [][]byte
	var finIn, finOut, pshIn, pshOut int
	for _, g := range c.got {
		if !g.validated {
			t.Errorf("a packet reached gVisor without RXChecksumValidated")
		}
		out = append(out, g.b)
		tcp, _ := tcpOf(t, g.b)
		finOut += int(tcp.Flags() & header.TCPFlagFin)
		pshOut += int(tcp.Flags()&header.TCPFlagPsh) / int(header.TCPFlagPsh)
	}
	for _, p := range in {
		tcp, _ := tcpOf(t, p)
		finIn += int(tcp.Flags() & header.TCPFlagFin)
		pshIn += int(tcp.Flags()&header.TCPFlagPsh) / int(header.TCPFlagPsh)
	}
	if finIn != finOut {
		t.Errorf("%d FINs in, %d out", finIn, finOut)
	}
	if pshOut > pshIn || (pshIn > 0 && pshOut == 0) {
		t.Errorf("%d PSH in, %d out", pshIn, pshOut)
	}
	gotS, wantS := stream(t, out), stream(t, in)
	if len(gotS) != len(wantS) {
		t.Fatalf("%d connections out, %d in", len(gotS), len(wantS))
	}
	for port, w := range wantS {
		g := gotS[port]
		if len(g) != len(w) {
			t.Fatalf("port %d: %d bytes out, %d in", port, len(g), len(w))
		}
		for i := range w {
			if g[i] != w[i] {
				t.Fatalf("port %d: byte %d is %+v out, %+v in", port, i, g[i], w[i])
			}
		}
	}
	return c.got
}

// TestCoalesce: InjectBatch's runs, case by case, for both families.
func TestCoalesce(t *testing.T) {
	ts := func(v uint32) []byte { // NOP, NOP, timestamps
		o := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(o[4:], v)
		return o
	}
	const mss = 1448
	for _, fam := range linkFamilies {
		r := rand.New(rand.NewPCG(3, 4))
		flow := func(port uint16) func(n int, edit func(i int, s *segment)) [][]byte {
			seq := uint32(1000)
			return func(n int, edit func(i int, s *segment)) [][]byte {
				var out [][]byte
				for i := range n {
					s := segment{local: fam.local, remote: netip.AddrPortFrom(fam.remote.Addr(), port),
						flags: header.TCPFlagAck, seq: seq, ack: 77, win: 500, opts: ts(9), payload: mss}
					if edit != nil {
						edit(i, &s)
					}
					seq += uint32(s.payload)
					out = append(out, dataSeg(r, s))
				}
				return out
			}
		}
		cases := []struct {
			name string
			in   func() [][]byte
			want int
		}{
			{"in order", func() [][]byte { return flow(1)(10, nil) }, 1},
			{"PSH ends a run", func() [][]byte {
				return flow(1)(10, func(i int, s *segment) {
					if i == 3 {
						s.flags |= header.TCPFlagPsh
					}
				})
			}, 2},
			{"a short segment ends a run", func() [][]byte {
				return flow(1)(10, func(i int, s *segment) {
					if i == 4 {
						s.payload = 100
					}
				})
			}, 2},
			{"a longer segment starts one", func() [][]byte {
				return flow(1)(4, func(i int, s *segment) {
					if i == 0 {
						s.payload = 500
					}
				})
			}, 2},
			{"a gap", func() [][]byte {
				return flow(1)(6, func(i int, s *segment) {
					if i >= 3 {
						s.seq += mss
					}
				})
			}, 2},
			{"a new acknowledgement", func() [][]byte {
				return flow(1)(6, func(i int, s *segment) {
					if i >= 2 {
						s.ack = 99
					}
				})
			}, 2},
			{"a new window", func() [][]byte {
				return flow(1)(6, func(i int, s *segment) {
					if i >= 2 {
						s.win = 501
					}
				})
			}, 2},
			{"a new timestamp", func() [][]byte {
				return flow(1)(6, func(i int, s *segment) {
					if i >= 5 {
						s.opts = ts(10)
					}
				})
			}, 2},
			{"a bare acknowledgement between", func() [][]byte {
				return flow(1)(7, func(i int, s *segment) {
					if i == 3 {
						s.payload = 0
					}
				})
			}, 3},
			{"FIN with data ends a run", func() [][]byte {
				return flow(1)(5, func(i int, s *segment) {
					if i == 4 {
						s.flags |= header.TCPFlagFin | header.TCPFlagPsh
						s.payload = 10
					}
				})
			}, 1},
			{"RST alone", func() [][]byte {
				return flow(1)(5, func(i int, s *segment) {
					if i == 2 {
						s.flags = header.TCPFlagRst | header.TCPFlagAck
						s.payload = 0
					}
				})
			}, 3},
			{"CWR alone", func() [][]byte {
				return flow(1)(5, func(i int, s *segment) {
					if i == 2 {
						s.flags |= header.TCPFlagCwr
					}
				})
			}, 3},
			{"64 KiB at most", func() [][]byte { return flow(1)(100, nil) }, 3},
			{"two connections interleaved", func() [][]byte {
				a, b := flow(1)(8, nil), flow(2)(8, nil)
				var out [][]byte
				for i := range a {
					out = append(out, a[i], b[i])
				}
				return out
			}, 2},
			{"more connections than runs", func() [][]byte {
				var fs [][][]byte
				for p := range coalesceRuns + 2 {
					fs = append(fs, flow(uint16(10+p))(3, nil))
				}
				var out [][]byte
				for i := range 3 {
					for _, f := range fs {
						out = append(out, f[i])
					}
				}
				return out
			}, -1},
		}
		for _, tc := range cases {
			t.Run(fam.name+"/"+tc.name, func(t *testing.T) {
				got := checkCoalesced(t, tc.in(), tc.want)
				for _, g := range got {
					if len(g.b) > coalesceMax {
						t.Errorf("a packet of %d bytes", len(g.b))
					}
				}
			})
		}
	}
}

// TestCoalesceRandom: batches of random segments of a few connections
// (random lengths, gaps, flags, acknowledgements, repeats) reach gVisor
// with every connection's bytes in order and consistent headers.
func TestCoalesceRandom(t *testing.T) {
	for _, fam := range linkFamilies {
		r := rand.New(rand.NewPCG(5, 6))
		for round := range 300 {
			seqs := map[uint16]uint32{}
			var in [][]byte
			for range 1 + r.IntN(64) {
				port := uint16(1 + r.IntN(3))
				if _, ok := seqs[port]; !ok {
					seqs[port] = r.Uint32()
				}
				s := segment{local: fam.local, remote: netip.AddrPortFrom(fam.remote.Addr(), port),
					flags: header.TCPFlagAck, seq: seqs[port], ack: 5, win: 100, payload: 1000}
				switch r.IntN(12) {
				case 0:
					s.payload = r.IntN(1000)
				case 1:
					s.flags |= header.TCPFlagPsh
				case 2:
					s.seq += uint32(r.IntN(3000)) - 1000 // a gap or a repeat
				case 3:
					s.ack++
				case 4:
					s.flags |= header.TCPFlagFin
				case 5:
					s.payload = 1200
				}
				seqs[port] = s.seq + uint32(s.payload)
				in = append(in, dataSeg(r, s))
			}
			t.Run(fmt.Sprintf("%s/%d", fam.name, round), func(t *testing.T) { checkCoalesced(t, in, -1) })
		}
	}
}

// TestCoalesceRefused: packets check refuses are counted and leave the
// others' runs whole; a packet too short for its ports reaches gVisor alone
// (to be dropped there), before the rest.
func TestCoalesceRefused(t *testing.T) {
	fam := linkFamilies[0]
	r := rand.New(rand.NewPCG(7, 8))
	var in [][]byte
	for i := range 6 {
		in = append(in, dataSeg(r, segment{local: fam.local, remote: fam.remote, flags: header.TCPFlagAck,
			seq: uint32(i * 100), payload: 100}))
	}
	udp := bytes.Clone(in[0])
	udp[9] = uint8(header.UDPProtocolNumber)
	short := bytes.Clone(in[0][:header.IPv4MinimumSize])
	binary.BigEndian.PutUint16(short[2:4], header.IPv4MinimumSize)
	short[0] = 0x4f // a 60-byte header in a 20-byte packet
	batch := [][]byte{in[0], in[1], udp, in[2], short, in[3], in[4], in[5]}
	e, c := coalesceLink()
	if n := e.InjectBatch(batch); n != 7 {
		t.Fatalf("InjectBatch accepted %d, want 7", n)
	}
	if len(c.got) != 2 || len(c.got[0].b) != header.IPv4MinimumSize {
		t.Fatalf("gVisor got %d packets (the first %d bytes), want the short one, then one run", len(c.got), len(c.got[0].b))
	}
	if _, payload := tcpOf(t, c.got[1].b); len(payload) != 600 {
		t.Errorf("the run carries %d bytes, want 600", len(payload))
	}
	if d := e.rxDropped.Load(); d != 1 {
		t.Errorf("rxDropped %d, want 1", d)
	}
}

// TestCoalesceNotesWindow: the peer's window is noted from what InjectBatch
// hands gVisor, coalesced or not: the newest acknowledgement's right edge.
func TestCoalesceNotesWindow(t *testing.T) {
	for _, fam := range linkFamilies {
		e, _ := coalesceLink()
		syn := segment{local: fam.local, remote: fam.remote, flags: header.TCPFlagSyn, seq: 1, win: 100,
			opts: []byte{3, 3, 2, 0}} // window scale 2
		if n := e.InjectBatch([][]byte{syn.bytes()}); n != 1 {
			t.Fatalf("%s: SYN refused", fam.name)
		}
		pw := e.win.track(fam.local, fam.remote)
		if pw == nil {
			t.Fatalf("%s: not tracked", fam.name)
		}
		r := rand.New(rand.NewPCG(9, 10))
		var batch [][]byte
		for i := range 4 { // one run: acknowledgement 500, window 1000
			batch = append(batch, dataSeg(r, segment{local: fam.local, remote: fam.remote, flags: header.TCPFlagAck,
				seq: 2 + uint32(i)*100, ack: 500, win: 1000, payload: 100}))
		}
		if n := e.InjectBatch(batch); n != 4 {
			t.Fatalf("%s: InjectBatch accepted %d of 4", fam.name, n)
		}
		if pw.edge != 500+1000<<2 {
			t.Errorf("%s: edge %d after a run, want %d", fam.name, pw.edge, 500+1000<<2)
		}
		bare := segment{local: fam.local, remote: fam.remote, flags: header.TCPFlagAck, seq: 402, ack: 900, win: 10}
		if n := e.InjectBatch([][]byte{bare.bytes(), bare.bytes()}); n != 2 {
			t.Fatalf("%s: InjectBatch accepted %d of 2", fam.name, n)
		}
		if pw.edge != 900+10<<2 {
			t.Errorf("%s: edge %d after bare acknowledgements, want %d", fam.name, pw.edge, 900+10<<2)
		}
	}
}
