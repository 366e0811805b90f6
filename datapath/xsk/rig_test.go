package xsk_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/frame"
	"github.com/xsessiond/xsessiond/datapath/xsk"
	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
	"golang.org/x/sys/unix"
)

const testPort = 9400

// openIn opens a socket inside h's namespace and closes it in t.Cleanup.
func openIn(t testing.TB, h *nstest.Host, queue int, opts xsk.Options) *xsk.Socket {
	t.Helper()
	var s *xsk.Socket
	err := h.Do(func() error {
		var err error
		s, err = xsk.Open(h.IfIndex, queue, opts)
		return err
	})
	if err != nil {
		t.Fatalf("Open queue %d: %v", queue, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// udpIn opens a kernel UDP socket bound to h's IPv4 address (port 0: any)
// inside h's namespace.
func udpIn(t testing.TB, h *nstest.Host, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: h.IPv4.AsSlice(), Port: port})
		return err
	})
	if err != nil {
		t.Fatalf("listen udp in %s: %v", h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func payloadFor(i int) []byte {
	return fmt.Appendf(nil, "datagram %06d %s", i, bytes.Repeat([]byte{byte(i)}, i%200))
}

// receiveN receives until want datagrams arrived on the sockets or the
// deadline passed, checking each frame, and returns the count per socket.
// Frames go back to the free list and the fill ring is topped up.
func receiveN(t testing.TB, socks []*xsk.Socket, want int, seen map[string]bool, from *nstest.Host, to *nstest.Host) []int {
	t.Helper()
	descs := make([]xsk.Desc, 64)
	counts := make([]int, len(socks))
	got := 0
	deadline := time.Now().Add(5 * time.Second)
	for got < want && time.Now().Before(deadline) {
		idle := true
		for si, s := range socks {
			n := s.Receive(descs)
			for _, d := range descs[:n] {
				f := s.Frame(d)
				var p frame.Packet
				if r := frame.Decode(f, &p); r != frame.OK {
					t.Fatalf("socket %d: received frame does not decode: %v", si, r)
				}
				if p.Src != flow.AddrBytes(from.IPv4) || p.Dst != flow.AddrBytes(to.IPv4) || p.DstPort != testPort {
					t.Fatalf("socket %d: unexpected datagram %+v", si, p)
				}
				key := string(p.Payload(f))
				if seen[key] {
					t.Fatalf("socket %d: datagram received twice: %q", si, key[:16])
				}
				seen[key] = true
			}
			if n > 0 {
				idle = false
				if k := s.FreeDescs(descs[:n]); k != n {
					t.Fatalf("FreeDescs freed %d of %d", k, n)
				}
				s.Fill()
				counts[si] += n
				got += n
			}
		}
		if idle && len(socks) == 1 {
			if _, err := socks[0].Poll(50 * time.Millisecond); err != nil {
				t.Fatal(err)
			}
		} else if idle {
			time.Sleep(time.Millisecond)
		}
	}
	return counts
}

func checkFrames(t testing.TB, s *xsk.Socket, app uint32) {
	t.Helper()
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	a := s.Accounting()
	if a.Free+a.Fill+a.App+a.Tx != a.Total || a.App != app {
		t.Fatalf("accounting %+v, want app %d", a, app)
	}
}

func TestReceiveFromKernel(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	r := xsktest.AttachRedirect(t, p.B, envPeer(p.A), 1, testPort)
	s := openIn(t, p.B, 0, xsk.Options{NumFrames: 512, RingSize: 256, NeedWakeup: true})
	if err := r.Register(0, s.FD()); err != nil {
		t.Fatal(err)
	}
	checkFrames(t, s, 0)
	c := udpIn(t, p.A, 0)
	dst := &net.UDPAddr{IP: p.B.IPv4.AsSlice(), Port: testPort}
	const n = 1000
	seen := map[string]bool{}
	total := 0
	for i := 0; i < n; i += 100 {
		for j := i; j < i+100; j++ {
			if _, err := c.WriteToUDP(payloadFor(j), dst); err != nil {
				t.Fatal(err)
			}
		}
		total += receiveN(t, []*xsk.Socket{s}, 100, seen, p.A, p.B)[0]
		checkFrames(t, s, 0)
	}
	st, err := s.Stats()
	t.Logf("received %d of %d, zerocopy %v, stats %+v", total, n, s.ZeroCopy(), st)
	if err != nil {
		t.Fatal(err)
	}
	if total != n {
		t.Fatalf("received %d of %d datagrams", total, n)
	}
	for j := 0; j < n; j++ {
		if !seen[string(payloadFor(j))] {
			t.Fatalf("datagram %d missing", j)
		}
	}
	if st.Received != n || st.BadDescs != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// envPeer returns the host whose tx offload AttachRedirect turns off;
// XSK_KEEP_OFFLOAD=1 leaves it on, to see what veth does then.
func envPeer(h *nstest.Host) *nstest.Host {
	if os.Getenv("XSK_KEEP_OFFLOAD") != "" {
		return nil
	}
	return h
}

func TestTransmitToKernel(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	// The program is not needed for transmit; attaching it keeps the test's
	// setup the same as a worker's.
	xsktest.AttachRedirect(t, p.B, envPeer(p.A), 1, testPort)
	s := openIn(t, p.B, 0, xsk.Options{NumFrames: 256, RingSize: 64, NeedWakeup: true})
	c := udpIn(t, p.A, 0)
	aport := c.LocalAddr().(*net.UDPAddr).Port
	var tpl frame.Template
	if err := tpl.Prepare(frame.Spec{DstMAC: p.A.MAC, SrcMAC: p.B.MAC, Src: p.B.IPv4, Dst: p.A.IPv4, SrcPort: testPort, DstPort: uint16(aport)}); err != nil {
		t.Fatal(err)
	}
	const n = 500
	addrs := make([]uint64, 32)
	descs := make([]xsk.Desc, 32)
	got := map[string]bool{}
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < n; {
		k := s.AllocFrames(addrs[:min(len(addrs), n-i)])
		if k == 0 {
			s.Complete()
			continue
		}
		for j := 0; j < k; j++ {
			fl, err := tpl.Build(s.Buffer(addrs[j]), payloadFor(i+j))
			if err != nil {
				t.Fatal(err)
			}
			descs[j] = xsk.Desc{Addr: addrs[j], Len: uint32(fl)}
		}
		checkFrames(t, s, uint32(k))
		for sent := 0; sent < k; {
			sent += s.Transmit(descs[sent:k])
			s.Complete()
		}
		// Read what was sent before sending more: the kernel socket's
		// buffer is the limit, not the test.
		for j := 0; j < k; j++ {
			m, from, err := c.ReadFromUDP(buf)
			if err != nil {
				st, _ := s.Stats()
				t.Fatalf("after %d datagrams: %v (stats %+v, accounting %+v)", len(got), err, st, s.Accounting())
			}
			if !from.IP.Equal(p.B.IPv4.AsSlice()) || from.Port != testPort {
				t.Fatalf("datagram from %v", from)
			}
			got[string(buf[:m])] = true
		}
		i += k
	}
	for j := 0; j < n; j++ {
		if !got[string(payloadFor(j))] {
			t.Fatalf("datagram %d missing or corrupted", j)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Accounting().Tx > 0 && time.Now().Before(deadline) {
		if s.Complete() == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	checkFrames(t, s, 0)
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats %+v", st)
	if a := s.Accounting(); a.Tx != 0 || st.Transmitted != n || st.Completed != n || st.TxInvalidDescs != 0 || st.BadDescs != 0 {
		t.Fatalf("accounting %+v stats %+v", a, st)
	}
}

func TestMultiQueue(t *testing.T) {
	const queues = 4
	p := nstest.NewPair(t, nstest.Options{Queues: queues})
	r := xsktest.AttachRedirect(t, p.B, envPeer(p.A), queues, testPort)
	socks := make([]*xsk.Socket, queues)
	for q := range socks {
		socks[q] = openIn(t, p.B, q, xsk.Options{NumFrames: 256, RingSize: 128, NeedWakeup: true})
		if err := r.Register(q, socks[q].FD()); err != nil {
			t.Fatal(err)
		}
	}
	// Many flows: the sending veth picks a tx queue per socket hash, and
	// the receiving end's rx queue is the sender's tx queue.
	const flows, per = 32, 8
	dst := &net.UDPAddr{IP: p.B.IPv4.AsSlice(), Port: testPort}
	seen := map[string]bool{}
	counts := make([]int, queues)
	for f := 0; f < flows; f++ {
		c := udpIn(t, p.A, 0)
		for j := 0; j < per; j++ {
			if _, err := c.WriteToUDP(payloadFor(f*per+j), dst); err != nil {
				t.Fatal(err)
			}
		}
		for q, k := range receiveN(t, socks, per, seen, p.A, p.B) {
			counts[q] += k
		}
	}
	total := 0
	used := 0
	for q, k := range counts {
		total += k
		if k > 0 {
			used++
		}
		checkFrames(t, socks[q], 0)
	}
	t.Logf("datagrams per queue: %v", counts)
	if total != flows*per {
		t.Fatalf("received %d of %d", total, flows*per)
	}
	if used < 2 {
		t.Fatalf("all %d flows landed on one queue: %v", flows, counts)
	}
}

// openRetry opens in h's namespace, retrying while the queue is busy: the
// kernel releases a closed socket's queue asynchronously.
func openRetry(h *nstest.Host, queue int, opts xsk.Options) (*xsk.Socket, error) {
	var s *xsk.Socket
	err := h.Do(func() error {
		deadline := time.Now().Add(3 * time.Second)
		for {
			var err error
			s, err = xsk.Open(h.IfIndex, queue, opts)
			if !errors.Is(err, xsk.ErrBusy) || time.Now().After(deadline) {
				return err
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	return s, err
}

// TestCloseLeavesNoFD checks with leakcheck (the set of descriptors, by
// number and target, polled until it settles) that Close and a failed Open
// leave no descriptor, and no goroutine, behind.
func TestCloseLeavesNoFD(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{Queues: 2})
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true})
	for i := 0; i < 3; i++ {
		var socks []*xsk.Socket
		for q := 0; q < 2; q++ {
			s, err := openRetry(p.B, q, xsk.Options{NumFrames: 64, RingSize: 32, FrameSize: 4096, Headroom: 64})
			if err != nil {
				t.Fatal(err)
			}
			socks = append(socks, s)
		}
		for _, s := range socks {
			if _, err := s.Stats(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if s.FD() != -1 || s.Receive(make([]xsk.Desc, 4)) != 0 || s.Frame(xsk.Desc{Len: 1}) != nil {
				t.Fatal("closed socket still usable")
			}
			if _, err := s.Stats(); !errors.Is(err, xsk.ErrClosed) {
				t.Fatalf("Stats after Close: %v", err)
			}
		}
	}
	// A failed Open must not leak either.
	p.B.Do(func() error {
		_, err := xsk.Open(p.B.IfIndex, 7, xsk.Options{NumFrames: 64, RingSize: 32})
		if err == nil {
			t.Error("Open on a queue the veth does not have succeeded")
		}
		return nil
	})
	leaks.Check(t)
}

func TestOpenErrors(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	s := openIn(t, p.B, 0, xsk.Options{NumFrames: 64, RingSize: 32})
	if s.ZeroCopy() {
		t.Fatal("veth bound in zero-copy mode")
	}
	err := p.B.Do(func() error {
		_, err := xsk.Open(p.B.IfIndex, 0, xsk.Options{NumFrames: 64, RingSize: 32})
		return err
	})
	if !errors.Is(err, xsk.ErrBusy) {
		t.Fatalf("second socket on the same queue: %v, want ErrBusy", err)
	}
	err = p.B.Do(func() error {
		_, err := xsk.Open(p.B.IfIndex, 0, xsk.Options{NumFrames: 64, RingSize: 32, Mode: xsk.ModeZeroCopy})
		return err
	})
	if !errors.Is(err, xsk.ErrNotSupported) && !errors.Is(err, xsk.ErrBusy) {
		t.Fatalf("zero-copy on veth: %v, want ErrNotSupported", err)
	}
	s.Close()
	_, err = openRetry(p.B, 0, xsk.Options{NumFrames: 64, RingSize: 32, Mode: xsk.ModeZeroCopy})
	if !errors.Is(err, xsk.ErrNotSupported) {
		t.Fatalf("zero-copy on veth: %v, want ErrNotSupported", err)
	}
	err = p.B.Do(func() error {
		_, err := xsk.Open(p.B.IfIndex+100, 0, xsk.Options{NumFrames: 64, RingSize: 32})
		return err
	})
	if !errors.Is(err, xsk.ErrNoDevice) {
		t.Fatalf("unknown ifindex: %v, want ErrNoDevice", err)
	}
	s2, err := openRetry(p.B, 0, xsk.Options{NumFrames: 64, RingSize: 32, Mode: xsk.ModeCopy})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.ZeroCopy() {
		t.Fatal("copy mode reported zero-copy")
	}
}

// BenchmarkRx receives datagrams that a kernel UDP socket in the peer sends
// as fast as it can: "xsk" through the test XDP program and an AF_XDP
// socket (receive, decode with checksums, free, refill), "kernel-udp"
// beside it through the receiving host's own UDP socket (one recvfrom per
// datagram). ns/op is per datagram received; both share the machine with
// the sender.
func BenchmarkRx(b *testing.B) {
	p := nstest.NewPair(b, nstest.Options{})
	r := xsktest.AttachRedirect(b, p.B, p.A, 1, testPort)
	s := openIn(b, p.B, 0, xsk.Options{NeedWakeup: true})
	if err := r.Register(0, s.FD()); err != nil {
		b.Fatal(err)
	}
	const kernelPort = testPort + 1
	ks := udpIn(b, p.B, kernelPort)
	ks.SetReadBuffer(4 << 20)
	sender := udpIn(b, p.A, 0)
	payload := make([]byte, 64)
	blast := func(port int) (stop func()) {
		done := make(chan struct{})
		finished := make(chan struct{})
		dst := &net.UDPAddr{IP: p.B.IPv4.AsSlice(), Port: port}
		go func() {
			defer close(finished)
			for {
				select {
				case <-done:
					return
				default:
				}
				for i := 0; i < 64; i++ {
					sender.WriteToUDP(payload, dst)
				}
			}
		}()
		return func() { close(done); <-finished }
	}
	b.Run("xsk", func(b *testing.B) {
		descs := make([]xsk.Desc, 64)
		var pk frame.Packet
		stop := blast(testPort)
		defer stop()
		b.ResetTimer()
		for got := 0; got < b.N; {
			n := s.Receive(descs)
			if n == 0 {
				s.Poll(10 * time.Millisecond)
				continue
			}
			for _, d := range descs[:n] {
				if frame.Decode(s.Frame(d), &pk) != frame.OK {
					b.Fatal("bad frame")
				}
			}
			s.FreeDescs(descs[:n])
			s.Fill()
			got += n
		}
		b.StopTimer()
	})
	b.Run("kernel-udp", func(b *testing.B) {
		buf := make([]byte, 2048)
		stop := blast(kernelPort)
		defer stop()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, _, err := ks.ReadFromUDPAddrPort(buf); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
	})
	st, _ := s.Stats()
	b.Logf("xsk stats: %+v", st)
}

// Without CAP_IPC_LOCK the kernel charges a UMEM to the user's locked
// memory and refuses one past RLIMIT_MEMLOCK with ENOBUFS alone; Open's
// error says what ran short and what to do.
func TestOpenOverMemlock(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: 1 << 20, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
			t.Error(err)
		}
	}()
	err := p.B.Do(func() error {
		// Capabilities are a thread's: this one (locked to its goroutine)
		// goes without CAP_IPC_LOCK in its effective set for the Open.
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return err
		}
		eff := data[unix.CAP_IPC_LOCK/32].Effective
		data[unix.CAP_IPC_LOCK/32].Effective &^= 1 << (unix.CAP_IPC_LOCK % 32)
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return err
		}
		defer func() {
			data[unix.CAP_IPC_LOCK/32].Effective = eff
			_ = unix.Capset(&hdr, &data[0])
		}()
		s, err := xsk.Open(p.B.IfIndex, 0, xsk.Options{NumFrames: 1024, RingSize: 32}) // 2 MiB
		if err == nil {
			s.Close()
		}
		return err
	})
	if !errors.Is(err, xsk.ErrNoMemory) || !strings.Contains(err.Error(), "RLIMIT_MEMLOCK (1024 KiB)") || !strings.Contains(err.Error(), "CAP_IPC_LOCK") {
		t.Fatalf("a 2 MiB UMEM over a 1 MiB RLIMIT_MEMLOCK without CAP_IPC_LOCK: %v; want ErrNoMemory naming the limit and CAP_IPC_LOCK", err)
	}
	// With the capability back, the same socket opens.
	openIn(t, p.B, 0, xsk.Options{NumFrames: 1024, RingSize: 32})
}
