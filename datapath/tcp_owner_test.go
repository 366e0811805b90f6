package datapath

import (
	"syscall"
	"testing"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
	"github.com/xsessiond/xsessiond/sessions/sessionstest"
)

// The apps of one user share a group for the bound on TCP buffers; each of
// root's apps is a group of its own.
func TestTCPOwnerGroups(t *testing.T) {
	p := &tcpPath{users: map[sessions.AppID]uint32{}}
	p.setUser(1, 1000)
	p.setUser(2, 1000)
	p.setUser(3, 1001)
	p.setUser(4, 0)
	p.setUser(5, 0)
	g := func(app sessions.AppID) uint64 { return bufferGroup(p.owner(app)) }
	if p.owner(1) == p.owner(2) {
		t.Fatal("two apps of one user have one owner number: the Stack's per-app bounds would count them together")
	}
	if g(1) != g(2) || g(1) == g(3) || g(4) == g(5) || g(4) == g(1) || g(9) == g(4) {
		t.Fatalf("groups: user 1000 %#x %#x, user 1001 %#x, root %#x %#x, unknown %#x", g(1), g(2), g(3), g(4), g(5), g(9))
	}
}

// The ports an active open's connection keeps for TIME-WAIT count against
// the uid of the app that opened it until they are released (early, when
// the list is full, too); a passive one's (no port of its own) and root's
// do not.
func TestTCPKeptPorts(t *testing.T) {
	p := &tcpPath{e: &Engine{}, users: map[sessions.AppID]uint32{}}
	res := func() *tcpReservation { return &tcpReservation{fd: -1} }
	active := func(uid uint32) *tcpSess { r := res(); return &tcpSess{uid: uid, res: r} }
	for _, s := range []*tcpSess{active(1000), active(1000), {uid: 1000}, active(1001), active(0)} {
		p.holdPort(s, s.res, nil) // the third: accepted, steering only
	}
	if a, b, r := p.keptPorts(1000), p.keptPorts(1001), p.keptPorts(0); a != 2 || b != 1 || r != 0 {
		t.Fatalf("kept ports: uid 1000 %d, uid 1001 %d, root %d; want 2, 1, 0", a, b, r)
	}
	if n := (&enginePath{e: &Engine{tcp: p}}).KeptPorts(1000); n != 2 {
		t.Fatalf("the Datapath's KeptPorts: %d, want 2", n)
	}
	p.releasePorts(false) // their time is not over
	if n := p.keptPorts(1000); n != 2 {
		t.Fatalf("before their time: %d kept, want 2", n)
	}
	// A full list releases its oldest early.
	for range DefaultTCPMaxTimeWait - 5 { // full
		p.holdPort(nil, nil, nil)
	}
	p.holdPort(nil, nil, nil)
	if n := p.keptPorts(1000); n != 1 {
		t.Fatalf("after the oldest went early: %d kept, want 1", n)
	}
	p.releasePorts(true)
	if len(p.coolBy) != 0 {
		t.Fatalf("after the release: %v kept", p.coolBy)
	}
}

// An app's close of an active open counts its port against its uid while
// the connection drains (the layer no longer counts the session), once
// with its TIME-WAIT that follows, and not after a reset releases it.
func TestTCPKeptPortsWhileClosing(t *testing.T) {
	p := &tcpPath{e: &Engine{}, users: map[sessions.AppID]uint32{}, conns: map[flow.Handle]*tcpSess{}, apps: map[sessions.AppID]*tcpApp{}}
	drained := &tcpSess{p: p, uid: 1000, res: &tcpReservation{fd: -1}, established: true}
	reset := &tcpSess{p: p, uid: 1000, res: &tcpReservation{fd: -1}, established: true}
	p.conns[1], p.conns[2] = drained, reset
	p.closeByApp(1)
	p.closeByApp(2)
	if n := p.keptPorts(1000); n != 2 {
		t.Fatalf("two connections closing: %d ports kept, want 2", n)
	}
	if n := p.shedKept(1000, 2); n != 0 {
		t.Fatalf("%d ports of draining connections shed", n)
	}
	p.holdPort(drained, drained.res, nil) // drained: TIME-WAIT
	p.dropPort(reset, nil)                // reset: released at once
	if n := p.keptPorts(1000); n != 1 {
		t.Fatalf("one in TIME-WAIT, one reset: %d ports kept, want 1", n)
	}
	// The layer at the uid's bound has its TIME-WAIT ports shed.
	if n := p.shedKept(1001, 1); n != 0 {
		t.Fatalf("another uid's shed took %d", n)
	}
	if n, k := p.shedKept(1000, 3), p.keptPorts(1000); n != 1 || k != 0 || len(p.cool) != 0 {
		t.Fatalf("shed %d, %d kept, %d held; want 1, 0, 0", n, k, len(p.cool))
	}
	// It sheds a batch at a time, sparing the following connects the
	// scan.
	for range shedBatch + 8 {
		s := &tcpSess{uid: 1000, res: &tcpReservation{fd: -1}}
		p.holdPort(s, s.res, nil)
	}
	if n, k := p.shedKept(1000, 1), p.keptPorts(1000); n != shedBatch || k != 8 {
		t.Fatalf("shed %d, %d kept; want %d, 8", n, k, shedBatch)
	}
}

// A connection that its transport ended (the FINs exchanged, or a reset)
// counts its port against its uid from the moment the layer is told and
// stops counting the session, not only from the worker's turn that holds
// it for TIME-WAIT or drops it: a connect of that uid in between sees
// the port counted.
func TestTCPKeptPortsEndedByTransport(t *testing.T) {
	l, err := sessions.New(sessions.Config{View: sessionstest.NewView(), Memory: sessions.FifoMemory{}, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpPath{e: &Engine{}, users: map[sessions.AppID]uint32{}, conns: map[flow.Handle]*tcpSess{}, apps: map[sessions.AppID]*tcpApp{}}
	p.e.layer.Store(l)
	shard := sessions.NewShard(0) // the worker's turn: what Closed posts waits for Drain
	sess := func() *tcpSess {
		return &tcpSess{p: p, uid: 1000, res: &tcpReservation{fd: -1}, established: true, w: &tcpWorker{w: &worker{shard: shard}}}
	}
	closed, reset := sess(), sess()
	closed.Closed(nil)
	reset.Reset(nil, syscall.ECONNRESET)
	reset.Closed(nil)
	if n := p.keptPorts(1000); n != 2 {
		t.Fatalf("before the worker's turn: %d ports counted, want 2", n)
	}
	if n := shard.Drain(); n != 2 {
		t.Fatalf("%d posted, want 2", n)
	}
	if n := p.keptPorts(1000); n != 1 || len(p.cool) != 1 {
		t.Fatalf("after it: %d ports counted, %d held; want 1 (TIME-WAIT), 1", n, len(p.cool))
	}
}

// A listener's backlog of sessions its app has not taken holds the
// listener back only for an app that marks what it takes: one that said
// so (protocol 2.2) from the start, one of an earlier version once a
// session of it was marked; taken, ended and closed sessions leave the
// count.
func TestTCPListenerBacklogged(t *testing.T) {
	p := &tcpPath{e: &Engine{}}
	sess := func() (*tcpSess, *fifo.Fifo) {
		owner, peer := fifotest.Pair(t, 64)
		return &tcpSess{pair: sessions.FifoPair{Tx: owner}}, peer // peer: the app's view
	}
	for _, said := range []bool{true, false} {
		tl := &tcpListener{p: p, backlog: 3, marks: said}
		var apps []*fifo.Fifo
		for range 3 {
			s, app := sess()
			tl.handed(s)
			apps = append(apps, app)
		}
		if got := tl.Backlogged(); got != said {
			t.Fatalf("said %v: 3 untaken of 3: held back %v", said, got)
		}
		// The app takes the first (marks it): room for one more.
		apps[0].MarkTaken()
		s, _ := sess()
		tl.handed(s)
		if !tl.marks {
			t.Fatalf("said %v: a marked session did not make the listener one that marks", said)
		}
		if !tl.Backlogged() {
			t.Fatalf("said %v: 3 untaken of 3 after a mark: not held back", said)
		}
		// One ends (the peer reset it), one is closed by its app.
		tl.pending[0].ended = true
		tl.pending[1].byApp = true
		if tl.Backlogged() {
			t.Fatalf("said %v: an ended and a closed session still counted", said)
		}
		if len(tl.pending) != 1 {
			t.Fatalf("said %v: %d pending, want 1", said, len(tl.pending))
		}
	}
}
