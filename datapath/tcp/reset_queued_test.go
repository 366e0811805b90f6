package tcp_test

import (
	"bytes"
	"errors"
	"hash"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/fifo"
)

// TestResetDeliversQueuedData: a peer that resets the connection while the
// app's rx fifo is full does not take back what it sent before: what gVisor
// received goes into the rx fifo as the app drains it, and the Conn ends
// with ECONNRESET after, as a Linux socket returns every byte queued
// before the RST to its reads and ECONNRESET next. With data of the app's
// waiting in the tx fifo too (the write meets the reset first), the same.
func TestResetDeliversQueuedData(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pending bool // the app queued data to send after the reset came
	}{{"idle", false}, {"tx pending", true}} {
		t.Run(tc.name, func(t *testing.T) {
			const small = 64 << 10
			const n = 256 << 10
			_, client, server := connectedPair(t, small)
			sc := server.getConn()

			// The server's app reads nothing: its rx fifo fills, and
			// gVisor holds the rest.
			hs := sendUnread(t, client, server, n, 7)
			client.getConn().Abort()
			recvOrFail(t, client.closed, 5*time.Second, "the client's Closed")
			for end := time.Now().Add(5 * time.Second); sc.Info().State != "ERROR"; time.Sleep(time.Millisecond) {
				if time.Now().After(end) {
					t.Fatalf("the server's connection is in %s after the peer's reset", sc.Info().State)
				}
			}
			if tc.pending {
				if _, err := server.appTx.Enqueue([]byte("after the reset")); err != nil {
					t.Fatal(err)
				}
				server.appTx.SetEvent()
				sc.Kick()
			}
			// Give the pump time to act on the reset before the app reads.
			time.Sleep(50 * time.Millisecond)

			hr := newHash()
			got := drain(t, server, hr)
			if got != n || !bytes.Equal(hs.Sum(nil), hr.Sum(nil)) {
				t.Fatalf("the server's app read %d of %d bytes, sha256 equal %v", got, n, bytes.Equal(hs.Sum(nil), hr.Sum(nil)))
			}
			if err := recvOrFail(t, server.reset, 5*time.Second, "the server's Reset"); !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("reset reported as %v, want ECONNRESET", err)
			}
			recvOrFail(t, server.closed, 5*time.Second, "the server's Closed")
			select {
			case <-server.peerClosed:
				t.Fatal("PeerClosed on a connection the peer reset")
			default:
			}
		})
	}
}

// drain reads a's rx fifo into h until the Conn is Closed and the fifo is
// empty, and returns the bytes read.
func drain(t *testing.T, a *app, h hash.Hash) int64 {
	t.Helper()
	buf := make([]byte, 4<<10)
	var got int64
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		k, err := a.appRx.Dequeue(buf)
		if k > 0 {
			h.Write(buf[:k])
			got += int64(k)
			if a.appRx.DeqNotify(k) {
				a.getConn().Kick()
			}
			continue
		}
		if !errors.Is(err, fifo.ErrEmpty) {
			t.Fatal(err)
		}
		select {
		case <-a.closed:
			if a.appRx.MaxDequeue() == 0 {
				return got
			}
		case <-time.After(time.Millisecond):
		}
	}
	t.Fatalf("the Conn did not end; %d bytes read", got)
	return got
}

// sendUnread has client send n bytes (of seed) to server, whose app reads
// none, and waits until the server's rx fifo and gVisor hold them all; it
// returns the hash of what was sent.
func sendUnread(t *testing.T, client, server *app, n int64, seed uint64) hash.Hash {
	t.Helper()
	sc := server.getConn()
	hs := newHash()
	sent := make(chan error, 1)
	go func() { sent <- client.send(n, seed, hs, 16<<10) }()
	if err := recvOrFail(t, sent, 10*time.Second, "the client's send"); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); int64(server.appRx.MaxDequeue()+sc.Info().RecvQ) < n; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("rx fifo %d, gVisor %d of %d bytes", server.appRx.MaxDequeue(), sc.Info().RecvQ, n)
		}
	}
	return hs
}
