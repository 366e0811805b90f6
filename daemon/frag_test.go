package daemon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/datapath/reasm"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// echoPacketConn answers every datagram of pc to its sender until pc is
// closed.
func echoPacketConn(pc net.PacketConn) {
	buf := make([]byte, 70000)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if _, err := pc.WriteTo(buf[:n], from); err != nil {
			return
		}
	}
}

// fragFill is size bytes that seq and size make.
func fragFill(seq, size int) []byte {
	b := make([]byte, size)
	x := uint32(seq*7919 + size)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// TestFragmentedEcho: datagrams of every size up to the largest UDP
// allows, IPv4 and IPv6, from a kernel client on host A to an app's
// PacketConn on B and back: fragmented both ways, every byte checked.
// Meanwhile fragmented datagrams to a kernel socket of B on a port the
// daemon does not serve still reach it.
func TestFragmentedEcho(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "frag", RxFifoSize: 1 << 20, TxFifoSize: 1 << 20, SegmentSize: 16 << 20})
	// A kernel socket on B the daemon knows nothing of.
	ks, err := bindKernel(rig.B, "0.0.0.0:7200")
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	kgot := make(chan int, 64)
	go func() {
		buf := make([]byte, 70000)
		for {
			n, _, err := ks.ReadFrom(buf)
			if err != nil {
				return
			}
			kgot <- n
		}
	}()
	for _, fam := range []struct {
		name        string
		uri, client string
		dst         []byte
		sizes       []int
	}{
		{"ipv4", "udp://0.0.0.0:0", "0.0.0.0:0", rig.B.IPv4.AsSlice(), []int{1, 1472, 1473, 4000, 9000, app.MaxDatagram4}},
		{"ipv6", "udp://[::]:0", "[::]:0", rig.B.IPv6.AsSlice(), []int{1, 1452, 1453, 4000, 9000, app.MaxDatagram6}},
	} {
		t.Run(fam.name, func(t *testing.T) {
			pc, err := a.ListenPacket(fam.uri)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			go echoPacketConn(pc)
			before := d.Engine().Stats().Totals.Reassembled
			cli, err := bindKernel(rig.A, fam.client)
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			_ = cli.SetReadBuffer(4 << 20)
			dst := &net.UDPAddr{IP: fam.dst, Port: pc.LocalAddr().(*net.UDPAddr).Port}
			kdst := &net.UDPAddr{IP: fam.dst, Port: 7200}
			buf := make([]byte, 70000)
			exchange := func(seq, size int) error {
				msg := fragFill(seq, size)
				for try := 0; try < 3; try++ { // the first may wait for a neighbour
					if _, err := cli.WriteTo(msg, dst); err != nil {
						return err
					}
					cli.SetReadDeadline(time.Now().Add(2 * time.Second))
					n, _, err := cli.ReadFrom(buf)
					if err != nil {
						continue
					}
					if !bytes.Equal(buf[:n], msg) {
						return fmt.Errorf("%d bytes: echo of %d bytes differs", size, n)
					}
					return nil
				}
				return fmt.Errorf("%d bytes: no echo", size)
			}
			for i, size := range fam.sizes {
				if err := exchange(i, size); err != nil {
					t.Fatal(err)
				}
				// A fragmented datagram for the kernel's own socket.
				if _, err := cli.WriteTo(fragFill(i, 9000), kdst); err != nil {
					t.Fatal(err)
				}
				select {
				case n := <-kgot:
					if n != 9000 {
						t.Fatalf("kernel socket got %d bytes", n)
					}
				case <-time.After(3 * time.Second):
					t.Fatal("the kernel socket on a port the daemon does not serve got nothing")
				}
			}
			max := fam.sizes[len(fam.sizes)-1]
			rng := rand.New(rand.NewPCG(7, uint64(max)))
			for i := range 1000 {
				if err := exchange(100+i, 1+rng.IntN(max)); err != nil {
					t.Fatalf("random datagram %d: %v", i, err)
				}
			}
			e := d.Engine()
			ok := e != nil
			var ds datapath.Stats
			if ok {
				ds = e.Stats()
			}
			if !ok {
				t.Fatal("the daemon has no datapath engine")
			}
			t.Logf("%s: reassembled %d of %d fragments; kernel path rx %d (drops %d), tx %d; totals %+v", fam.name,
				ds.Totals.Reassembled, ds.Totals.Fragments, ds.KernelRx, ds.KernelRxDrops, ds.Totals.TxKernel, ds.Totals)
			// Most of the 1,000 random sizes and 4 of the fixed ones do not
			// fit a frame. The kernel on A sends a datagram's fragments in
			// order, so the worker reassembled them; the replies went out
			// through the kernel path, which fragments them.
			if ds.Totals.Reassembled-before < 500 || ds.Totals.TxKernel < 500 || ds.KernelRxDrops != 0 {
				t.Fatalf("reassembled %d, kernel path rx %d drops %d, tx %d", ds.Totals.Reassembled, ds.KernelRx, ds.KernelRxDrops, ds.Totals.TxKernel)
			}
			for _, r := range []string{"reasm-overlap", "reasm-corrupt", "reasm-evicted", "reasm-timeout", "bad-udp-csum"} {
				if ds.Totals.Drops[r] != 0 {
					t.Fatalf("%d dropped as %s: %v", ds.Totals.Drops[r], r, ds.Totals.Drops)
				}
			}
		})
	}
}

// fragMemory reads the memory the kernel holds for fragments being
// reassembled in h's namespace (/proc/net/sockstat's FRAG line, IPv4)
// and its bound, net.ipv4.ipfrag_high_thresh.
func fragMemory(t *testing.T, h *nstest.Host) (mem, bound int) {
	t.Helper()
	if err := h.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/sockstat")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 5 && f[0] == "FRAG:" {
				mem, _ = strconv.Atoi(f[4])
			}
		}
		s, err := os.ReadFile("/proc/sys/net/ipv4/ipfrag_high_thresh")
		if err != nil {
			return err
		}
		bound, err = strconv.Atoi(strings.TrimSpace(string(s)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mem, bound
}

// TestFragmentFlood floods both reassemblies with fragments of datagrams
// that never complete, to a port an app listens on:
//   - first fragments, which the XDP program steers to the worker: its
//     reassembly holds no more than its bound of datagrams and bytes, each
//     new datagram evicting the oldest, every one counted;
//   - later fragments of unknown datagrams, which go to the kernel (as a
//     reordered datagram's do): the memory B's kernel holds for reassembly
//     stays at its bound.
//
// The listener then still answers whole datagrams and fragmented ones at
// once: the worker's reassembly makes room for them.
func TestFragmentFlood(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "flood", RxFifoSize: 1 << 20, TxFifoSize: 1 << 20, SegmentSize: 16 << 20})
	pc, err := a.ListenPacket("udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go echoPacketConn(pc)
	port := pc.LocalAddr().(*net.UDPAddr).Port
	const size = 1400
	// flood sends n fragments of size bytes at offset off (more to follow)
	// under the ids from id0 on, from floodSrc: an address of A's subnet
	// that no socket uses, so that no datagram of the kernel client below
	// (from A's address) shares a datagram key with one the flood left
	// in the worker's reassembly or marked in the XDP program's map.
	// From A's address, a client whose IP id fell among the flood's
	// (3 runs in 48) went to the kernel's full reassembly or
	// overlapped a held datagram, five retries in a row.
	floodSrc := netip.MustParseAddr("10.77.0.99")
	flood := func(n, id0, off int) {
		t.Helper()
		if err := rig.A.Do(func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			pkt := make([]byte, 20+size)
			pkt[0], pkt[8], pkt[9] = 0x45, 64, unix.IPPROTO_UDP
			binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
			binary.BigEndian.PutUint16(pkt[6:], 0x2000|uint16(off/8)) // MF
			copy(pkt[12:16], floodSrc.AsSlice())
			copy(pkt[16:20], rig.B.IPv4.AsSlice())
			binary.BigEndian.PutUint16(pkt[20:], 5555)
			binary.BigEndian.PutUint16(pkt[22:], uint16(port))
			binary.BigEndian.PutUint16(pkt[24:], 60000) // the UDP length of a datagram never completed
			sa := &unix.SockaddrInet4{Addr: rig.B.IPv4.As4()}
			for i := range n {
				binary.BigEndian.PutUint16(pkt[4:], uint16(id0+i))
				if err := unix.Sendto(fd, pkt, 0, sa); err != nil && !errors.Is(err, unix.ENOBUFS) {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	// The worker's reassembly. The ids start at 1: the kernel fills in
	// an id of 0 on a raw socket, which could then repeat one of the
	// flood's, a duplicate first fragment and not a new datagram.
	const firsts = 20000
	flood(firsts, 1, 0)
	// Until the worker has taken what reached it (some may not have: its
	// rx ring fills under a flood, counted by the socket).
	var q datapath.QueueStats
	last := uint64(0)
	waitFor(t, "the flood's first fragments at the worker", 5*time.Second, func() bool {
		q = d.Engine().Stats().Totals
		settled := q.Fragments > 0 && q.Fragments == last
		last = q.Fragments
		time.Sleep(50 * time.Millisecond)
		return settled
	})
	lim := reasm.New(reasm.Config{})
	t.Logf("after %d first fragments: the worker took %d, holds %d datagrams (%d bytes), evicted %d; bounds %d datagrams, %d bytes",
		firsts, q.Fragments, q.ReasmInFlight, q.ReasmHeld, q.Drops["reasm-evicted"], lim.Config().MaxDatagrams, lim.MemoryBound())
	if q.Fragments < firsts/2 {
		t.Fatalf("the worker took %d of %d first fragments", q.Fragments, firsts)
	}
	if q.ReasmInFlight != uint64(lim.Config().MaxDatagrams) || q.ReasmHeld > uint64(lim.Config().MaxDatagrams*reasm.BufferSize) {
		t.Fatalf("the worker holds %d datagrams and %d bytes, beyond its bounds", q.ReasmInFlight, q.ReasmHeld)
	}
	// Every first fragment began a datagram; all but those held were
	// evicted, each counted.
	if ev := q.Drops["reasm-evicted"]; ev != q.Fragments-q.ReasmInFlight {
		other := map[string]uint64{}
		for k, v := range q.Drops {
			if strings.HasPrefix(k, "reasm-") && k != "reasm-evicted" && v > 0 {
				other[k] = v
			}
		}
		t.Fatalf("evicted %d of %d datagrams, %d held; the reassembly's other drops: %v", ev, q.Fragments, q.ReasmInFlight, other)
	}

	// The kernel's.
	const laters = 4000
	flood(laters, firsts+1, 1480)
	time.Sleep(100 * time.Millisecond)
	mem, bound := fragMemory(t, rig.B)
	t.Logf("after %d later fragments (%d MB): the kernel's reassembly memory %d bytes, bound %d", laters, laters*size>>20, mem, bound)
	// The kernel admits a fragment while it holds less than the bound, so
	// the last one admitted may overshoot it by its own buffer (at most
	// 64 KiB).
	if mem == 0 || mem > bound+64<<10 {
		t.Fatalf("reassembly memory %d, bound %d", mem, bound)
	}

	cli := kernelClient(t, rig.A)
	buf := make([]byte, 70000)
	for _, n := range []int{100, 9000} {
		msg := fragFill(n, n)
		ok := false
		for try := 0; try < 5 && !ok; try++ {
			cli.WriteTo(msg, &net.UDPAddr{IP: rig.B.IPv4.AsSlice(), Port: port})
			cli.SetReadDeadline(time.Now().Add(2 * time.Second))
			k, _, err := cli.ReadFrom(buf)
			ok = err == nil && bytes.Equal(buf[:k], msg)
		}
		if !ok {
			t.Fatalf("%d-byte datagram after the flood: no echo", n)
		}
	}
}

// TestFragmentSteering: a datagram whose fragments come in order (its
// first fragment first) is reassembled by the worker; one whose fragments
// come in reverse order goes whole to the kernel, which reassembles it
// for the daemon's socket of the port (the kernel path). Both reach the
// app intact, IPv4 and IPv6, and no fragment is lost between the two.
func TestFragmentSteering(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "steer", RxFifoSize: 1 << 20, TxFifoSize: 1 << 16, SegmentSize: 16 << 20})
	snd := newFragSender(t, rig)
	for _, fam := range []struct {
		name string
		v6   bool
		uri  string
	}{{"ipv4", false, "udp://0.0.0.0:0"}, {"ipv6", true, "udp://[::]:0"}} {
		t.Run(fam.name, func(t *testing.T) {
			pc, err := a.ListenPacket(fam.uri)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			port := pc.LocalAddr().(*net.UDPAddr).Port
			payload := fragFill(3, 4000)
			dg := snd.datagram(fam.v6, port, payload)
			inOrder := []fragPiece{{0, 1400, true}, {1400, 2800, true}, {2800, len(dg), false}}
			reversed := []fragPiece{inOrder[2], inOrder[1], inOrder[0]}
			buf := make([]byte, 65536)
			for _, c := range []struct {
				name                    string
				pieces                  []fragPiece
				reassembled, kernelPath uint64
			}{{"in order", inOrder, 1, 0}, {"reversed", reversed, 0, 1}} {
				s0 := d.Engine().Stats()
				if err := snd.send(fam.v6, dg, c.pieces); err != nil {
					t.Fatal(err)
				}
				pc.SetReadDeadline(time.Now().Add(3 * time.Second))
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if !bytes.Equal(buf[:n], payload) {
					t.Fatalf("%s: %d bytes that are not the datagram's %d", c.name, n, len(payload))
				}
				var s1 datapath.Stats
				waitFor(t, "the worker's counters", 2*time.Second, func() bool {
					s1 = d.Engine().Stats()
					return s1.Totals.Reassembled-s0.Totals.Reassembled >= c.reassembled
				})
				got := [2]uint64{s1.Totals.Reassembled - s0.Totals.Reassembled, s1.KernelRx - s0.KernelRx}
				if got != [2]uint64{c.reassembled, c.kernelPath} {
					t.Fatalf("%s: reassembled by the worker %d, by the kernel %d; want %d, %d (bpf %v)",
						c.name, got[0], got[1], c.reassembled, c.kernelPath, s1.BPF)
				}
				if f := s1.Totals.Fragments - s0.Totals.Fragments; f != 3*c.reassembled {
					t.Fatalf("%s: the worker took %d fragments", c.name, f)
				}
			}
		})
	}
}
