package daemon

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestTCPCutThroughCloseWakesCallsAtOnce: the Close of a cut-through TCP
// session wakes a Read and a Write waiting in other goroutines with
// net.ErrClosed at once, as the Close of a kernel TCP connection does
// (checked here on loopback), also while the daemon is slow to answer
// Close's Disconnect (held off here by its lock). Before, they returned
// only when Close did, after its round trip to the daemon (up to 5 s).
func TestTCPCutThroughCloseWakesCallsAtOnce(t *testing.T) {
	// blocked starts a Read and a Write of c that wait (nothing to read,
	// no room: the peer neither writes nor reads), runs stop, and wants
	// both to end with net.ErrClosed within a second.
	blocked := func(t *testing.T, c net.Conn, stop func()) {
		t.Helper()
		errc := make(chan error, 2)
		go func() {
			_, err := c.Read(make([]byte, 16))
			errc <- err
		}()
		go func() {
			_, err := c.Write(make([]byte, 16<<20))
			errc <- err
		}()
		time.Sleep(100 * time.Millisecond)
		select {
		case err := <-errc:
			t.Fatalf("a call did not wait: %v", err)
		default:
		}
		stop()
		for range 2 {
			select {
			case err := <-errc:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("a waiting call ended with %v, want net.ErrClosed", err)
				}
			case <-time.After(time.Second):
				t.Fatal("a waiting call did not return within a second of the Close")
			}
		}
	}

	t.Run("kernel", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		peer, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		blocked(t, c, func() { c.Close() })
	})

	t.Run("cut-through", func(t *testing.T) {
		d, cli, ln := streamCutThroughApps(t)
		peer, c := ctStream(t, cli, ln)
		defer peer.Close()
		closed := make(chan error, 1)
		held := true
		d.mu.Lock()
		defer func() {
			if held {
				d.mu.Unlock()
			}
		}()
		blocked(t, c, func() { go func() { closed <- c.Close() }() })
		d.mu.Unlock()
		held = false
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("close: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the close did not return")
		}
	})
}
