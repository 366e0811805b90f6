package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestPacketConnConcurrentWriters: 16 goroutines write 10,000 datagrams
// each on one PacketConn, goroutine i to kernel socket i on host A. Every
// socket receives exactly its own 10,000, in order, none twice, and no
// writer hangs. Each writer keeps at most a window of datagrams in flight
// (what its socket received so far), so the test is about who gets what,
// not about loss.
func TestPacketConnConcurrentWriters(t *testing.T) {
	const writers, per, window = 16, 10000, 64
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "writers"})
	pc, err := a.ListenPacket("udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()

	socks := make([]*net.UDPConn, writers)
	got := make([]atomic.Int64, writers)
	errs := make(chan error, 2*writers)
	var rwg sync.WaitGroup
	for i := range socks {
		c, err := bindKernel(rig.A, "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadBuffer(4 << 20)
		socks[i] = c
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			buf := make([]byte, 2048)
			for n := 0; n < per; {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				k, _, err := c.ReadFrom(buf)
				if err != nil {
					errs <- fmt.Errorf("socket %d: %d received: %w", i, n, err)
					return
				}
				if k < 8 || binary.BigEndian.Uint32(buf) != uint32(i) || binary.BigEndian.Uint32(buf[4:]) != uint32(n) {
					errs <- fmt.Errorf("socket %d: datagram %d: got %x (len %d)", i, n, buf[:min(k, 8)], k)
					return
				}
				for j := 8; j < k; j++ {
					if buf[j] != byte(i+n+j) {
						errs <- fmt.Errorf("socket %d: datagram %d: byte %d differs", i, n, j)
						return
					}
				}
				n++
				got[i].Store(int64(n))
			}
		}()
	}
	// A datagram from A first, so that B's neighbour entry for A exists.
	for _, c := range socks[:1] {
		if _, err := c.WriteTo([]byte("hi"), &net.UDPAddr{IP: rig.B.IPv4.AsSlice(), Port: pc.LocalAddr().(*net.UDPAddr).Port}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	var wwg sync.WaitGroup
	for i := range writers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			dst := socks[i].LocalAddr().(*net.UDPAddr)
			dst = &net.UDPAddr{IP: rig.A.IPv4.AsSlice(), Port: dst.Port}
			b := make([]byte, 100+i*50)
			for n := 0; n < per; n++ {
				for wait := time.Now(); int64(n)-got[i].Load() >= window; {
					if time.Since(wait) > 10*time.Second {
						errs <- fmt.Errorf("writer %d: stalled at %d sent, %d received", i, n, got[i].Load())
						return
					}
					time.Sleep(20 * time.Microsecond)
				}
				binary.BigEndian.PutUint32(b, uint32(i))
				binary.BigEndian.PutUint32(b[4:], uint32(n))
				for j := 8; j < len(b); j++ {
					b[j] = byte(i + n + j)
				}
				pc.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := pc.WriteTo(b, dst); err != nil {
					errs <- fmt.Errorf("writer %d: datagram %d: %w", i, n, err)
					return
				}
			}
		}()
	}
	wwg.Wait()
	rwg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	el := time.Since(start)
	total := int64(0)
	for i := range got {
		total += got[i].Load()
	}
	t.Logf("%d datagrams from %d writers in %v (%.0f/s)", total, writers, el, float64(total)/el.Seconds())
	if total != writers*per {
		t.Fatalf("received %d of %d", total, writers*per)
	}
}

// TestWriteToErrors: WriteTo refuses what a kernel UDP socket refuses,
// with the same errno.
func TestWriteToErrors(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "errs"})
	pc, err := a.ListenPacket("udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc6, err := a.ListenPacket("udp://[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc6.Close()
	for _, tc := range []struct {
		name string
		pc   net.PacketConn
		to   *net.UDPAddr
		size int
		want error
	}{
		{"port-0", pc, &net.UDPAddr{IP: rig.A.IPv4.AsSlice(), Port: 0}, 10, syscall.EINVAL},
		// No IP is the unspecified address, which the kernel takes for
		// this host: no error (TestPacketConnWriteToThisHostMatchesKernel).
		{"v6-on-v4", pc, &net.UDPAddr{IP: rig.A.IPv6.AsSlice(), Port: 9}, 10, syscall.EAFNOSUPPORT},
		{"v4-on-v6", pc6, &net.UDPAddr{IP: rig.A.IPv4.AsSlice(), Port: 9}, 10, syscall.ENETUNREACH}, // as a udp6 socket (IPV6_V6ONLY) says
		{"too-long-v4", pc, &net.UDPAddr{IP: rig.A.IPv4.AsSlice(), Port: 9}, app.MaxDatagram4 + 1, syscall.EMSGSIZE},
		{"too-long-v6", pc6, &net.UDPAddr{IP: rig.A.IPv6.AsSlice(), Port: 9}, app.MaxDatagram6 + 1, syscall.EMSGSIZE},
	} {
		n, err := tc.pc.WriteTo(make([]byte, tc.size), tc.to)
		if n != 0 || !errors.Is(err, tc.want) {
			t.Errorf("%s: WriteTo %v: %d, %v; want %v", tc.name, tc.to, n, err, tc.want)
		}
	}
}

// TestConnConcurrentReadWrite: 8 goroutines write and 8 read on one
// connected Conn to a kernel echo server on host A; every datagram comes
// back exactly once and no call hangs. The writers keep a shared window
// of datagrams in flight.
func TestConnConcurrentReadWrite(t *testing.T) {
	const goroutines, per, window = 8, 2000, 128
	rig := nstest.NewPair(t, nstest.Options{})
	srv, err := bindKernel(rig.A, "0.0.0.0:7008")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_ = srv.SetReadBuffer(4 << 20)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(buf[:n], from)
		}
	}()
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "conn"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, fmt.Sprintf("udp://%s:7008", rig.A.IPv4))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Resolve A's address first (the first datagram may wait for ARP).
	buf := make([]byte, 64)
	for try := 0; ; try++ {
		c.Write([]byte("warm"))
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "warm" {
			break
		}
		if try == 3 {
			t.Fatal("no echo")
		}
	}
	c.SetReadDeadline(time.Time{})
	var sent, recvd, lastRecv atomic.Int64
	lastRecv.Store(time.Now().UnixNano())
	const readStall = 5 * time.Second
	var mu sync.Mutex
	seen := map[uint64]bool{}
	errs := make(chan error, 2*goroutines)
	var wg sync.WaitGroup
	for i := range goroutines {
		wg.Add(2)
		go func() {
			defer wg.Done()
			b := make([]byte, 200)
			for n := 0; n < per; n++ {
				for wait := time.Now(); sent.Load()-recvd.Load() >= window; time.Sleep(20 * time.Microsecond) {
					if time.Since(wait) > 10*time.Second {
						errs <- fmt.Errorf("writer %d stalled at %d", i, n)
						return
					}
				}
				binary.BigEndian.PutUint64(b, uint64(i)<<32|uint64(n))
				sent.Add(1)
				c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(b); err != nil {
					errs <- fmt.Errorf("writer %d: %w", i, err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			b := make([]byte, 2048)
			for recvd.Load() < goroutines*per {
				c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				n, err := c.Read(b)
				if err != nil {
					if recvd.Load() >= goroutines*per {
						return
					}
					// The readers give up when none of them got a
					// datagram for readStall (lost replies leave the
					// writers' window shut), not when one read waited
					// 500 ms on a busy machine.
					if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, lastRecv.Load())) < readStall {
						continue
					}
					errs <- fmt.Errorf("reader %d: %d received: %w", i, recvd.Load(), err)
					return
				}
				if n != 200 {
					errs <- fmt.Errorf("reader %d: %d bytes", i, n)
					return
				}
				k := binary.BigEndian.Uint64(b)
				mu.Lock()
				dup := seen[k]
				seen[k] = true
				mu.Unlock()
				if dup {
					errs <- fmt.Errorf("datagram %x twice", k)
					return
				}
				recvd.Add(1)
				lastRecv.Store(time.Now().UnixNano())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(seen) != goroutines*per {
		st := d.Engine().Stats()
		for _, q := range st.Queues {
			t.Logf("queue %d: %+v xsk %+v", q.Queue, q.Counts, q.XSK)
		}
		t.Fatalf("received %d distinct of %d; engine drops %v", len(seen), goroutines*per, st.Totals.Drops)
	}
}
