package daemon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/datapath"
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
	d := startDaemon(t, func(o *Config) {
		o.Datapath.IfName, o.Datapath.NetnsName, o.NoDatapath = rig.B.Link, rig.B.Name, false
	})
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
			t.Logf("%s: kernel path rx %d (drops %d), tx %d; totals %+v", fam.name, ds.KernelRx, ds.KernelRxDrops, ds.Totals.TxKernel, ds.Totals)
			// Most of the 1,000 random sizes and 4 of the fixed ones do not
			// fit a frame: they went through the kernel path both ways.
			if ds.KernelRx < 500 || ds.Totals.TxKernel < 500 || ds.KernelRxDrops != 0 {
				t.Fatalf("kernel path rx %d drops %d tx %d", ds.KernelRx, ds.KernelRxDrops, ds.Totals.TxKernel)
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

// TestFragmentFlood: a flood of first fragments whose datagrams never
// complete, to a port an app listens on, leaves the memory held for
// reassembly in B's namespace at its bound; the listener still answers
// whole datagrams at once, and fragmented ones again once the flood's
// fragments timed out (ipfrag_time, 2 s here: at its bound the kernel
// takes no new fragment until old ones expire).
func TestFragmentFlood(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, func(o *Config) {
		o.Datapath.IfName, o.Datapath.NetnsName, o.NoDatapath = rig.B.Link, rig.B.Name, false
	})
	a := attach(t, d, app.Options{Name: "flood", RxFifoSize: 1 << 20, TxFifoSize: 1 << 20, SegmentSize: 16 << 20})
	pc, err := a.ListenPacket("udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go echoPacketConn(pc)
	port := pc.LocalAddr().(*net.UDPAddr).Port
	if err := rig.B.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ipfrag_time", []byte("2"), 0) }); err != nil {
		t.Fatal(err)
	}
	const flood, size = 20000, 1400
	if err := rig.A.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		pkt := make([]byte, 20+size)
		pkt[0], pkt[8], pkt[9] = 0x45, 64, unix.IPPROTO_UDP
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		binary.BigEndian.PutUint16(pkt[6:], 0x2000) // MF, offset 0: a first fragment
		copy(pkt[12:16], rig.A.IPv4.AsSlice())
		copy(pkt[16:20], rig.B.IPv4.AsSlice())
		binary.BigEndian.PutUint16(pkt[20:], 5555)
		binary.BigEndian.PutUint16(pkt[22:], uint16(port))
		binary.BigEndian.PutUint16(pkt[24:], 60000) // the UDP length of a datagram never completed
		sa := &unix.SockaddrInet4{Addr: rig.B.IPv4.As4()}
		for i := range flood {
			binary.BigEndian.PutUint16(pkt[4:], uint16(i))
			if err := unix.Sendto(fd, pkt, 0, sa); err != nil && !errors.Is(err, unix.ENOBUFS) {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	mem, bound := fragMemory(t, rig.B)
	t.Logf("after %d incomplete fragments (%d MB): reassembly memory %d bytes, bound %d", flood, flood*size>>20, mem, bound)
	// The kernel admits a fragment while it holds less than the bound, so
	// the last one admitted may overshoot it by its own buffer (at most
	// 64 KiB).
	if mem == 0 || mem > bound+64<<10 {
		t.Fatalf("reassembly memory %d, bound %d", mem, bound)
	}
	cli, err := bindKernel(rig.A, "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	buf := make([]byte, 70000)
	for _, n := range []int{100, 9000} {
		if n > 1472 {
			time.Sleep(3 * time.Second) // the flood's fragments time out
		}
		msg := fragFill(n, n)
		ok := false
		for try := 0; try < 3 && !ok; try++ {
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
