package sessions_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/sessions"
	"github.com/xsessiond/xsessiond/sessions/sessionstest"
)

// keeper is a stream transport of the tests: a sessionstest.Datapath that
// is a WorkerDatapath (so that the layer frees fifo memory after the
// shards drain, and a detached app's memory whole, as in the daemon) and a
// StreamKeeper whose connections use their fifos until they are done. The
// test decides when a connection is done (a reset, the end of a close).
type keeper struct {
	*sessionstest.Datapath
	mu       sync.Mutex
	conns    map[sessions.Handle]*kconn // by session handle; a reused handle names its new connection
	all      []*kconn                   // every connection not done
	appFree  map[sessions.AppID]func()  // KeepApp frees waiting for the app's connections
	releases []func()                   // Linger releases due, run by the test
	errs     []string
}

type kconn struct {
	h       sessions.Handle
	app     sessions.AppID
	pair    sessions.FifoPair
	closing bool   // the app closed it: its FIN goes out once the fifo is drained
	done    bool   // the transport no longer touches its fifos
	free    func() // the layer's free of its fifos, held until done
	unsteer func() // the Linger release, held until done
}

func newKeeper() *keeper {
	return &keeper{Datapath: sessionstest.NewDatapath(addrA, addrA6), conns: map[sessions.Handle]*kconn{}, appFree: map[sessions.AppID]func(){}}
}

func (k *keeper) failf(format string, args ...any) {
	k.errs = append(k.errs, fmt.Sprintf(format, args...))
}

// ListenerWorker implements sessions.WorkerDatapath.
func (k *keeper) ListenerWorker(sessions.Listener) uint32 { return 0 }

// bind records the connection of a session the layer just made.
func (k *keeper) bind(h sessions.Handle, app sessions.AppID, pair sessions.FifoPair) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if old := k.conns[h]; old != nil && !old.done && !old.closing {
		k.failf("handle %#x given to a new session while its connection is open", uint64(h))
	}
	c := &kconn{h: h, app: app, pair: pair}
	k.conns[h] = c
	k.all = append(k.all, c)
}

// Close implements sessions.Datapath: the app closed session h.
func (k *keeper) Close(h sessions.Handle, t sessions.FiveTuple) {
	k.Datapath.Close(h, t)
	k.mu.Lock()
	defer k.mu.Unlock()
	if c := k.conns[h]; c != nil {
		c.closing = true
	}
}

// KeepFifos implements sessions.StreamKeeper.
func (k *keeper) KeepFifos(h sessions.Handle, free func()) func() {
	k.mu.Lock()
	c := k.conns[h]
	k.mu.Unlock()
	if c == nil {
		return free
	}
	return func() {
		k.mu.Lock()
		if !c.done {
			if c.free != nil {
				k.failf("fifos of %#x kept twice", uint64(c.h))
			}
			c.free, free = free, nil
		}
		k.mu.Unlock()
		if free != nil {
			free()
		}
	}
}

// AppGone implements sessions.StreamKeeper: the app's connections are
// reset; they are done when the test finishes them.
func (k *keeper) AppGone(app sessions.AppID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.all {
		if c.app == app {
			c.closing = true
		}
	}
}

// KeepApp implements sessions.StreamKeeper.
func (k *keeper) KeepApp(app sessions.AppID, free func()) func() {
	return func() {
		k.mu.Lock()
		for _, c := range k.all {
			if c.app == app {
				k.appFree[app], free = free, nil
				break
			}
		}
		k.mu.Unlock()
		if free != nil {
			free()
		}
	}
}

// CloseWrite implements sessions.StreamKeeper.
func (k *keeper) CloseWrite(h sessions.Handle) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c := k.conns[h]; c == nil || c.done {
		return sessions.ErrNoSession
	}
	return nil
}

// ResetOnClose implements sessions.StreamKeeper.
func (k *keeper) ResetOnClose(h sessions.Handle) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c := k.conns[h]; c == nil || c.done {
		k.errs = append(k.errs, fmt.Sprintf("reset on close of %#x, which has no connection", uint64(h)))
	}
}

// Linger implements sessions.StreamKeeper.
func (k *keeper) Linger(h sessions.Handle, release func()) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c := k.conns[h]; c != nil && !c.done {
		c.unsteer = release
		return
	}
	k.releases = append(k.releases, release)
}

// finish makes connection i done and runs what waited for it; it returns
// the connection.
func (k *keeper) finish(i int) *kconn {
	k.mu.Lock()
	c := k.all[i]
	k.all = append(k.all[:i], k.all[i+1:]...)
	c.done = true
	if k.conns[c.h] == c {
		delete(k.conns, c.h)
	}
	var run []func()
	if c.free != nil {
		run = append(run, c.free)
	}
	if c.unsteer != nil {
		k.releases = append(k.releases, c.unsteer)
	}
	last := true
	for _, o := range k.all {
		if o.app == c.app {
			last = false
		}
	}
	if f := k.appFree[c.app]; last && f != nil {
		delete(k.appFree, c.app)
		run = append(run, f)
	}
	k.mu.Unlock()
	for _, f := range run {
		f()
	}
	return c
}

// release runs the oldest Linger release due, as the datapath does from a
// goroutine of its own.
func (k *keeper) release() bool {
	k.mu.Lock()
	if len(k.releases) == 0 {
		k.mu.Unlock()
		return false
	}
	r := k.releases[0]
	k.releases = k.releases[1:]
	k.mu.Unlock()
	r()
	return true
}

func (k *keeper) failures() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.errs...)
}

// handleState is what the test knows of a handle an app was given.
type handleState uint8

const (
	hGone     handleState = iota // closed by its app, or never given
	hHalfOpen                    // a connect under way
	hLive                        // an established session
	hEnded                       // ended by the transport, held for the app's Disconnect
)

// halfOpen is an active open the datapath is working on.
type halfOpen struct {
	ho    sessions.Handle
	app   sessions.AppID
	ss    sessions.StreamSession
	fifos bool
}

// FuzzStreamLifecycle runs wire stream sessions (TCP, with a StreamKeeper
// datapath) through random sequences of what apps and the transport do:
// accepts, active opens that succeed or fail, half closes, resets and
// transport closes in both orders with the connection's end, the app's
// closes (of live, ended, stale and others' handles, and through the tx
// fifo), close-writes, detaches, late reports of connections the app
// closed (which must not reach a new session with the same handle) and the
// datapath's late releases. After every step the layer's
// tables, its handle pools and the fifo memory must agree: no handle is
// free twice or free while a session (or a session held for its app's
// close) has it, no fifo pair is freed twice or while its connection uses
// it, and every Disconnect gets the answer the session's state calls for.
// At the end, with every app detached and every connection done, nothing
// is left.
func FuzzStreamLifecycle(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, 0, 0, 3, 0, 0, 6, 0, 0, 8, 0, 0, 8, 0, 0})
	f.Add([]byte{0, 1, 0, 2, 1, 0, 3, 1, 0, 3, 1, 1, 7, 0, 1, 9, 0, 0, 8, 1, 0, 10, 0, 0, 1, 1, 0, 9, 0, 0})
	f.Add([]byte{0, 0, 0, 4, 0, 1, 5, 0, 0, 12, 0, 0, 13, 0, 0, 8, 0, 0, 4, 0, 2, 5, 0, 0, 12, 0, 1, 11, 0, 0})
	f.Add([]byte{0, 2, 0, 2, 2, 0, 3, 2, 0, 6, 0, 1, 9, 0, 0, 0, 3, 0, 2, 3, 0, 3, 3, 0, 8, 3, 1, 1, 2, 0, 14, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 900 {
			ops = ops[:900]
		}
		streamLifecycle(t, ops)
	})
}

func streamLifecycle(t *testing.T, ops []byte) {
	// A deadlock would stall the fuzzer without a report: crash with
	// every goroutine's stack instead.
	wd := time.AfterFunc(10*time.Second, func() { panic("stream lifecycle: no progress in 10 s") })
	defer wd.Stop()
	k := newKeeper()
	mem := &sessionstest.Memory{}
	var freeMu sync.Mutex
	var freeErrs []string
	mem.OnFree = func(p sessions.FifoPair) {
		k.mu.Lock()
		defer k.mu.Unlock()
		for _, c := range k.all {
			if c.pair.Rx == p.Rx {
				freeMu.Lock()
				freeErrs = append(freeErrs, fmt.Sprintf("fifos of %#x freed while its connection uses them", uint64(c.h)))
				freeMu.Unlock()
			}
		}
	}
	l := newStreamLayer(t, k, mem)
	const slots = 4
	var (
		apps      [slots]sessions.AppID
		live      [slots]bool
		listeners [slots]sessions.Handle
		state     = map[sessions.Handle]handleState{}
		owner     = map[sessions.Handle]sessions.AppID{}
		given     []sessions.Handle // every handle an app was given, for closes of stale ones
		opens     []*halfOpen
		client    uint64
		rport     uint16 = 1000
	)
	newSession := func(h sessions.Handle, app sessions.AppID, st handleState) {
		if s := state[h]; s != hGone {
			t.Fatalf("handle %#x given again while in state %d", uint64(h), s)
		}
		state[h], owner[h] = st, app
		given = append(given, h)
	}
	slotOf := func(app sessions.AppID) int {
		for i := range apps {
			if live[i] && apps[i] == app {
				return i
			}
		}
		return -1
	}
	// ended marks h, a live session, as ended by the transport.
	ended := func(h sessions.Handle) {
		if state[h] == hLive {
			state[h] = hEnded
		}
	}
	pick := func(arg byte, want handleState) (sessions.Handle, bool) {
		var hs []sessions.Handle
		for _, h := range given {
			if state[h] == want {
				hs = append(hs, h)
			}
		}
		if len(hs) == 0 {
			return 0, false
		}
		return hs[int(arg)%len(hs)], true
	}
	in := &opReader{b: ops}
	for in.more() {
		op := in.next() % 17
		slot := int(in.next()) % slots
		arg := in.next()
		app := apps[slot]
		var desc string
		switch op {
		case 0: // attach
			if live[slot] {
				continue
			}
			client++
			at, err := l.Attach(sessions.AttachOptions{ClientID: client, Scope: sessions.ScopeGlobal})
			if err != nil {
				t.Fatal(err)
			}
			apps[slot], live[slot], listeners[slot] = at.App, true, 0
			desc = fmt.Sprintf("attach %d", at.App)
		case 1: // detach: every session of the app goes, its connections are reset
			if !live[slot] {
				continue
			}
			if err := l.Detach(app); err != nil {
				t.Fatalf("detach %d: %v", app, err)
			}
			live[slot] = false
			for h, a := range owner {
				if a == app {
					state[h] = hGone
				}
			}
			desc = fmt.Sprintf("detach %d", app)
		case 2: // listen
			if !live[slot] || listeners[slot] != 0 {
				continue
			}
			h, err := l.Bind(app, ep(sessions.TransportTCP, addrA, 80+uint16(slot)))
			if err != nil {
				t.Fatalf("bind: %v", err)
			}
			listeners[slot] = h
			desc = fmt.Sprintf("listen %#x", uint64(h))
		case 3: // the datapath accepts a connection on the slot's listener
			if !live[slot] || listeners[slot] == 0 {
				continue
			}
			rport++
			tu := sessions.FiveTuple{Local: sessions.AddrBytes(addrA), LocalPort: 80 + uint16(slot), Remote: sessions.AddrBytes(remote),
				RemotePort: rport, Proto: sessions.TransportTCP, Family: sessions.Family4}
			ss, err := l.StreamAccepted(uint32(arg)%2, listeners[slot], tu, func(ss sessions.StreamSession) { k.bind(ss.Handle, ss.App, ss.Pair) })
			if err != nil {
				t.Fatalf("accept: %v", err)
			}
			newSession(ss.Handle, app, hLive)
			desc = fmt.Sprintf("accept %#x", uint64(ss.Handle))
		case 4: // the app connects
			if !live[slot] {
				continue
			}
			rport++
			res, err := l.Connect(app, ep(sessions.TransportTCP, remote, rport), uint32(rport))
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			newSession(res.Handle, app, hHalfOpen)
			opens = append(opens, &halfOpen{ho: res.Handle, app: app})
			desc = fmt.Sprintf("connect %#x", uint64(res.Handle))
		case 5: // the datapath takes fifos for an open, then it connects or fails
			if len(opens) == 0 {
				continue
			}
			j := int(arg) % len(opens)
			o := opens[j]
			if !o.fifos {
				ss, err := l.StreamFifos(o.ho)
				if err != nil {
					// The app closed it, or detached: the open ends here.
					if state[o.ho] == hHalfOpen {
						t.Fatalf("fifos of half-open %#x: %v", uint64(o.ho), err)
					}
					opens = append(opens[:j], opens[j+1:]...)
					desc = fmt.Sprintf("fifos of closed half-open %#x: %v", uint64(o.ho), err)
					break
				}
				o.ss, o.fifos = ss, true
				desc = fmt.Sprintf("fifos of %#x", uint64(o.ho))
				break
			}
			opens = append(opens[:j], opens[j+1:]...)
			if arg&0x80 != 0 {
				err := l.ConnectFailed(o.ho, sessions.ErrConnect)
				if (err == nil) != (state[o.ho] == hHalfOpen) {
					t.Fatalf("connect failed of %#x in state %d: %v", uint64(o.ho), state[o.ho], err)
				}
				if err == nil {
					state[o.ho] = hGone
				}
				l.StreamFreeFifos(o.app, o.ss.Memory, o.ss.Pair)
				desc = fmt.Sprintf("connect %#x failed", uint64(o.ho))
				break
			}
			h, err := l.StreamConnected(uint32(arg)%2, o.ho, o.ss.Pair, func(h sessions.Handle) { k.bind(h, o.app, o.ss.Pair) })
			if (err == nil) != (state[o.ho] == hHalfOpen) {
				t.Fatalf("connected %#x in state %d: %v", uint64(o.ho), state[o.ho], err)
			}
			if err != nil {
				l.StreamFreeFifos(o.app, o.ss.Memory, o.ss.Pair)
				desc = fmt.Sprintf("connected closed half-open %#x: %v", uint64(o.ho), err)
				break
			}
			state[o.ho] = hGone
			newSession(h, o.app, hLive)
			desc = fmt.Sprintf("connected %#x as %#x", uint64(o.ho), uint64(h))
		case 6: // the peer half-closes
			h, ok := pick(arg, hLive)
			if !ok {
				continue
			}
			if err := l.StreamPeerClosed(k.ref(h)); err != nil {
				t.Fatalf("peer closed %#x: %v", uint64(h), err)
			}
			desc = fmt.Sprintf("peer closed %#x", uint64(h))
		case 7, 9: // a reset (7) or the transport's close (9), before or after the connection is done
			h, ok := pick(arg, hLive)
			if !ok {
				continue
			}
			ref := k.ref(h)
			before := arg&1 != 0
			if before {
				k.finishHandle(h)
			}
			var err error
			if op == 7 {
				err = l.StreamReset(ref, nil)
			} else {
				err = l.StreamClosed(ref)
			}
			if err != nil {
				t.Fatalf("transport end of %#x: %v", uint64(h), err)
			}
			ended(h)
			if !before {
				k.finishHandle(h)
			}
			desc = fmt.Sprintf("transport end (%d) of %#x, done first %v", op, uint64(h), before)
		case 8, 10: // the app closes a handle: its own live (8) or ended (10) one, or any it ever saw
			var h sessions.Handle
			var ok bool
			switch {
			case arg&3 == 3 && len(given) > 0:
				h, ok = given[int(arg>>2)%len(given)], true
			case op == 8:
				h, ok = pick(arg, hLive)
			default:
				h, ok = pick(arg, hEnded)
			}
			if !ok {
				continue
			}
			by := app
			if arg&4 == 0 && slotOf(owner[h]) >= 0 {
				by = owner[h]
			}
			var err error
			abort := arg&32 != 0
			if abort {
				err = l.StreamAbort(by, h)
			} else {
				err = l.Disconnect(by, h)
			}
			st := state[h]
			switch {
			case slotOf(by) < 0:
				wantErr(t, err, sessions.ErrNotAttached)
			case st == hGone:
				wantErr(t, err, sessions.ErrNoSession)
			case owner[h] != by && st == hEnded:
				wantErr(t, err, sessions.ErrNoSession)
			case owner[h] != by:
				wantErr(t, err, sessions.ErrNotOwner)
			default:
				wantErr(t, err, nil)
				state[h] = hGone
			}
			desc = fmt.Sprintf("app %d closes %#x (state %d, abort %v): %v", by, uint64(h), st, abort, err)
		case 11: // close-write
			h, ok := pick(arg, hLive)
			if !ok {
				continue
			}
			err := l.StreamCloseWrite(owner[h], h)
			desc = fmt.Sprintf("close write %#x: %v", uint64(h), err)
		case 12: // a connection the app closed (or whose app went) is done
			k.mu.Lock()
			var idx []int
			for j, c := range k.all {
				if c.closing {
					idx = append(idx, j)
				}
			}
			k.mu.Unlock()
			if len(idx) == 0 {
				continue
			}
			c := k.finish(idx[int(arg)%len(idx)])
			desc = fmt.Sprintf("connection %#x done", uint64(c.h))
		case 13: // a Linger release runs
			if !k.release() {
				continue
			}
			desc = "linger released"
		case 15: // the app closes a live session through its tx fifo
			h, ok := pick(arg, hLive)
			if !ok {
				continue
			}
			if err := l.StreamCloseRequested(k.ref(h)); err != nil {
				t.Fatalf("close requested %#x: %v", uint64(h), err)
			}
			state[h] = hGone
			desc = fmt.Sprintf("close requested %#x", uint64(h))
		case 16: // a connection its app closed reports late: its session is gone, whoever has its handle now
			k.mu.Lock()
			var stale []sessions.StreamRef
			for _, c := range k.all {
				if c.closing {
					stale = append(stale, sessions.StreamRef{Handle: c.h, Rx: c.pair.Rx})
				}
			}
			k.mu.Unlock()
			if len(stale) == 0 {
				continue
			}
			ref := stale[int(arg)%len(stale)]
			var err error
			switch arg >> 6 {
			case 0:
				err = l.StreamPeerClosed(ref)
			case 1:
				err = l.StreamReset(ref, nil)
			case 2:
				err = l.StreamClosed(ref)
			default:
				err = l.StreamCloseRequested(ref)
			}
			wantErr(t, err, sessions.ErrNoSession)
			desc = fmt.Sprintf("late report (%d) of closed %#x: %v", arg>>6, uint64(ref.Handle), err)
		case 14: // the app stops listening
			if !live[slot] || listeners[slot] == 0 {
				continue
			}
			if err := l.Unbind(app, listeners[slot]); err != nil {
				t.Fatalf("unbind: %v", err)
			}
			listeners[slot] = 0
			desc = "unlisten"
		}
		checkStream(t, l, mem, k, desc)
		freeMu.Lock()
		if len(freeErrs) > 0 {
			t.Fatalf("after %s: %v", desc, freeErrs)
		}
		freeMu.Unlock()
	}
	// Everyone leaves; the datapath ends what it still has.
	for slot := range apps {
		if live[slot] {
			if err := l.Detach(apps[slot]); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, o := range opens {
		if o.fifos {
			l.StreamFreeFifos(o.app, o.ss.Memory, o.ss.Pair)
		}
	}
	for {
		k.mu.Lock()
		n := len(k.all)
		k.mu.Unlock()
		if n == 0 {
			break
		}
		k.finish(0)
	}
	for k.release() {
	}
	checkStream(t, l, mem, k, "the end")
	if len(freeErrs) > 0 {
		t.Fatal(freeErrs)
	}
	if n := len(l.Sessions()) + len(l.Listeners()) + len(l.Apps()); n != 0 {
		t.Fatalf("%d sessions, listeners and apps after everything left", n)
	}
	if n := l.HandlesInUse(); n != 0 {
		t.Fatalf("%d handles not given back", n)
	}
	if _, snap := l.Snapshot(); len(snap) != 0 {
		t.Fatalf("snapshot after everything left: %v", snap)
	}
	apps_, pairs, cts, segs := mem.Live()
	if apps_ != 0 || pairs != mem.ClosedWithApp() || cts+segs != 0 {
		t.Fatalf("memory alive after everything left: apps %d, pairs %d (%d freed with their app), cts %d, segments %d",
			apps_, pairs, mem.ClosedWithApp(), cts, segs)
	}
}

// newStreamLayer returns a layer of two workers over k and mem.
func newStreamLayer(t *testing.T, k *keeper, mem *sessionstest.Memory) *sessions.Layer {
	t.Helper()
	l, err := sessions.New(sessions.Config{
		View:     sessionstest.NewView().Add(2, 1, addrA).Add(2, 2, addrA6),
		Memory:   mem,
		Datapath: k,
		Notifier: &sessionstest.Notifier{},
		Workers:  2,
		Default:  sessions.NamespaceConfig{IfIndex: 2, FIB4: 1, FIB6: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestStreamLateReportOfClosedSession: a connection whose app closed its
// session reports its reset (or FIN, or close) late, when the handle
// already names another app's new session. The report must not reach that
// session.
func TestStreamLateReportOfClosedSession(t *testing.T) {
	k, mem := newKeeper(), &sessionstest.Memory{}
	l := newStreamLayer(t, k, mem)
	var mems [2]*sessionstest.App
	var apps [2]sessions.AppID
	var lns [2]sessions.Handle
	for i := range apps {
		at, err := l.Attach(sessions.AttachOptions{ClientID: uint64(i + 1), Scope: sessions.ScopeGlobal})
		if err != nil {
			t.Fatal(err)
		}
		apps[i], mems[i] = at.App, at.Memory.(*sessionstest.App)
		if lns[i], err = l.Bind(at.App, ep(sessions.TransportTCP, addrA, 80+uint16(i))); err != nil {
			t.Fatal(err)
		}
	}
	accept := func(i int, rport uint16) sessions.StreamSession {
		tu := sessions.FiveTuple{Local: sessions.AddrBytes(addrA), LocalPort: 80 + uint16(i), Remote: sessions.AddrBytes(remote),
			RemotePort: rport, Proto: sessions.TransportTCP, Family: sessions.Family4}
		ss, err := l.StreamAccepted(0, lns[i], tu, func(ss sessions.StreamSession) { k.bind(ss.Handle, ss.App, ss.Pair) })
		if err != nil {
			t.Fatal(err)
		}
		return ss
	}
	old := accept(0, 1000)
	oldRef := k.ref(old.Handle)
	wantErr(t, l.Disconnect(apps[0], old.Handle), nil)
	checkStream(t, l, mem, k, "app 0 closed its session") // the shards drain: the handle is free
	cur := accept(1, 2000)
	if cur.Handle != old.Handle {
		t.Fatalf("the new session has handle %#x, not the closed one's %#x: the test needs them equal", uint64(cur.Handle), uint64(old.Handle))
	}
	mems[1].Events()
	wantErr(t, l.StreamPeerClosed(oldRef), sessions.ErrNoSession)
	wantErr(t, l.StreamReset(oldRef, nil), sessions.ErrNoSession)
	wantErr(t, l.StreamClosed(oldRef), sessions.ErrNoSession)
	wantErr(t, l.StreamCloseRequested(oldRef), sessions.ErrNoSession)
	if ev := mems[1].Events(); len(ev) != 0 {
		t.Fatalf("app %d's new session was told %+v", apps[1], ev)
	}
	if ss := l.Sessions(); len(ss) != 1 || ss[0].Handle != cur.Handle || ss[0].App != apps[1] {
		t.Fatalf("sessions %+v", ss)
	}
	// Its own reports still reach it.
	wantErr(t, l.StreamReset(k.ref(cur.Handle), nil), nil)
	if ev := mems[1].Events(); len(ev) != 1 || ev[0].Kind != sessions.EventReset || ev[0].Handle != cur.Handle {
		t.Fatalf("app %d's events after its reset: %+v", apps[1], ev)
	}
	checkStream(t, l, mem, k, "the reset")
}

// ref names h's connection as the transport does.
func (k *keeper) ref(h sessions.Handle) sessions.StreamRef {
	k.mu.Lock()
	defer k.mu.Unlock()
	var rx *fifo.Fifo
	if c := k.conns[h]; c != nil {
		rx = c.pair.Rx
	}
	return sessions.StreamRef{Handle: h, Rx: rx}
}

// finishHandle makes h's connection done, if it has one.
func (k *keeper) finishHandle(h sessions.Handle) {
	k.mu.Lock()
	j := -1
	for i, c := range k.all {
		if c.h == h && k.conns[h] == c {
			j = i
		}
	}
	k.mu.Unlock()
	if j >= 0 {
		k.finish(j)
	}
}

func checkStream(t *testing.T, l *sessions.Layer, mem *sessionstest.Memory, k *keeper, desc string) {
	t.Helper()
	t.Log(desc)
	if err := l.CheckInvariants(); err != nil {
		t.Fatalf("after %s: %v", desc, err)
	}
	if err := l.CheckHandles(); err != nil {
		t.Fatalf("after %s: %v", desc, err)
	}
	if m := mem.Misuse(); len(m) != 0 {
		t.Fatalf("after %s: fifo memory misused: %v", desc, m)
	}
	if e := k.failures(); len(e) != 0 {
		t.Fatalf("after %s: %v", desc, e)
	}
}

// TestStreamLateAcceptOfClosedListener: the datapath hands over a
// connection of a listener its app closed meanwhile (its accept was under
// way), when another app has bound since. The listener's handle is not
// the new listener's (listener handles come from a counter), so the late
// accept is refused and reaches neither app; before, the freed handle was
// the new listener's and the connection became the other app's session,
// on a port it never bound.
func TestStreamLateAcceptOfClosedListener(t *testing.T) {
	k, mem := newKeeper(), &sessionstest.Memory{}
	l := newStreamLayer(t, k, mem)
	var apps [2]sessions.AppID
	for i := range apps {
		at, err := l.Attach(sessions.AttachOptions{ClientID: uint64(i + 1), Scope: sessions.ScopeGlobal})
		if err != nil {
			t.Fatal(err)
		}
		apps[i] = at.App
	}
	old, err := l.Bind(apps[0], ep(sessions.TransportTCP, addrA, 80))
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, l.Unbind(apps[0], old), nil)
	cur, err := l.Bind(apps[1], ep(sessions.TransportTCP, addrA, 81))
	if err != nil {
		t.Fatal(err)
	}
	if cur == old {
		t.Fatalf("app %d's new listener took the closed listener's handle %#x", apps[1], uint64(old))
	}
	tu := sessions.FiveTuple{Local: sessions.AddrBytes(addrA), LocalPort: 80, Remote: sessions.AddrBytes(remote),
		RemotePort: 1000, Proto: sessions.TransportTCP, Family: sessions.Family4}
	if ss, err := l.StreamAccepted(0, old, tu, func(ss sessions.StreamSession) { k.bind(ss.Handle, ss.App, ss.Pair) }); err == nil {
		t.Fatalf("a late accept of the closed listener made a session of app %d", ss.App)
	}
}
