package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestDialPortOutOfRangeMatchesKernel: a Dial whose port is out of
// 0-65535 fails as net.Dial does, with a *net.AddrError "invalid port"
// naming the port as written under the *net.OpError of the dial, whether
// the host is an address or a name, as Listen's does (app/doc.go).
func TestDialPortOutOfRangeMatchesKernel(t *testing.T) {
	d := startDaemon(t)
	a := attach(t, d, app.Options{Name: "dialer"})
	shape := func(err error) string {
		if err == nil {
			return "no error"
		}
		var oe *net.OpError
		if !errors.As(err, &oe) {
			return fmt.Sprintf("%T, no *net.OpError", err)
		}
		var ae *net.AddrError
		if !errors.As(err, &ae) {
			return fmt.Sprintf("*net.OpError %q, no *net.AddrError", oe.Op)
		}
		return fmt.Sprintf("*net.OpError %q *net.AddrError %q %q", oe.Op, ae.Err, ae.Addr)
	}
	for _, network := range []string{"tcp", "udp"} {
		for _, hostport := range []string{"127.0.0.1:70000", "[::1]:65536", "localhost:99999"} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := a.Dial(ctx, network+"://"+hostport)
			cancel()
			if c != nil {
				c.Close()
			}
			_, kerr := net.DialTimeout(network, hostport, 5*time.Second)
			if got, want := shape(err), shape(kerr); got != want {
				t.Errorf("dial %s://%s: %s (%v); net.Dial: %s (%v)", network, hostport, got, err, want, kerr)
			}
		}
	}
}
