package nsbind

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestNoRouteError checks that a destination without a route fails once
// with "no route to destination", as ErrNoRoute and syscall.ENETUNREACH.
func TestNoRouteError(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	ns := openNamed(t, p.B.Name)
	for _, d := range []string{"192.0.2.1", "2001:db8::1"} {
		_, err := ns.RouteGet(netip.MustParseAddr(d))
		if !errors.Is(err, ErrNoRoute) || !errors.Is(err, syscall.ENETUNREACH) {
			t.Errorf("route to %s: %v, want ErrNoRoute and ENETUNREACH", d, err)
			continue
		}
		msg := err.Error()
		if strings.Count(msg, "no route") != 1 || strings.Contains(msg, "unreachable") {
			t.Errorf("route to %s: %q says the route problem more than once", d, msg)
		}
	}
}
