package daemon

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// fragPiece is one fragment of a fuzzed datagram: bytes [off, end) of the
// UDP datagram, with or without "more fragments".
type fragPiece struct {
	off, end int
	mf       bool
}

// fragPlan is a fuzzed fragment set: the UDP datagram's length (header
// included) and the fragments to send, in order.
type fragPlan struct {
	v6     bool
	length int
	pieces []fragPiece
}

// Bounds of a plan: fragments fit the rig's 1,500-byte MTU with either
// family's headers.
const (
	fragMaxPiece  = 1440
	fragMaxPieces = 24
)

// decodeFragPlan makes a plan of ops: a family, a length, a clean split
// into fragments of at most fragMaxPiece bytes at multiples of 8, then
// mutations (reorder, duplicate, drop, overlap the previous or the next
// fragment, flip "more fragments").
func decodeFragPlan(ops []byte) fragPlan {
	next := func() byte {
		if len(ops) == 0 {
			return 0
		}
		b := ops[0]
		ops = ops[1:]
		return b
	}
	p := fragPlan{v6: next()&1 == 1}
	p.length = 9 + int(binary.BigEndian.Uint16([]byte{next(), next()}))%6000
	// Cut points at multiples of 8, then more wherever a piece is too long.
	cuts := map[int]bool{}
	for range int(next() % 6) {
		if c := int(binary.BigEndian.Uint16([]byte{next(), next()})) % p.length &^ 7; c > 0 {
			cuts[c] = true
		}
	}
	off := 0
	for _, c := range append(slices.Sorted(maps.Keys(cuts)), p.length) {
		for c-off > fragMaxPiece {
			p.pieces = append(p.pieces, fragPiece{off, off + fragMaxPiece&^7, true})
			off += fragMaxPiece &^ 7
		}
		p.pieces = append(p.pieces, fragPiece{off, c, c < p.length})
		off = c
	}
	for len(ops) >= 2 {
		op, arg := next(), int(next())
		n := len(p.pieces)
		if n == 0 {
			break
		}
		i := arg % n
		pc := &p.pieces[i]
		switch op % 6 {
		case 0: // reorder
			j := (arg / n) % n
			p.pieces[i], p.pieces[j] = p.pieces[j], p.pieces[i]
		case 1: // duplicate
			if n < fragMaxPieces {
				p.pieces = append(p.pieces, *pc)
			}
		case 2: // drop
			p.pieces = slices.Delete(p.pieces, i, i+1)
		case 3: // start 8 bytes earlier: overlaps the previous fragment
			if pc.off >= 8 && pc.end-pc.off+8 <= fragMaxPiece {
				pc.off -= 8
			}
		case 4: // end 8 bytes later: overlaps the next fragment
			if pc.mf && pc.end+8 <= p.length && pc.end-pc.off+8 <= fragMaxPiece {
				pc.end += 8
			}
		case 5:
			pc.mf = !pc.mf
		}
	}
	return p
}

// cleanDeliveries reports whether the plan's distinct fragments tile the
// datagram with no overlap, the last alone without "more fragments", and
// it is fragmented (not a whole datagram), and then how many times the
// kernel's reassembly (RFC 791, RFC 8200) delivers it: each time the
// fragments received since the last delivery, exact duplicates ignored,
// make the whole datagram.
func (p fragPlan) cleanDeliveries() (int, bool) {
	var ps []fragPiece
	for _, pc := range p.pieces {
		if !slices.Contains(ps, pc) {
			ps = append(ps, pc)
		}
	}
	slices.SortFunc(ps, func(a, b fragPiece) int { return a.off - b.off })
	at := 0
	for i, pc := range ps {
		if pc.off != at || pc.mf != (i < len(ps)-1) {
			return 0, false
		}
		at = pc.end
	}
	if at != p.length || len(ps) < 2 {
		return 0, false
	}
	n := 0
	have := map[fragPiece]bool{}
	for _, pc := range p.pieces {
		if have[pc] = true; len(have) == len(ps) {
			n++
			clear(have)
		}
	}
	return n, true
}

// fragSender sends hand-made IP fragments from host A.
type fragSender struct {
	fd4, fd6 int
	src, dst [2]net.IP // [0] IPv4, [1] IPv6
	id       uint32
	wrapped  time.Time // when id's low 16 bits last wrapped
	// laterNext, when not 0, is the next header the IPv6 fragments
	// after the first name instead of UDP's.
	laterNext byte
}

func newFragSender(t testing.TB, rig *nstest.Pair) *fragSender {
	s := &fragSender{src: [2]net.IP{rig.A.IPv4.AsSlice(), rig.A.IPv6.AsSlice()}, dst: [2]net.IP{rig.B.IPv4.AsSlice(), rig.B.IPv6.AsSlice()}}
	if err := rig.A.Do(func() error {
		var err error
		if s.fd4, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return err
		}
		// IPPROTO_RAW on IPv6 includes the header too (IPV6_HDRINCL).
		s.fd6, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s.fd4); unix.Close(s.fd6) })
	return s
}

// datagram builds a UDP datagram from A to B's port with payload.
func (s *fragSender) datagram(v6 bool, port int, payload []byte) []byte {
	fi := 0
	if v6 {
		fi = 1
	}
	d := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(d[0:], 4444)
	binary.BigEndian.PutUint16(d[2:], uint16(port))
	binary.BigEndian.PutUint16(d[4:], uint16(len(d)))
	copy(d[8:], payload)
	ps := sum(sum(0, s.src[fi].To16()[12-12*fi:]), s.dst[fi].To16()[12-12*fi:]) + unix.IPPROTO_UDP + uint32(len(d))
	c := csum(ps, d)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(d[6:], c)
	return d
}

// send sends the plan's fragments of datagram d (its length) under a new
// fragment id.
func (s *fragSender) send(v6 bool, d []byte, pieces []fragPiece) error {
	// An IPv4 fragment id is 16 bits: it is not used again before an
	// incomplete set under it timed out (ipfrag_time, 1 s here). Nor is 0,
	// which a raw socket replaces with an id of its own per packet.
	if s.id++; s.id&0xffff == 0 {
		if d := time.Since(s.wrapped); d < 2*time.Second {
			time.Sleep(2*time.Second - d)
		}
		s.wrapped = time.Now()
		s.id++
	}
	for _, pc := range pieces {
		data := d[pc.off:pc.end]
		var pkt []byte
		var sa unix.Sockaddr
		fd := s.fd4
		if !v6 {
			pkt = make([]byte, 20+len(data))
			pkt[0], pkt[8], pkt[9] = 0x45, 64, unix.IPPROTO_UDP
			binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
			binary.BigEndian.PutUint16(pkt[4:], uint16(s.id))
			fo := uint16(pc.off / 8)
			if pc.mf {
				fo |= 0x2000
			}
			binary.BigEndian.PutUint16(pkt[6:], fo)
			copy(pkt[12:16], s.src[0].To4())
			copy(pkt[16:20], s.dst[0].To4())
			copy(pkt[20:], data)
			sa = &unix.SockaddrInet4{Addr: [4]byte(s.dst[0].To4())}
		} else {
			fd = s.fd6
			pkt = make([]byte, 48+len(data))
			pkt[0] = 0x60
			binary.BigEndian.PutUint16(pkt[4:], uint16(8+len(data)))
			pkt[6], pkt[7] = 44, 64 // a fragment header follows
			copy(pkt[8:24], s.src[1])
			copy(pkt[24:40], s.dst[1])
			pkt[40] = unix.IPPROTO_UDP
			if pc.off > 0 && s.laterNext != 0 {
				pkt[40] = s.laterNext
			}
			fo := uint16(pc.off/8) << 3
			if pc.mf {
				fo |= 1
			}
			binary.BigEndian.PutUint16(pkt[42:], fo)
			binary.BigEndian.PutUint32(pkt[44:], s.id)
			copy(pkt[48:], data)
			sa = &unix.SockaddrInet6{Addr: [16]byte(s.dst[1])}
		}
		if err := unix.Sendto(fd, pkt, 0, sa); err != nil {
			return err
		}
	}
	return nil
}

// FuzzFragments sends fuzzed fragment sets (random splits, orders,
// duplicates, gaps, overlaps, "more fragments" flags; IPv4 and IPv6) from
// host A both to a port an app serves through the daemon and to a kernel
// socket's port on B, and checks that the app receives exactly what the
// kernel socket receives, byte for byte: the daemon's path (the XDP
// program's steering of fragments and whole datagrams, the worker's
// reassembly of a set whose first fragment comes first, the kernel path
// for the others, the fifo) delivers what the kernel's reassembly
// delivers and nothing else. The model of clean sets holds as well: a set whose
// distinct fragments tile the datagram is delivered as often as it is
// completed.
func FuzzFragments(f *testing.F) {
	f.Add([]byte{0, 0x10, 0x00, 2, 0x05, 0xa0, 0x0b, 0x40})       // IPv4, 4,105 bytes in three fragments
	f.Add([]byte{1, 0x10, 0x00, 2, 0x05, 0xa0, 0x0b, 0x40})       // IPv6, the same
	f.Add([]byte{0, 0x0b, 0xb8, 0, 0, 0x21, 2, 0x01})             // reordered, then a fragment dropped: never complete
	f.Add([]byte{1, 0x0b, 0xb8, 0, 1, 0x00})                      // a fragment again, after the datagram completed: never completes again
	f.Add([]byte{0, 0x0b, 0xb8, 2, 0x03, 0x20, 0x06, 0x40, 4, 0}) // the first fragment overlaps the second: dropped
	f.Add([]byte{1, 0x0b, 0xb8, 2, 0x03, 0x20, 0x06, 0x40, 3, 1}) // the second overlaps the first (IPv6: RFC 5722)
	f.Add([]byte{0, 0x07, 0xd0, 1, 0x03, 0x20, 5, 0})             // a first fragment without "more fragments": a truncated datagram
	f.Add([]byte{0, 0x05, 0x00, 0, 5, 0})                         // one fragment with "more fragments": never complete
	f.Add([]byte{1, 0x00, 0x20, 0, 1, 0, 1, 0})                   // a whole small datagram, three times
	rig := nstest.NewPair(f, nstest.Options{})
	d := startDaemon(f, func(o *Config) {
		o.Datapath.IfName, o.Datapath.NetnsName, o.NoDatapath = rig.B.Link, rig.B.Name, false
		o.Datapath.Reassembly.Timeout, o.Datapath.Reassembly.Timeout6 = time.Second, time.Second // as the kernel's, below
	})
	// Incomplete sets hold the kernel's reassembly memory until they time
	// out: a short timeout and a large bound keep a long run from filling it.
	if err := rig.B.Do(func() error {
		for file, v := range map[string]string{"ipv4/ipfrag_time": "1", "ipv6/ip6frag_time": "1",
			"ipv4/ipfrag_high_thresh": "67108864", "ipv6/ip6frag_high_thresh": "67108864"} {
			if err := os.WriteFile("/proc/sys/net/"+file, []byte(v), 0); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		f.Fatal(err)
	}
	a := attach(f, d, app.Options{Name: "frags", RxFifoSize: 1 << 20, TxFifoSize: 1 << 16, SegmentSize: 16 << 20})
	type side struct {
		port int
		got  chan []byte
	}
	var sides [2][2]side // [family][0: the app, 1: the kernel socket]
	for fi, fam := range []struct{ uri, kaddr string }{{"udp://0.0.0.0:0", "0.0.0.0:0"}, {"udp://[::]:0", "[::]:0"}} {
		pc, err := a.ListenPacket(fam.uri)
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { pc.Close() })
		ks, err := bindKernel(rig.B, fam.kaddr)
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { ks.Close() })
		for si, c := range []net.PacketConn{pc, ks} {
			sd := side{port: c.LocalAddr().(*net.UDPAddr).Port, got: make(chan []byte, 256)}
			sides[fi][si] = sd
			go func() {
				buf := make([]byte, 65536)
				for {
					n, _, err := c.ReadFrom(buf)
					if err != nil {
						return
					}
					sd.got <- bytes.Clone(buf[:n])
				}
			}()
		}
	}
	snd := newFragSender(f, rig)
	seq := 0
	// deliveries sends the plan to one side's port, then a marker down
	// each of the daemon's paths, each of which keeps its order: a whole
	// datagram (the worker's frames), a fragmented one in order (the
	// worker's reassembly) and one in reverse order (the kernel's
	// reassembly, the kernel path). It returns what arrived before all
	// three markers, so whichever path the plan took.
	deliveries := func(p fragPlan, sd side, payload []byte) ([][]byte, error) {
		seq++
		marks := [][]byte{fmt.Appendf(nil, "mark %d whole", seq), append(fmt.Appendf(nil, "mark %d fragmented ", seq), make([]byte, 2000)...),
			append(fmt.Appendf(nil, "mark %d reordered ", seq), make([]byte, 2000)...)}
		if err := snd.send(p.v6, snd.datagram(p.v6, sd.port, payload), p.pieces); err != nil {
			return nil, err
		}
		for i, m := range marks {
			md := snd.datagram(p.v6, sd.port, m)
			pieces := []fragPiece{{0, len(md), false}} // whole: one piece without "more fragments"
			switch i {
			case 1:
				pieces = []fragPiece{{0, 1200, true}, {1200, len(md), false}}
			case 2:
				pieces = []fragPiece{{1200, len(md), false}, {0, 1200, true}}
			}
			if err := snd.send(p.v6, md, pieces); err != nil {
				return nil, err
			}
		}
		var got [][]byte
		var arrived []string
		seen := 0
		deadline := time.After(5 * time.Second)
		for seen < len(marks) {
			select {
			case b := <-sd.got:
				switch {
				case bytes.HasPrefix(b, []byte("mark ")):
					if bytes.HasPrefix(b, fmt.Appendf(nil, "mark %d ", seq)) {
						seen++
						arrived = append(arrived, string(b[:min(len(b), 24)]))
					} // an earlier input's marker, late: ignored
				default:
					got = append(got, b)
				}
			case <-deadline:
				return got, fmt.Errorf("port %d: %d of %d markers arrived in 5 s (%q, after %d datagrams)", sd.port, seen, len(marks), arrived, len(got))
			}
		}
		return got, nil
	}
	// counters are B's kernel counters a failure reports.
	counters := func() string {
		var out string
		_ = rig.B.Do(func() error {
			for _, file := range []string{"/proc/thread-self/net/snmp", "/proc/thread-self/net/snmp6"} {
				raw, _ := os.ReadFile(file)
				for _, line := range strings.Split(string(raw), "\n") {
					if strings.HasPrefix(line, "Ip:") || strings.HasPrefix(line, "Udp:") || strings.HasPrefix(line, "Ip6Reasm") || strings.HasPrefix(line, "Udp6") {
						out += line + "\n"
					}
				}
			}
			return nil
		})
		for _, h := range []*nstest.Host{rig.A, rig.B} {
			o, _ := exec.Command("ip", "-n", h.Name, "-s", "link", "show", h.Link).CombinedOutput()
			out += string(o)
		}
		if e := d.Engine(); e != nil {
			ds := e.Stats()
			out += fmt.Sprintf("daemon: totals %+v bpf %v kernel path rx %d drops %d\n", ds.Totals, ds.BPF, ds.KernelRx, ds.KernelRxDrops)
		}
		return out
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		p := decodeFragPlan(ops)
		fi := 0
		if p.v6 {
			fi = 1
		}
		payload := fragFill(len(ops), p.length-8)
		var got [2][][]byte
		for si := range 2 {
			var err error
			if got[si], err = deliveries(p, sides[fi][si], payload); err != nil {
				t.Fatalf("plan %+v: %s: %v\n%s", p, []string{"the app", "the kernel socket"}[si], err, counters())
			}
		}
		for si, what := range []string{"the app", "the kernel socket"} {
			for _, b := range got[si] {
				if !bytes.Equal(b, payload) {
					t.Fatalf("plan %+v: %s received %d bytes that are not the datagram's %d", p, what, len(b), len(payload))
				}
			}
		}
		if len(got[0]) != len(got[1]) {
			t.Fatalf("plan %+v: the app received %d datagrams, the kernel socket %d\n%s", p, len(got[0]), len(got[1]), counters())
		}
		if want, ok := p.cleanDeliveries(); ok && len(got[0]) != want {
			t.Fatalf("plan %+v: a clean fragment set delivered %d times, want %d", p, len(got[0]), want)
		}
	})
}
