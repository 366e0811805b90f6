package daemon

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestTCPListenerSetDeadlineClosedMatchesKernel: SetDeadline of a closed
// listener returns what a closed *net.TCPListener's returns: net.ErrClosed
// itself ("use of closed network connection", no *net.OpError around it:
// TCPListener.SetDeadline hands back the poll error as it is), on the wire
// and on a loopback address alike. (It returned a *net.OpError "set tcp
// ADDR: use of closed network connection", which errors.Is finds
// net.ErrClosed in but err == net.ErrClosed and the text do not.)
func TestTCPListenerSetDeadlineClosedMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "closed"})
	kl := kernelListen(t, rig.A, netip.AddrPortFrom(rig.A.IPv4, 7650).String())
	lns := map[string]net.Listener{
		"kernel":   kl,
		"wire":     listenApp(t, a, "tcp://"+netip.AddrPortFrom(rig.B.IPv4, 7650).String()),
		"loopback": listenApp(t, a, "tcp://127.0.0.1:7650"),
		"both":     listenApp(t, a, "tcp://:7651"),
	}
	form := func(err error) string {
		return fmt.Sprintf("%T %q is net.ErrClosed: %v", err, err, err == net.ErrClosed)
	}
	got := map[string]string{}
	for name, ln := range lns {
		if err := ln.Close(); err != nil {
			t.Fatalf("%s: close: %v", name, err)
		}
		got[name] = form(ln.(deadliner).SetDeadline(time.Now()))
	}
	t.Logf("kernel: %s", got["kernel"])
	for name, g := range got {
		if g != got["kernel"] {
			t.Errorf("%s: SetDeadline after Close: %s; the kernel's: %s", name, g, got["kernel"])
		}
	}
}
