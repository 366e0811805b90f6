package tcp_test

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/tcp"
)

// TestKeepaliveDefault: a dialed Conn and an accepted one start with
// keepalive on at Go's values (15 s, 15 s, 9), as net.Dial and a
// net.Listener's Accept leave a kernel socket; SetKeepalive sets the
// values it is given with keepalive off too, as setsockopt(2) does, and
// keeps those it is not given.
func TestKeepaliveDefault(t *testing.T) {
	p := newPair(t, tcp.Options{}, wireOpts{}, wireOpts{})
	for _, dst := range []netip.Addr{addrB, addrB6} {
		t.Run(dst.String(), func(t *testing.T) {
			_, ac := listen(t, p.b, netip.AddrPortFrom(dst, 81), fifoSize)
			client, server := dial(t, p, ac, netip.AddrPortFrom(dst, 81), fifoSize)
			want := tcp.Keepalive{Enabled: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 9}
			for name, c := range map[string]*tcp.Conn{"dialed": client.getConn(), "accepted": server.getConn()} {
				if got := tcp.KeepaliveOf(c); got != want {
					t.Errorf("%s: keepalive %+v, want %+v", name, got, want)
				}
				if err := c.SetKeepalive(tcp.Keepalive{Idle: 5 * time.Second}); err != nil {
					t.Fatal(err)
				}
				if got, want := tcp.KeepaliveOf(c), (tcp.Keepalive{Idle: 5 * time.Second, Interval: 15 * time.Second, Count: 9}); got != want {
					t.Errorf("%s: keepalive %+v after turning it off with an idle time, want %+v", name, got, want)
				}
			}
			// Past Linux's bounds: refused, nothing changed (a
			// probe every nanosecond would flood the peer).
			c := client.getConn()
			before := tcp.KeepaliveOf(c)
			for _, k := range []tcp.Keepalive{
				{Enabled: true, Idle: time.Nanosecond}, {Enabled: true, Interval: time.Millisecond},
				{Enabled: true, Idle: 32768 * time.Second}, {Enabled: true, Count: 1 << 20},
			} {
				if err := c.SetKeepalive(k); !errors.Is(err, syscall.EINVAL) {
					t.Errorf("keepalive %+v: %v, want EINVAL", k, err)
				}
			}
			if got := tcp.KeepaliveOf(c); got != before {
				t.Errorf("keepalive %+v after refused settings, want %+v", got, before)
			}
			client.getConn().Abort()
			<-client.closed
			<-server.closed
		})
	}
}
