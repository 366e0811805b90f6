package tcp_test

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/tcp"
)

// TestResetAheadCloseWriteKeepsData: a CloseWrite asked for after the
// peer's reset, while gVisor still holds data received before it (the
// Handler was told: ResetAhead), sends nothing and ends nothing early:
// the data goes into the rx fifo as the app drains it and the Conn ends
// with ECONNRESET, as a kernel socket's shutdown(SHUT_WR) after an RST
// fails with ENOTCONN and leaves its reads the data queued before it.
func TestResetAheadCloseWriteKeepsData(t *testing.T) {
	const n = 256 << 10
	_, client, server := connectedPair(t, 64<<10)
	sc := server.getConn()
	hs := sendUnread(t, client, server, n, 11)
	client.getConn().Abort()
	recvOrFail(t, client.closed, 5*time.Second, "the client's Closed")
	for end := time.Now().Add(5 * time.Second); server.resetsAhead.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("no ResetAhead; the server's connection is in %s", sc.Info().State)
		}
	}
	sc.CloseWrite()
	time.Sleep(50 * time.Millisecond) // the pump acts on the CloseWrite

	hr := newHash()
	if got := drain(t, server, hr); got != n || !bytes.Equal(hs.Sum(nil), hr.Sum(nil)) {
		t.Errorf("the server's app read %d of %d bytes, sha256 equal %v", got, n, bytes.Equal(hs.Sum(nil), hr.Sum(nil)))
	}
	if err := recvOrFail(t, server.reset, 5*time.Second, "the server's Reset"); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("reset reported as %v, want ECONNRESET", err)
	}
}

// TestResetAfterFINDeliversHeldData: the peer sends, closes its half
// (FIN) and then resets the connection while gVisor still holds what it
// sent (the app's rx fifo full): gVisor's endpoint goes to CLOSE (a reset
// in CLOSE-WAIT). The app's next write meets it; the Handler hears of it
// at once (ResetAhead, EPIPE), what was received before still goes into
// the rx fifo, and the Conn ends with EPIPE after, as Linux's tcp_reset in
// CLOSE_WAIT fails the writes with EPIPE and leaves its reads every byte
// queued, then the end of stream.
func TestResetAfterFINDeliversHeldData(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write bool // the app queues data to send after the reset came
	}{{"idle", false}, {"write after", true}} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 256 << 10
			_, client, server := connectedPair(t, 64<<10)
			sc := server.getConn()
			hs := newHash()
			sent := make(chan error, 1)
			go func() { sent <- client.send(n, 13, hs, 16<<10) }()
			if err := recvOrFail(t, sent, 10*time.Second, "the client's send"); err != nil {
				t.Fatal(err)
			}
			client.getConn().CloseWrite()
			for end := time.Now().Add(10 * time.Second); server.appRx.MaxDequeue()+sc.Info().RecvQ < n || sc.Info().State != "CLOSE-WAIT"; time.Sleep(time.Millisecond) {
				if time.Now().After(end) {
					t.Fatalf("rx fifo %d, gVisor %d of %d bytes, %s", server.appRx.MaxDequeue(), sc.Info().RecvQ, n, sc.Info().State)
				}
			}
			client.getConn().Abort()
			recvOrFail(t, client.closed, 5*time.Second, "the client's Closed")
			for end := time.Now().Add(5 * time.Second); sc.Info().State != "CLOSED"; time.Sleep(time.Millisecond) {
				if time.Now().After(end) {
					t.Fatalf("the server's connection is in %s after the peer's reset", sc.Info().State)
				}
			}
			if tc.write {
				if _, err := server.appTx.Enqueue([]byte("after the reset")); err != nil {
					t.Fatal(err)
				}
				server.appTx.SetEvent()
				sc.Kick()
			}
			// The Handler hears of the reset while the data waits.
			for end := time.Now().Add(5 * time.Second); server.resetsAhead.Load() == 0 && time.Now().Before(end); {
				time.Sleep(time.Millisecond)
			}
			if server.resetsAhead.Load() == 0 {
				t.Errorf("no ResetAhead after a reset in CLOSE-WAIT with data held")
			}
			hr := newHash()
			if got := drain(t, server, hr); got != n || !bytes.Equal(hs.Sum(nil), hr.Sum(nil)) {
				t.Errorf("the server's app read %d of %d bytes, sha256 equal %v", got, n, bytes.Equal(hs.Sum(nil), hr.Sum(nil)))
			}
			if err := recvOrFail(t, server.reset, 5*time.Second, "the server's Reset"); !errors.Is(err, syscall.EPIPE) {
				t.Errorf("reset reported as %v, want EPIPE", err)
			}
		})
	}
}

var _ tcp.Handler = (*app)(nil)
