package tcp_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/tcp"
	"github.com/xsessiond/xsessiond/fifo"
)

// TestCloseToSlowReader: an app that closes with its tx fifo and gVisor's
// send buffer full, to a peer that reads steadily but takes longer than
// CloseTimeout for the rest, gets it all delivered and then the FIN, as
// from Linux, which keeps sending to such a peer: the close's deadline
// moves while the peer takes data. Only a peer that takes nothing for
// CloseTimeout is reset (TestOrphanBuffers).
func TestCloseToSlowReader(t *testing.T) {
	// The client's tx fifo holds more than the peer takes in a
	// CloseTimeout; the peer's rx fifo little.
	const txFifo, rxFifo = 512 << 10, 16 << 10
	// A peer that takes less than the tx fifo holds in CloseTimeout, its
	// window updates coming more often than that.
	p := newPairOpts(t, tcp.Options{CloseTimeout: time.Second, SendBuffer: 128 << 10},
		tcp.Options{ReceiveBuffer: 64 << 10}, wireOpts{}, wireOpts{})
	_, ac := listen(t, p.b, netip.AddrPortFrom(addrB, 80), rxFifo)
	client, server := dial(t, p, ac, netip.AddrPortFrom(addrB, 80), txFifo)
	// The client writes until its tx fifo stays full (the peer's
	// receive buffer, the client's send buffer and its tx fifo hold all
	// they take: the peer reads nothing yet), then closes.
	sent := newHash()
	var n int64
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		buf := make([]byte, 16<<10)
		for idle := time.Duration(0); idle < 300*time.Millisecond; {
			m, _ := client.appTx.Enqueue(buf)
			if m == 0 {
				time.Sleep(10 * time.Millisecond)
				idle += 10 * time.Millisecond
				continue
			}
			idle = 0
			sent.Write(buf[:m])
			n += int64(m)
			if client.appTx.SetEvent() {
				client.getConn().Kick()
			}
			buf[0]++
		}
		client.getConn().Close()
	}()
	<-closed
	// The peer reads 4 KiB every 10 ms: the rest takes many
	// CloseTimeouts, with data moving all along.
	got := newHash()
	buf := make([]byte, 4<<10)
	var k int64
	fin := false
	var slowFor time.Duration
	for {
		m, err := server.appRx.Dequeue(buf)
		if m > 0 {
			got.Write(buf[:m])
			k += int64(m)
			if server.appRx.DeqNotify(m) {
				server.getConn().Kick()
			}
			time.Sleep(10 * time.Millisecond)
			slowFor += 10 * time.Millisecond
			continue
		}
		if !errors.Is(err, fifo.ErrEmpty) {
			t.Fatalf("read after %d of %d bytes: %v", k, n, err)
		}
		if fin {
			break
		}
		server.appRx.ClearEvent()
		if server.appRx.MaxDequeue() > 0 {
			continue
		}
		select {
		case <-server.readable:
		case <-server.peerClosed:
			fin = true
		case err := <-server.reset:
			t.Fatalf("the peer was reset (%v) after reading %d of %d bytes, %v of them after the close", err, k, n, slowFor)
		case <-time.After(10 * time.Second):
			t.Fatalf("the peer's read stalled at %d of %d bytes", k, n)
		}
	}
	if k != n || !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatalf("the peer read %d of %d bytes, the same: %v", k, n, bytes.Equal(got.Sum(nil), sent.Sum(nil)))
	}
	t.Logf("%d bytes, read over %v after the close (CloseTimeout 1s)", n, slowFor)
	if st := p.a.Stats(); st.ResetsSent != 0 {
		t.Errorf("the closing side sent %d resets", st.ResetsSent)
	}
}
