package tcp_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestPushTxDuringTransfer moves both tx fifos with PushTx from other
// goroutines, as workers do, while the pumps run the Conns: 8 MiB each way
// arrive exact (the race detector watches the Conns' fields), and some of
// the data did leave through PushTx.
func TestPushTxDuringTransfer(t *testing.T) {
	n := int64(8 << 20)
	if testing.Short() {
		n = 2 << 20
	}
	p, client, server := connectedPair(t, fifoSize)
	stop := make(chan struct{})
	var pushed atomic.Int64
	var wg sync.WaitGroup
	for _, a := range []*app{client, server} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := a.getConn()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c.PushTx() {
					pushed.Add(1)
				}
				time.Sleep(20 * time.Microsecond)
			}
		}()
	}
	transfer(t, p, client, server, n)
	close(stop)
	wg.Wait()
	if pushed.Load() == 0 {
		t.Fatal("PushTx never ran while the pumps were idle")
	}
	t.Logf("PushTx ran %d times", pushed.Load())
}

// TestPushTxLeavesTheRestToThePump: after the peer's reset, whichever of
// PushTx and the pump meets it first, the Conn ends on its pump with
// ECONNRESET (an error PushTx meets is handed to the pump, not lost: gVisor
// reports a reset to one write only), and PushTx does nothing on the ended
// Conn.
func TestPushTxLeavesTheRestToThePump(t *testing.T) {
	_, client, server := connectedPair(t, fifoSize)

	// The peer resets; the client's next write meets the reset in PushTx.
	server.getConn().Abort()
	recvOrFail(t, server.closed, 5*time.Second, "server closed")
	c := client.getConn()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := client.appTx.Enqueue([]byte("after the reset")); err != nil {
			t.Fatal(err)
		}
		if !c.PushTx() {
			break // the pump has it, or it ended the Conn already
		}
		select {
		case err := <-client.reset:
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("reset reported as %v, want ECONNRESET", err)
			}
			recvOrFail(t, client.closed, 5*time.Second, "client closed")
			if c.PushTx() {
				t.Fatal("PushTx ran on an ended Conn")
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no reset after PushTx met it")
		}
	}
	err := recvOrFail(t, client.reset, 5*time.Second, "client reset")
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reset reported as %v, want ECONNRESET", err)
	}
}

// TestPushTxNotWhileClosing: after Close, PushTx leaves the Conn to the pump.
func TestPushTxNotWhileClosing(t *testing.T) {
	_, client, _ := connectedPair(t, fifoSize)
	c := client.getConn()
	if _, err := client.appTx.Enqueue([]byte("x")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c.PushTx() {
		t.Fatal("PushTx ran on a closing Conn")
	}
}
