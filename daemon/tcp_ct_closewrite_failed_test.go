package daemon

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// TestTCPCloseWriteFailedIsNotDone: a CloseWrite whose request the daemon
// did not answer in time fails, and the next CloseWrite asks again rather
// than succeed: as shutdown(SHUT_WR) of a kernel socket, a CloseWrite
// returns nil only once the FIN is on its way, which the peer then reads
// as io.EOF. (The daemon is held off by its lock, behind a Disconnect of
// another session of the app, which waits for it.) Before, the second
// CloseWrite returned nil at once, the peer having no FIN.
func TestTCPCloseWriteFailedIsNotDone(t *testing.T) {
	d, cli, ln := streamCutThroughApps(t)
	c, peer := ctStream(t, cli, ln)
	defer c.Close()
	defer peer.Close()
	other, otherPeer := ctStream(t, cli, ln)
	defer otherPeer.Close()

	held := true
	d.mu.Lock()
	defer func() {
		if held {
			d.mu.Unlock()
		}
	}()
	closed := make(chan error, 1)
	go func() { closed <- other.Close() }()
	time.Sleep(100 * time.Millisecond) // its Disconnect is the daemon's
	cw := c.(interface{ CloseWrite() error })
	if err := cw.CloseWrite(); err == nil {
		t.Fatal("CloseWrite succeeded with the daemon held off")
	}
	// No FIN went out: the second CloseWrite must not say one did.
	err := cw.CloseWrite()
	peer.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	n, rerr := peer.Read(make([]byte, 4))
	if err == nil && !errors.Is(rerr, io.EOF) {
		t.Fatalf("the second CloseWrite returned nil, and the peer's read has no FIN: %d, %v", n, rerr)
	}
	if !errors.Is(rerr, os.ErrDeadlineExceeded) {
		t.Fatalf("the peer's read while the daemon is held off: %d, %v; want a timeout", n, rerr)
	}

	d.mu.Unlock()
	held = false
	<-closed // failed too, its Disconnect unanswered as long
	if err := cw.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite with the daemon answering: %v", err)
	}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := peer.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Fatalf("the peer's read after the CloseWrite: %d, %v; want io.EOF", n, err)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Errorf("CloseWrite after a CloseWrite: %v, want nil, as shutdown(SHUT_WR) again", err)
	}
}
