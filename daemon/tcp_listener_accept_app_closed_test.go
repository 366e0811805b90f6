package daemon

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestTCPListenerAcceptAppClosedMatchesKernel: a listener closed by its
// App's Close is closed as by its own: Accept, those waiting and those
// called after, fails as a closed *net.TCPListener's does, "accept tcp
// ADDR: use of closed network connection" with net.ErrClosed itself
// under the *net.OpError, so that a program that matches that text or
// compares OpError.Err with net.ErrClosed ends its accept loop as on a
// kernel listener. (Accept called after the App's Close failed with
// "xsession: app closed", and a waiting one with either text, the
// listener's or the App's, as a select chose.)
func TestTCPListenerAcceptAppClosedMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	kl := kernelListen(t, rig.A, netip.AddrPortFrom(rig.A.IPv4, 7660).String())
	form := func(ln net.Listener, err error) string {
		oe, ok := err.(*net.OpError)
		return strings.ReplaceAll(err.Error(), ln.Addr().String(), "ADDR") + " OpError.Err is net.ErrClosed: " + map[bool]string{true: "yes", false: "no"}[ok && oe.Err == net.ErrClosed]
	}
	kl.Close()
	_, err := kl.Accept()
	want := form(kl, err)
	t.Logf("kernel: %s", want)
	for round := range 20 {
		a := attach(t, d, app.Options{Name: "closing"})
		var lns []net.Listener
		for _, uri := range []string{"tcp://" + netip.AddrPortFrom(rig.B.IPv4, 7660).String(), "tcp://127.0.0.1:7661", "tcp://:7662"} {
			ln, err := a.Listen(uri)
			if err != nil {
				t.Fatal(err)
			}
			lns = append(lns, ln)
		}
		type res struct {
			ln  net.Listener
			err error
		}
		waiting := make(chan res, 4*len(lns))
		for _, ln := range lns {
			for range 4 {
				go func() { _, err := ln.Accept(); waiting <- res{ln, err} }()
			}
		}
		time.Sleep(20 * time.Millisecond)
		a.Close()
		for range 4 * len(lns) {
			select {
			case r := <-waiting:
				if got := form(r.ln, r.err); got != want {
					t.Fatalf("round %d: Accept waiting on %v as the App closed: %s; the kernel's: %s", round, r.ln.Addr(), got, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: an Accept still waits 5s after the App closed", round)
			}
		}
		for _, ln := range lns {
			_, err := ln.Accept()
			if got := form(ln, err); got != want {
				t.Fatalf("round %d: Accept on %v after the App closed: %s; the kernel's: %s", round, ln.Addr(), got, want)
			}
		}
	}
}
