package daemon

import (
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestTCPResetWakesBlockedWriterMatchesKernel: an echo server (io.Copy of
// the connection into itself) whose client sends without reading blocks
// in its write, with the client's bytes still unread behind it; when the
// client then resets the connection (SO_LINGER 0), a kernel server's
// write fails with ECONNRESET at once. So must an app's on the datapath,
// whose reads would give the bytes received before the reset first: a
// writer left waiting for room that never comes holds the connection,
// its fifos and the daemon's buffers until the app stops.
func TestTCPResetWakesBlockedWriterMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "echo"})
	for _, c := range kernelAndApp(t, rig, a, 7631) {
		t.Run(c.name, func(t *testing.T) {
			copied := make(chan error, 1)
			kc, conn := c.connect(t, rig)
			sc := &writeWatch{Conn: conn}
			go func() {
				_, err := io.Copy(sc, sc)
				copied <- err
			}()
			// The client sends without reading until its writes stall:
			// the server's echo is blocked on a window that stays shut.
			acked := stallSending(t, kc, sc)
			select {
			case err := <-copied:
				t.Fatalf("the echo ended before the reset: %v", err)
			default:
			}
			kc.SetLinger(0)
			kc.Close()
			reset := time.Now()
			select {
			case err := <-copied:
				t.Logf("%s: the echo of %d bytes received ended %v after the reset: %v", c.name, acked, time.Since(reset).Round(time.Millisecond), err)
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("%s: the blocked echo ended with %v, want ECONNRESET", c.name, err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("%s: the echo's write, blocked when the client reset the connection, still waits 5 s after (%d bytes received)", c.name, acked)
			}
		})
	}
}
