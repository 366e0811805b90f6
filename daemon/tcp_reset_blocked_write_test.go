package daemon

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
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
	kln := kernelListen(t, rig.B, ":7631")
	aln, err := a.Listen("tcp://0.0.0.0:7632")
	if err != nil {
		t.Fatal(err)
	}
	defer aln.Close()
	for _, c := range []struct {
		name string
		ln   net.Listener
		port uint16
	}{{"kernel", kln, 7631}, {"xsessiond", aln, 7632}} {
		t.Run(c.name, func(t *testing.T) {
			copied := make(chan error, 1)
			go func() {
				sc, err := c.ln.Accept()
				if err != nil {
					copied <- err
					return
				}
				defer sc.Close()
				_, err = io.Copy(sc, sc)
				copied <- err
			}()
			var kc net.Conn
			if err := rig.A.Do(func() (err error) {
				kc, err = net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, c.port).String(), 5*time.Second)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			tc := kc.(*net.TCPConn)
			tc.SetReadBuffer(4096)
			// Send without reading until the writes stall: the server's
			// echo is blocked on a window that stays shut.
			var sent atomic.Int64
			go func() {
				buf := make([]byte, 16<<10)
				for {
					n, err := tc.Write(buf)
					sent.Add(int64(n))
					if err != nil {
						return
					}
				}
			}()
			last, since := int64(-1), time.Now()
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				if n := sent.Load(); n != last {
					last, since = n, time.Now()
				} else if time.Since(since) > 500*time.Millisecond {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the client's writes never stalled (%d bytes sent)", sent.Load())
				}
			}
			select {
			case err := <-copied:
				t.Fatalf("the echo ended before the reset: %v", err)
			default:
			}
			tc.SetLinger(0)
			tc.Close()
			reset := time.Now()
			select {
			case err := <-copied:
				t.Logf("%s: the echo of %d bytes sent ended %v after the reset: %v", c.name, last, time.Since(reset).Round(time.Millisecond), err)
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("%s: the blocked echo ended with %v, want ECONNRESET", c.name, err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("%s: the echo's write, blocked when the client reset the connection, still waits 5 s after (%d bytes sent)", c.name, last)
			}
		})
	}
}
