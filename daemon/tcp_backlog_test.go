package daemon

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/datapath"
)

// TestTCPListenerBacklog: a listener whose app does not call Accept (from
// the start: the app library says protocol 2.2, which promises to mark
// what Accept takes) holds at most its backlog of connections in the
// daemon's hands (and as many in gVisor's accept queue); the SYNs of
// further kernel clients are dropped and counted as refused (backlog), as
// a kernel listener's full accept queue drops them, and they connect once
// the app accepts. (The daemon handed every connection over until the
// app's fifo memory ran out: an app that never accepted held 1,984.)
func TestTCPListenerBacklog(t *testing.T) {
	const backlog = 4
	rig, d := tcpRig(t, func(o *Config) {
		o.Datapath.TCP.Backlog = backlog
		o.MetricsAddr = "127.0.0.1:0"
	})
	a := attach(t, d, app.Options{Name: "slow"})
	ln := listenApp(t, a, "tcp://0.0.0.0:7280")
	dial := func(timeout time.Duration) (net.Conn, error) {
		var c net.Conn
		err := rig.A.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, 7280).String(), timeout)
			return err
		})
		return c, err
	}
	connected := 0
	var held []net.Conn
	for range 20 {
		c, err := dial(300 * time.Millisecond)
		if err != nil {
			continue // its SYNs dropped
		}
		connected++
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	t.Logf("%d of 20 connected while the app did not accept", connected)
	if connected < backlog || connected > 2*backlog+1 {
		t.Errorf("%d of 20 connected while the app did not accept; want %d..%d (the backlog in the daemon and in gVisor's queue)", connected, backlog, 2*backlog+1)
	}
	if v := metric(t, scrape(t, d.MetricsAddr()), `xsessiond_tcp_refused_total{namespace="default",reason="backlog"}`); v == 0 {
		t.Error("no connection counted as refused for the backlog")
	}
	// show listeners tells it: the backlog untaken, the refusals.
	lv := listenerTCP(t, d, "tcp://0.0.0.0:7280")
	if lv.Backlog != backlog || lv.Untaken != backlog || lv.Refused["backlog"] == 0 {
		t.Errorf("show listeners: backlog %d, untaken %d, refused %v; want %d, %d, some for the backlog", lv.Backlog, lv.Untaken, lv.Refused, backlog, backlog)
	}
	// The app accepts: every held connection comes, and a new client
	// connects.
	for i := range connected {
		ln.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(5 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("accept %d of %d held: %v", i+1, connected, err)
		}
		defer c.Close()
	}
	c, err := dial(10 * time.Second)
	if err != nil {
		t.Fatalf("a client once the app accepted again: %v", err)
	}
	c.Close()
	if lv := listenerTCP(t, d, "tcp://0.0.0.0:7280"); lv.Untaken > 1 {
		t.Errorf("show listeners: %d untaken after the app accepted all but the last client's", lv.Untaken)
	}
	// The listener closes: the namespace's refusals, its own among them,
	// never go down meanwhile (a Prometheus counter that went down reads
	// as a reset; they were missing while gVisor's listener closed).
	refused := func() uint64 {
		if ns := d.Engine().TCPNamespaceStats()[""]; ns != nil {
			return ns.Refused[datapath.TCPRefusedBacklog]
		}
		return 0
	}
	before := refused()
	t.Logf("backlog refusals before the close: %d", before)
	done := make(chan struct{})
	low := make(chan uint64, 1)
	go func() {
		defer close(low)
		for {
			select {
			case <-done:
				return
			default:
			}
			if v := refused(); v < before {
				low <- v
				return
			}
		}
	}()
	ln.Close()
	time.Sleep(200 * time.Millisecond)
	close(done)
	if v, ok := <-low; ok {
		t.Errorf("the namespace's backlog refusals went from %d to %d as the listener closed", before, v)
	}
	if after := refused(); after != before {
		t.Errorf("the namespace's backlog refusals %d after the listener closed, %d before", after, before)
	}
}

// listenerTCP returns the TCP part of the listener of uri as show
// listeners tells it.
func listenerTCP(t *testing.T, d *Daemon, uri string) ListenerTCPView {
	t.Helper()
	for _, l := range d.ListenerViews() {
		if l.URI == uri {
			if l.TCP == nil {
				t.Fatalf("show listeners: %s has no tcp part", uri)
			}
			return *l.TCP
		}
	}
	t.Fatalf("show listeners: no %s", uri)
	return ListenerTCPView{}
}
