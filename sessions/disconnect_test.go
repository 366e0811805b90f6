package sessions_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/sessions"
)

// vnet_disconnect_session

func TestDisconnect_NoSession(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	wantErr(t, r.l.Disconnect(a, sessions.MakeHandle(0, 12)), sessions.ErrNoSession)
	wantErr(t, r.l.Disconnect(a, sessions.InvalidHandle), sessions.ErrNoSession)
	wantErr(t, r.l.Disconnect(99, sessions.MakeHandle(0, 12)), sessions.ErrNotAttached)
}

func TestDisconnect_OtherAppsSession_NotOwner(t *testing.T) {
	r := newRig(t)
	srv, cli, bad := r.attach(sessions.ScopeLocal), r.attach(sessions.ScopeLocal), r.attach(sessions.ScopeLocal)
	r.bind(srv, "tcp://0.0.0.0:80")
	res, err := r.l.ConnectURI(cli, "tcp://127.0.0.1:80", 0)
	if err != nil {
		t.Fatal(err)
	}
	r.appEvents(srv)
	wantErr(t, r.l.Disconnect(bad, res.Handle), sessions.ErrNotOwner)
	if n := len(r.l.Sessions()); n != 2 {
		t.Fatalf("%d sessions after refused disconnect", n)
	}
	if ev := r.appEvents(srv); len(ev) != 0 {
		t.Fatalf("server told %+v", ev)
	}
	if _, _, cts, _ := r.mem.Live(); cts != 1 {
		t.Fatal("cut-through memory freed")
	}
}

func TestDisconnect_CutThrough_PeerToldMemoryFreed(t *testing.T) {
	for _, side := range []string{"client", "server"} {
		t.Run(side, func(t *testing.T) {
			r, srv, cli, h, sh := cutThroughPair(t)
			closer, ch, peer, ph := cli, h, srv, sh
			if side == "server" {
				closer, ch, peer, ph = srv, sh, cli, h
			}
			wantErr(t, r.l.Disconnect(closer, ch), nil)
			ev := r.appEvents(peer)
			if len(ev) != 1 || ev[0].Kind != sessions.EventDisconnected || ev[0].Handle != ph {
				t.Fatalf("peer events %+v", ev)
			}
			if len(r.appEvents(closer)) != 0 {
				t.Fatal("closer told of its own disconnect")
			}
			if len(r.l.Sessions()) != 0 {
				t.Fatalf("sessions left %+v", r.l.Sessions())
			}
			if _, _, cts, _ := r.mem.Live(); cts != 0 {
				t.Fatal("cut-through memory alive")
			}
			wantErr(t, r.l.Disconnect(peer, ph), sessions.ErrNoSession)
		})
	}
}

func TestDisconnect_Established_LeavesShardThroughMailbox(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	lh := r.bind(a, "udp://10.0.0.1:53")
	h := r.established(a, 0, "udp://192.0.2.7:1000")
	r.drainShards()
	wantErr(t, r.l.Disconnect(a, h), nil)
	if !r.inShard(h) {
		t.Fatal("shard changed before its owner drained the mailbox")
	}
	r.l.Shard(0).Drain()
	if r.inShard(h) {
		t.Fatal("session still in shard")
	}
	_, _, _, closes := r.dp.Calls()
	if len(closes) != 1 || closes[0] != h {
		t.Fatalf("datapath closes %v", closes)
	}
	// The listener's datagram pair stays until unbind.
	if _, pairs, _, _ := r.mem.Live(); pairs != 1 {
		t.Fatalf("%d fifo pairs live, want the listener's only", pairs)
	}
	wantErr(t, r.l.Disconnect(a, h), sessions.ErrNoSession)
	wantErr(t, r.l.Unbind(a, lh), nil)
	if _, pairs, _, _ := r.mem.Live(); pairs != 0 {
		t.Fatal("listener's fifo pair not freed at unbind")
	}
}

func TestDisconnect_HalfOpen(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	res, err := r.l.ConnectURI(a, "tcp://192.0.2.7:80", 0)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, r.l.Disconnect(a, res.Handle), nil)
	if len(r.l.Sessions()) != 0 {
		t.Fatal("half-open left")
	}
	if _, snap := r.l.Snapshot(); len(snap) != 0 {
		t.Fatalf("snapshot %v", snap)
	}
}

func TestConnected_Checks(t *testing.T) {
	r := newRig(t)
	a := r.attachOpts(sessions.AttachOptions{MaxFifoMemory: 2 * sessions.DefaultFifoSize})
	res, err := r.l.ConnectURI(a, "udp://192.0.2.7:1000", 0)
	wantErr(t, err, nil)
	_, err = r.l.Connected(9, res.Handle)
	wantErr(t, err, sessions.ErrInvalidValue)
	_, err = r.l.Connected(0, sessions.MakeHandle(sessions.HalfOpenWorker, 77))
	wantErr(t, err, sessions.ErrNoSession)
	if _, err = r.l.Connected(0, res.Handle); err != nil {
		t.Fatal(err)
	}
	_, err = r.l.Connected(0, res.Handle)
	wantErr(t, err, sessions.ErrNoSession)
	res, err = r.l.ConnectURI(a, "udp://192.0.2.7:1001", 0)
	wantErr(t, err, nil)
	r.appEvents(a)
	_, err = r.l.Connected(0, res.Handle)
	wantErr(t, err, sessions.ErrNoMemory)
	ev := r.appEvents(a)
	if len(ev) != 1 || ev[0].Kind != sessions.EventConnectFailed || ev[0].Handle != res.Handle {
		t.Fatalf("events %+v", ev)
	}
}

func TestConnected_SegmentAddedEvent(t *testing.T) {
	r := newRig(t)
	a := r.attachOpts(sessions.AttachOptions{SegmentSize: 2 * sessions.DefaultFifoSize})
	for i := 0; i < 2; i++ {
		r.established(a, 0, fmt.Sprintf("udp://192.0.2.7:%d", 1000+i))
	}
	ev := r.appEvents(a)
	var kinds []sessions.EventKind
	for _, e := range ev {
		kinds = append(kinds, e.Kind)
	}
	if len(ev) != 3 || ev[1].Kind != sessions.EventSegmentAdded || ev[1].Segment == nil || ev[2].Pair.Segment != ev[1].Segment {
		t.Fatalf("events %v", kinds)
	}
	seen := false
	for _, e := range r.note.Events() {
		seen = seen || e.Kind == sessions.EventSegmentAdded
	}
	if !seen {
		t.Fatal("Notifier did not see the new segment")
	}
}

// TestWithdrawConnect: a cut-through session withdrawn by the app that
// opened it goes from both apps, its memory freed, and the listening
// app, never told of it, gets no event; only the opener may withdraw, and
// only a cut-through session it opened.
func TestWithdrawConnect(t *testing.T) {
	r, srv, cli, h, sh := cutThroughPair(t)
	wantErr(t, r.l.WithdrawConnect(srv, sh), sessions.ErrInvalidValue) // the listening end
	wantErr(t, r.l.WithdrawConnect(srv, h), sessions.ErrNoSession)
	wantErr(t, r.l.WithdrawConnect(cli, h), nil)
	if ev := r.appEvents(srv); len(ev) != 0 {
		t.Fatalf("the listening app was told %+v", ev)
	}
	if ev := r.appEvents(cli); len(ev) != 0 {
		t.Fatalf("the opener was told %+v", ev)
	}
	if len(r.l.Sessions()) != 0 {
		t.Fatalf("sessions left %+v", r.l.Sessions())
	}
	if _, _, cts, _ := r.mem.Live(); cts != 0 {
		t.Fatal("cut-through memory alive")
	}
	wantErr(t, r.l.WithdrawConnect(cli, h), sessions.ErrNoSession)
	if err := r.l.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

// cutThroughPair makes a rig where app cli opened cut-through session h to
// app srv's listener (srv's end sh), the events of both taken.
func cutThroughPair(t *testing.T) (r *rig, srv, cli sessions.AppID, h, sh sessions.Handle) {
	t.Helper()
	r = newRig(t)
	srv, cli = r.attach(sessions.ScopeLocal), r.attach(sessions.ScopeLocal)
	r.bind(srv, "tcp://0.0.0.0:80")
	res, err := r.l.ConnectURI(cli, "tcp://127.0.0.1:80", 0)
	if err != nil {
		t.Fatal(err)
	}
	sh = r.appEvents(srv)[0].Handle
	r.appEvents(cli)
	return r, srv, cli, res.Handle, sh
}

// A worker that drains its mailbox after a session of its shard ended
// gives the session's handle back without waiting for the layer's lock,
// which a long control-plane call may hold (a page of show sessions, an
// attach making its memory): its packets do not wait for that.
func TestDisconnect_HandleFreedWithoutTheLayersLock(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	h := r.established(a, 0, "udp://192.0.2.7:1000")
	r.drainShards()
	wantErr(t, r.l.Disconnect(a, h), nil)
	release := r.l.HoldLock()
	done := make(chan struct{})
	go func() {
		r.l.Shard(0).Drain()
		close(done)
	}()
	select {
	case <-done:
		release()
	case <-time.After(2 * time.Second):
		release()
		<-done
		t.Fatal("the worker's drain waited for the layer's lock")
	}
	if err := r.l.CheckHandles(); err != nil {
		t.Fatal(err)
	}
}
