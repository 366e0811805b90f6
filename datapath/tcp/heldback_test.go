package tcp_test

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/tcp"
	"github.com/xsessiond/xsessiond/fifo"
)

// heldBack is an app that never takes a connection: its backlog is full.
type heldBack struct{}

func (heldBack) Accept(*tcp.Conn) (*fifo.Fifo, *fifo.Fifo, tcp.Handler, error) {
	return nil, nil, nil, tcp.ErrClosed
}
func (heldBack) ListenerClosed(*tcp.Listener) {}
func (heldBack) Backlogged() bool             { return true }

// TestHeldBackAcceptQueueBuffers: the connections gVisor queues while the
// app's backlog is full hold what their peers send before any bound
// counts it; until the Listener takes them they have Linux's default
// receive buffer (128 KiB), not the Stack's (1 MiB), so that a listener
// whose app stopped taking connections holds at most that much of each
// peer's data. Before, each held half a megabyte of it.
func TestHeldBackAcceptQueueBuffers(t *testing.T) {
	p := newPair(t, tcp.Options{}, wireOpts{}, wireOpts{})
	l, err := p.b.Listen(netip.AddrPortFrom(addrB, 82), 64, 1, heldBack{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const conns = 16
	var clients []*app
	var wg sync.WaitGroup
	for range conns {
		c, _, err := dialFrom(t, p, netip.AddrPortFrom(addrA, 0), netip.AddrPortFrom(addrB, 82), fifoSize)
		if err != nil {
			t.Fatal(err)
		}
		recvOrFail(t, c.connected, 5*time.Second, "connect")
		clients = append(clients, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.send(4<<20, 1, newHash(), 64<<10) // ends when the Conn does
		}()
	}
	// The peers send until the windows of the queued connections close.
	var acked int64
	for prev := int64(-1); acked != prev; time.Sleep(300 * time.Millisecond) {
		prev, acked = acked, 0
		for _, c := range clients {
			in := c.getConn().Info()
			acked += int64(in.TxBytes) - int64(in.SendQ)
		}
	}
	for _, c := range clients {
		c.getConn().Abort()
	}
	wg.Wait()
	t.Logf("%d connections queued by a held-back listener took %d bytes of their peers' data, %d each", conns, acked, acked/conns)
	if acked <= 0 {
		t.Fatal("the queued connections took nothing: the test sees nothing")
	}
	if bound := int64(conns) * 128 << 10; acked > bound {
		t.Fatalf("the queued connections took %d bytes of their peers' data, more than %d (128 KiB each)", acked, bound)
	}
}
