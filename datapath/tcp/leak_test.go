package tcp_test

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/tcp"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
)

// TestLeak runs 10,000 short connections one after another (handshake, 16
// bytes, FIN both ways) and checks that Conns, gVisor endpoints and
// goroutines come back to where they started.
func TestLeak(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	// FinWait2Timeout: now and then (seen under the race detector, in
	// about one run in three of 1,000 connections, once early in the run)
	// one accepted endpoint is left by gVisor in FIN-WAIT-2 after the
	// server's Close, which our Conn makes only after PeerClosed: gVisor
	// had delivered the client's FIN, the client is gone, and the orphan
	// waits for a FIN until this timeout. The cause is not pinned down;
	// the state is gVisor's, bounded by this timeout, and every Conn
	// finished. Without this timeout (so that the leak check fails),
	// under -race -short: once in 8 runs with the GRO/GSO link, in a run
	// that took 23s where the others took 3-5s, none in 3 runs of the
	// link before it. gVisor's FIN handling wakes readers (readyToRead)
	// before it moves the endpoint to CLOSE-WAIT, but both happen under
	// the endpoint lock that Close must take, so that window alone does
	// not explain it.
	p := newPair(t, tcp.Options{TimeWait: 50 * time.Millisecond, FinWait2Timeout: time.Second}, wireOpts{}, wireOpts{})
	const size = 4096
	seg := fifotest.Segment(t, fifo.SegmentHeaderSize+8*(fifo.FifoHeaderSize+size))
	ac := newSegAcceptor(t, seg, size)
	if _, err := p.b.Listen(netip.AddrPortFrom(addrB, 80), 0, 2, ac); err != nil {
		t.Fatal(err)
	}
	baseEP := p.a.Stats().Endpoints + p.b.Stats().Endpoints
	baseG := runtime.NumGoroutine()
	start := time.Now()
	msg := []byte("0123456789abcdef")
	buf := make([]byte, 64)
	ports := map[uint16][]int{} // client port -> iterations that used it
	for i := range n {
		client := newAppIn(t, seg, size)
		c, err := p.a.Dial(netip.AddrPortFrom(addrA, 0), netip.AddrPortFrom(addrB, 80), 1, client.rx, client.tx, client)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		client.setConn(c)
		ports[c.LocalAddr().Port()] = append(ports[c.LocalAddr().Port()], i)
		recvOrFail(t, client.connected, 5*time.Second, "connected")
		server := recvOrFail(t, ac.apps, 5*time.Second, "accept")
		client.appTx.Enqueue(msg)
		client.appTx.SetEvent()
		c.Close()
		recvOrFail(t, server.peerClosed, 5*time.Second, "server FIN")
		if k, _ := server.appRx.Dequeue(buf); k != len(msg) {
			t.Fatalf("conn %d: server got %d bytes", i, k)
		}
		server.getConn().Close()
		recvOrFail(t, client.closed, 5*time.Second, "client closed")
		recvOrFail(t, server.closed, 5*time.Second, "server closed")
		client.free(seg)
		server.free(seg)
	}
	el := time.Since(start)
	t.Logf("%d connections in %v (%v each)", n, el.Round(time.Millisecond), (el / time.Duration(n)).Round(time.Microsecond))
	deadline := time.Now().Add(5 * time.Second)
	for {
		sa, sb := p.a.Stats(), p.b.Stats()
		ep := sa.Endpoints + sb.Endpoints
		g := runtime.NumGoroutine()
		if sa.Conns == 0 && sb.Conns == 0 && sa.Orphans == 0 && sb.Orphans == 0 && ep <= baseEP && g <= baseG+2 {
			t.Logf("after: endpoints %d (start %d), goroutines %d (start %d), fifos in use %d", ep, baseEP, g, baseG, seg.Fifos())
			break
		}
		if time.Now().After(deadline) {
			reused := 0
			for _, its := range ports {
				if len(its) > 1 {
					reused++
				}
			}
			t.Logf("%d client ports were used more than once", reused)
			for _, port := range tcp.EndpointRemotePorts(p.b) {
				t.Logf("B's endpoint from port %d: iterations %v of %d", port, ports[port], n)
			}
			t.Fatalf("leak: conns %d+%d, orphans %d+%d, endpoints %d (start %d: A %v, B %v), goroutines %d (start %d)", sa.Conns, sb.Conns, sa.Orphans, sb.Orphans, ep, baseEP, tcp.EndpointStates(p.a), tcp.EndpointStates(p.b), g, baseG)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if seg.Fifos() != 0 {
		t.Fatalf("%d fifos still allocated", seg.Fifos())
	}
	// Every connection's peer window was followed, and no longer is.
	if wa, wb := tcp.TrackedWindows(p.a), tcp.TrackedWindows(p.b); wa+wb != 0 {
		t.Fatalf("the links still follow %d+%d windows", wa, wb)
	}
	if ua, ub := p.a.Stats().WindowsUntracked, p.b.Stats().WindowsUntracked; ua+ub != 0 {
		t.Fatalf("%d+%d connections' windows were not followed", ua, ub)
	}
}
