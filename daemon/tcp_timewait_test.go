package daemon

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestTCPTimeWaitBound: connections an app closes first wait in TIME-WAIT
// (shown as lingering in show stats and show sessions); past
// tcp.max_time_wait the oldest is ended early and counted, as Linux does
// past tcp_max_tw_buckets, and a kernel client reusing an ended one's
// 4-tuple at once gets a new connection. (TestTCPResetFreesPort: the port
// of a connection whose peer closed first is free at once.)
func TestTCPTimeWaitBound(t *testing.T) {
	const bound, conns = 4, 10
	rig, d := tcpRig(t, func(o *Config) {
		o.Datapath.TCP.MaxTimeWait = bound
		o.MetricsAddr = "127.0.0.1:0"
	})
	a := attach(t, d, app.Options{Name: "tw"})
	ln := listenApp(t, a, "tcp://0.0.0.0:7240")
	// The server writes a line and closes first: TIME-WAIT on B.
	go serveEach(ln, func(c net.Conn) { _, _ = c.Write([]byte("bye\n")) })
	// dial connects from host A (from local, when valid) and reads to EOF.
	dial := func(local netip.AddrPort) netip.AddrPort {
		t.Helper()
		var got netip.AddrPort
		if err := rig.A.Do(func() error {
			nd := net.Dialer{Timeout: 10 * time.Second}
			if local.IsValid() {
				nd.LocalAddr = net.TCPAddrFromAddrPort(local)
			}
			c, err := nd.Dial("tcp", netip.AddrPortFrom(rig.B.IPv4, 7240).String())
			if err != nil {
				return err
			}
			defer c.Close()
			got = c.LocalAddr().(*net.TCPAddr).AddrPort()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "bye\n" {
				t.Errorf("read %q, %v; want the server's line, then EOF", b, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	var first netip.AddrPort
	for i := range conns {
		l := dial(netip.AddrPort{})
		if i == 0 {
			first = l
		}
	}
	tcpStats := func() *TCPEngineStats { return d.Stats().TCP }
	end := time.Now().Add(5 * time.Second)
	for s := tcpStats(); s.Lingering != bound || s.TimeWaitOverflow != conns-bound; s = tcpStats() {
		if time.Now().After(end) {
			t.Fatalf("%d lingering, %d ended early; want %d, %d", s.Lingering, s.TimeWaitOverflow, bound, conns-bound)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := tcpStats(); s.Connections != 0 {
		t.Errorf("%d connections open, want 0", s.Connections)
	}
	if _, ok := tcpSession(d, first.String()); ok {
		t.Errorf("the oldest connection (from %v) still lingers past the bound", first)
	}
	if v := metric(t, scrape(t, d.MetricsAddr()), "xsessiond_tcp_time_wait_overflow_total"); v != conns-bound {
		t.Errorf("xsessiond_tcp_time_wait_overflow_total %v, want %d", v, conns-bound)
	}
	// The oldest connection's 4-tuple is gVisor's no more: the kernel
	// client may open it again (its own side was never in TIME-WAIT).
	if again := dial(first); again != first {
		t.Errorf("dialed from %v, got %v", first, again)
	}
}
