package daemon

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// readUntilConnReset reads c until it fails, and returns the failure unless it
// is ECONNRESET.
func readUntilConnReset(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	for {
		if _, err := c.Read(buf); err != nil {
			if errors.Is(err, syscall.ECONNRESET) {
				return nil
			}
			return err
		}
	}
}

// abortConn closes c with a reset.
func abortConn(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.(*app.Conn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestCutThroughResetUntracksSurvivor: a cut-through session ended by a
// reset leaves no fifos of the surviving end in the daemon's books, however
// the reset came: the other end's abort (SetLinger(0)), its close with
// data it left unread, or its app's death with data unread. The surviving
// app sends no Disconnect for a session the daemon already ended, so the
// reset event is all that can take its end out; before, only the plain
// disconnect event did, and a long-lived server kept an entry per reset
// session until it detached.
func TestCutThroughResetUntracksSurvivor(t *testing.T) {
	const rounds = 20
	ways := []struct {
		name string
		// end resets session c (the dialer's end) / sc (the listener's)
		// from the end that does not survive; cli is the dialer's app.
		end            func(t *testing.T, cli *app.App, c, sc net.Conn)
		serverSurvives bool // else the dialer's end survives
	}{
		{"client aborts", func(t *testing.T, _ *app.App, c, _ net.Conn) { abortConn(t, c) }, true},
		{"server aborts", func(t *testing.T, _ *app.App, _, sc net.Conn) { abortConn(t, sc) }, false},
		{"client closes with unread data", func(t *testing.T, _ *app.App, c, sc net.Conn) {
			if _, err := sc.Write([]byte("unread")); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}, true},
		{"server closes with unread data", func(t *testing.T, _ *app.App, c, sc net.Conn) {
			if _, err := c.Write([]byte("unread")); err != nil {
				t.Fatal(err)
			}
			sc.Close()
		}, false},
		{"client app dies with unread data", func(t *testing.T, cli *app.App, c, sc net.Conn) {
			if _, err := sc.Write([]byte("unread")); err != nil {
				t.Fatal(err)
			}
			cli.Close()
		}, true},
	}
	for _, w := range ways {
		t.Run(w.name, func(t *testing.T) {
			d, srv, cli, ln := streamCutThroughPair(t)
			survivor := srv
			if !w.serverSurvives {
				survivor = cli
			}
			for i := range rounds {
				dialer := cli
				if w.name == "client app dies with unread data" {
					dialer = attach(t, d, app.Options{Name: "cli", RxFifoSize: 4096, TxFifoSize: 4096})
				}
				c, sc := ctStream(t, dialer, ln)
				w.end(t, dialer, c, sc)
				kept := sc
				if !w.serverSurvives {
					kept = c
				}
				if err := readUntilConnReset(kept); err != nil {
					t.Fatalf("round %d: the surviving end's read: %v, want ECONNRESET", i, err)
				}
				kept.Close()
			}
			// The app may read its reset before the daemon's books hear
			// of it.
			end := time.Now().Add(5 * time.Second)
			for n := d.trackedFifos(appIDOf(survivor)); n != 0; n = d.trackedFifos(appIDOf(survivor)) {
				if time.Now().After(end) {
					t.Fatalf("after %d reset sessions, the daemon keeps %d entries of the surviving app's fifos, want 0", rounds, n)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}
