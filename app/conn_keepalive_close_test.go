package app

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
	"github.com/xsessiond/xsessiond/flow"
)

// TestSetKeepAliveConfigBeforeCloseLetsGo: a SetKeepAliveConfig of a wire
// TCP session that Close races is handled by the daemon before the
// session's close mark is there to see. The daemon ends the session on
// the mark and gives its handle to the next session of the app (a
// worker's handles are reused at once): a SetKeepalive it handles after
// that sets that other session's keepalive. The daemon here is a stand-in
// on the control socket that holds the request while Close runs, as a
// daemon busy with the app's earlier requests does. Before, Close stored
// its mark at once, with the request still to be handled.
func TestSetKeepAliveConfigBeforeCloseLetsGo(t *testing.T) {
	cc, sc, err := api.Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	tx, daemonTx := fifotest.Pair(t, 4096)
	rx, _ := fifotest.Pair(t, 4096)

	got := make(chan struct{}, 1)  // the daemon has the SetKeepalive
	handle := make(chan struct{})  // and may handle it now
	markSeen := make(chan bool, 1) // whether the close mark was there as it did
	go func() {
		id, _, _, err := sc.RecvID()
		if err != nil {
			return
		}
		_ = sc.SendID(id, &api.HelloReply{Major: api.VersionMajor, Minor: api.VersionMinor})
		for {
			id, m, fds, err := sc.RecvID()
			if err != nil {
				return
			}
			api.CloseFDs(fds)
			if _, ok := m.(*api.SetKeepalive); ok {
				got <- struct{}{}
				<-handle
				markSeen <- daemonTx.CloseRequested()
			}
			_ = sc.SendID(id, &api.OK{})
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := api.NewClient(ctx, cc, api.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })

	a := &App{cl: cl, done: make(chan struct{}), waiters: map[*waiter]struct{}{}, owners: map[flow.Handle]owner{},
		goneEarly: map[flow.Handle]uint8{}, closing: map[flow.Handle]struct{}{}, localOf: map[flow.Handle]netip.AddrPort{},
		objects: map[closer]struct{}{}, released: true}
	h := flow.MakeHandle(0, 7)
	e := &end{h: h, rx: rx, tx: tx, signalFD: -1, datapath: true}
	c := newConn(a, e, &net.TCPAddr{}, &net.TCPAddr{}, netip.AddrPort{}, netip.AddrPort{})
	a.register(h, c)

	set := make(chan error, 1)
	go func() { set <- c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: time.Minute}) }()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the SetKeepalive did not reach the daemon")
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	// Close stores its mark at once, or waits for the SetKeepalive.
	time.Sleep(200 * time.Millisecond)
	close(handle)
	if <-markSeen {
		t.Error("the daemon had the close mark before it handled the SetKeepalive: the handle may name another session by then")
	}
	for what, ch := range map[string]chan error{"SetKeepAliveConfig": set, "Close": closed} {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s did not return", what)
		}
	}
	if !daemonTx.CloseRequested() {
		t.Error("Close stored no close mark")
	}
}
