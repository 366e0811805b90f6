package loader

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/flow"
)

// fakeSource is a session table reduced to its change feed.
type fakeSource struct {
	mu      sync.Mutex
	seq     uint64
	entries map[fakeKey]flow.Change
}

type fakeKey struct {
	kind    flow.ChangeKind
	ifindex int
	tuple   flow.FiveTuple
}

func newFakeSource() *fakeSource { return &fakeSource{entries: map[fakeKey]flow.Change{}} }

// change records a change in the table and returns it as the feed would.
func (f *fakeSource) change(op flow.ChangeOp, kind flow.ChangeKind, ifindex int, t flow.FiveTuple, h flow.Handle) flow.Change {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	c := flow.Change{Seq: f.seq, Op: op, Kind: kind, IfIndex: ifindex, FIB: 3, Tuple: t, Handle: h}
	k := fakeKey{kind, ifindex, t}
	if op == flow.OpAdd {
		f.entries[k] = c
	} else {
		delete(f.entries, k)
	}
	return c
}

func (f *fakeSource) Snapshot() (uint64, []flow.Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]flow.Change, 0, len(f.entries))
	for _, c := range f.entries {
		c.Op = flow.OpAdd
		out = append(out, c)
	}
	return f.seq, out
}

// fakeMaps holds the mirror's maps in memory.
type fakeMaps struct {
	l map[xsessionXsLstKey]xsessionXsValue
	e map[xsessionXsEstKey]xsessionXsValue
}

func newFakeMaps() *fakeMaps {
	return &fakeMaps{l: map[xsessionXsLstKey]xsessionXsValue{}, e: map[xsessionXsEstKey]xsessionXsValue{}}
}

func (f *fakeMaps) putListener(k xsessionXsLstKey, v xsessionXsValue) error { f.l[k] = v; return nil }
func (f *fakeMaps) delListener(k xsessionXsLstKey) error {
	if _, ok := f.l[k]; !ok {
		return ErrNotFound
	}
	delete(f.l, k)
	return nil
}
func (f *fakeMaps) dumpListeners() (map[xsessionXsLstKey]xsessionXsValue, error) {
	return maps.Clone(f.l), nil
}
func (f *fakeMaps) putSession(k xsessionXsEstKey, v xsessionXsValue) error { f.e[k] = v; return nil }
func (f *fakeMaps) delSession(k xsessionXsEstKey) error {
	if _, ok := f.e[k]; !ok {
		return ErrNotFound
	}
	delete(f.e, k)
	return nil
}
func (f *fakeMaps) dumpSessions() (map[xsessionXsEstKey]xsessionXsValue, error) {
	return maps.Clone(f.e), nil
}

const mirIf = 5

var (
	lstA = listener(flow.TransportUDP, v4Local, 9000)
	lstB = listener(flow.TransportUDP, zero6, 53)
	estA = tuple(flow.TransportUDP, v4Local, 9000, v4Remote, 4000)
	estB = tuple(flow.TransportTCP, v6Local, 80, v6Remote, 50000)
)

func mustLst(t *testing.T, ifindex int, tu flow.FiveTuple) xsessionXsLstKey {
	t.Helper()
	k, err := lstKey(ifindex, &tu)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustEst(t *testing.T, ifindex int, tu flow.FiveTuple) xsessionXsEstKey {
	t.Helper()
	k, err := estKey(ifindex, &tu)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// same checks that the fake maps hold exactly the source's entries.
func same(t *testing.T, src *fakeSource, fm *fakeMaps, ifindex int) {
	t.Helper()
	_, snap := src.Snapshot()
	wl, we := 0, 0
	for _, c := range snap {
		if ifindex != 0 && c.IfIndex != 0 && c.IfIndex != ifindex {
			continue
		}
		want := Value{Handle: c.Handle, FIB: c.FIB}.raw()
		ifi := c.IfIndex
		if ifi == 0 {
			ifi = ifindex
		}
		if c.Kind == flow.KindListener {
			wl++
			if got, ok := fm.l[mustLst(t, ifi, c.Tuple)]; !ok || got != want {
				t.Fatalf("listener %+v: map has %+v (%v), want %+v", c.Tuple, got, ok, want)
			}
		} else {
			we++
			if got, ok := fm.e[mustEst(t, ifi, c.Tuple)]; !ok || got != want {
				t.Fatalf("session %+v: map has %+v (%v), want %+v", c.Tuple, got, ok, want)
			}
		}
	}
	if len(fm.l) != wl || len(fm.e) != we {
		t.Fatalf("maps hold %d listeners and %d sessions, want %d and %d", len(fm.l), len(fm.e), wl, we)
	}
}

func TestMirrorResyncAtStart(t *testing.T) {
	src := newFakeSource()
	src.change(flow.OpAdd, flow.KindListener, mirIf, lstA, 1)
	src.change(flow.OpAdd, flow.KindListener, mirIf, lstB, 2)
	src.change(flow.OpAdd, flow.KindEstablished, mirIf, estA, 3)
	fm := newFakeMaps()
	// Left over from an earlier run: one stale entry, one wrong value.
	fm.e[mustEst(t, mirIf, estB)] = xsessionXsValue{Handle: 99}
	fm.l[mustLst(t, mirIf, lstA)] = xsessionXsValue{Handle: 98}
	m, err := newMirror(fm, src, MirrorOptions{IfIndex: mirIf})
	if err != nil {
		t.Fatal(err)
	}
	same(t, src, fm, mirIf)
	if s := m.Stats(); s.Resyncs != 1 || s.LastSeq != 3 {
		t.Fatalf("stats %+v", s)
	}
}

func TestMirrorApplyOrder(t *testing.T) {
	src := newFakeSource()
	fm := newFakeMaps()
	m, err := newMirror(fm, src, MirrorOptions{IfIndex: mirIf})
	if err != nil {
		t.Fatal(err)
	}
	c1 := src.change(flow.OpAdd, flow.KindListener, mirIf, lstA, 1)
	c2 := src.change(flow.OpAdd, flow.KindEstablished, mirIf, estA, 2)
	if n, err := m.ApplyBatch([]flow.Change{c1, c2}); n != 2 || err != nil {
		t.Fatalf("ApplyBatch: %d, %v", n, err)
	}
	same(t, src, fm, mirIf)
	// A duplicate is ignored.
	if err := m.Apply(c1); err != nil {
		t.Fatal(err)
	}
	c3 := src.change(flow.OpDel, flow.KindListener, mirIf, lstA, 1)
	if err := m.Apply(c3); err != nil {
		t.Fatal(err)
	}
	same(t, src, fm, mirIf)

	// A gap: c4 is lost, c5 is refused, and so is everything until Resync.
	src.change(flow.OpAdd, flow.KindListener, mirIf, lstB, 4)
	c5 := src.change(flow.OpDel, flow.KindEstablished, mirIf, estA, 2)
	if err := m.Apply(c5); !errors.Is(err, ErrResyncNeeded) {
		t.Fatalf("apply after a gap: %v, want ErrResyncNeeded", err)
	}
	c6 := src.change(flow.OpAdd, flow.KindEstablished, mirIf, estB, 6)
	if err := m.Apply(c6); !errors.Is(err, ErrResyncNeeded) || !m.NeedsResync() {
		t.Fatalf("apply while a resync is needed: %v", err)
	}
	if err := m.Resync(); err != nil {
		t.Fatal(err)
	}
	same(t, src, fm, mirIf)
	// Changes the snapshot covered are ignored; the next one applies.
	if err := m.Apply(c6); err != nil {
		t.Fatal(err)
	}
	c7 := src.change(flow.OpDel, flow.KindEstablished, mirIf, estB, 6)
	if err := m.Apply(c7); err != nil {
		t.Fatal(err)
	}
	same(t, src, fm, mirIf)
	s := m.Stats()
	if s.Applied != 4 || s.Stale != 2 || s.OutOfOrder != 2 || s.Resyncs != 2 || s.LastSeq != 7 {
		t.Fatalf("stats %+v", s)
	}
}

func TestMirrorInvalidAndFiltered(t *testing.T) {
	src := newFakeSource()
	fm := newFakeMaps()
	m, err := newMirror(fm, src, MirrorOptions{IfIndex: mirIf})
	if err != nil {
		t.Fatal(err)
	}
	bad := lstA
	bad.Family = 5
	for _, c := range []flow.Change{
		{Seq: 1, Op: flow.OpAdd, Kind: flow.KindListener, IfIndex: mirIf, Tuple: bad},
		{Seq: 2, Op: 9, Kind: flow.KindListener, IfIndex: mirIf, Tuple: lstA},
		{Seq: 3, Op: flow.OpAdd, Kind: 9, IfIndex: mirIf, Tuple: lstA},
	} {
		if err := m.Apply(c); !errors.Is(err, ErrInvalidChange) {
			t.Fatalf("change %d: %v, want ErrInvalidChange", c.Seq, err)
		}
	}
	// Another interface's change is skipped; one without an interface is ours.
	if err := m.Apply(flow.Change{Seq: 4, Op: flow.OpAdd, Kind: flow.KindListener, IfIndex: mirIf + 1, Tuple: lstA}); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(flow.Change{Seq: 5, Op: flow.OpAdd, Kind: flow.KindListener, Tuple: lstB, Handle: 7}); err != nil {
		t.Fatal(err)
	}
	if len(fm.l) != 1 || fm.l[mustLst(t, mirIf, lstB)].Handle != 7 {
		t.Fatalf("listeners %v", fm.l)
	}
	// A delete of a missing entry is counted, not an error.
	if err := m.Apply(flow.Change{Seq: 6, Op: flow.OpDel, Kind: flow.KindEstablished, IfIndex: mirIf, Tuple: estA}); err != nil {
		t.Fatal(err)
	}
	if s := m.Stats(); s.Invalid != 3 || s.Skipped != 1 || s.Applied != 2 || s.DelMissing != 1 || s.LastSeq != 6 {
		t.Fatalf("stats %+v", s)
	}
	// Without an interface of its own, the mirror refuses changes without one.
	m2, err := newMirror(newFakeMaps(), newFakeSource(), MirrorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Apply(flow.Change{Seq: 1, Op: flow.OpAdd, Kind: flow.KindListener, Tuple: lstA}); !errors.Is(err, ErrInvalidChange) {
		t.Fatalf("change without an interface: %v", err)
	}
}

func TestMirrorCheck(t *testing.T) {
	src := newFakeSource()
	src.change(flow.OpAdd, flow.KindListener, mirIf, lstA, 1)
	src.change(flow.OpAdd, flow.KindEstablished, mirIf, estA, 2)
	src.change(flow.OpAdd, flow.KindEstablished, mirIf, estB, 3)
	fm := newFakeMaps()
	m, err := newMirror(fm, src, MirrorOptions{IfIndex: mirIf})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := m.Check(); err != nil || !d.IsZero() {
		t.Fatalf("check after resync: %+v, %v", d, err)
	}
	// Someone else writes the maps.
	delete(fm.e, mustEst(t, mirIf, estA))
	fm.e[mustEst(t, mirIf, estB)] = xsessionXsValue{Handle: 77}
	fm.l[mustLst(t, mirIf, lstB)] = xsessionXsValue{Handle: 78}
	d, err := m.Check()
	if err != nil {
		t.Fatal(err)
	}
	if d != (Divergence{Missing: 1, Extra: 1, Mismatched: 1}) {
		t.Fatalf("divergence %+v", d)
	}
	// The source moves on before the feed delivers: no comparison.
	c := src.change(flow.OpAdd, flow.KindListener, mirIf, lstB, 4)
	if _, err := m.Check(); !errors.Is(err, ErrNotComparable) {
		t.Fatalf("check with a change in flight: %v", err)
	}
	if err := m.Apply(c); err != nil {
		t.Fatal(err)
	}
	if err := m.Resync(); err != nil {
		t.Fatal(err)
	}
	same(t, src, fm, mirIf)
	if d, err := m.Check(); err != nil || !d.IsZero() {
		t.Fatalf("check after resync: %+v, %v", d, err)
	}
	if s := m.Stats(); s.Checks != 3 || s.Divergent != 1 || s.Missing != 1 || s.Extra != 1 || s.Mismatched != 1 || s.NotCompared != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestMirrorRun(t *testing.T) {
	src := newFakeSource()
	fm := newFakeMaps()
	m, err := newMirror(fm, src, MirrorOptions{IfIndex: mirIf})
	if err != nil {
		t.Fatal(err)
	}
	feed := make(chan flow.Change, 16)
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background(), feed, 0) }()
	feed <- src.change(flow.OpAdd, flow.KindListener, mirIf, lstA, 1)
	src.change(flow.OpAdd, flow.KindListener, mirIf, lstB, 2) // lost
	feed <- src.change(flow.OpAdd, flow.KindEstablished, mirIf, estA, 3)
	feed <- src.change(flow.OpAdd, flow.KindEstablished, mirIf, estB, 4)
	feed <- src.change(flow.OpDel, flow.KindListener, mirIf, lstA, 1)
	close(feed)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	same(t, src, fm, mirIf)
	if s := m.Stats(); s.Resyncs != 2 || s.LastSeq != 5 {
		t.Fatalf("stats %+v", s)
	}

	// With periodic checks, a divergence is repaired.
	feed = make(chan flow.Change)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m.mu.Lock()
	fm.l[mustLst(t, mirIf, lstA)] = xsessionXsValue{Handle: 1}
	m.mu.Unlock()
	go func() { done <- m.Run(ctx, feed, time.Millisecond) }()
	deadline := time.Now().Add(5 * time.Second)
	for m.Stats().Resyncs < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	same(t, src, fm, mirIf)
	if s := m.Stats(); s.Divergent == 0 || s.Extra == 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestMirrorProgram drives the real maps through a mirror and checks the
// program's verdicts follow.
func TestMirrorProgram(t *testing.T) {
	o := loadObjects(t, ObjectsOptions{})
	src := newFakeSource()
	src.change(flow.OpAdd, flow.KindListener, testIfindex, listener(flow.TransportUDP, v4Local, 9000), 1)
	m, err := NewMirror(o, src, MirrorOptions{IfIndex: testIfindex})
	if err != nil {
		t.Fatal(err)
	}
	hit := func(pkt []byte) bool {
		before, _ := o.Counters.Read()
		runXDP(t, o.Program(), pkt)
		after, _ := o.Counters.Read()
		d := after.Sub(before)
		return d.ListenerExactHit+d.ListenerWildcardHit+d.EstablishedHit == 1
	}
	u := udp4Frame(t, 4000, 9000)
	if !hit(u) {
		t.Fatal("listener from the first resync not hit")
	}
	if err := m.Apply(src.change(flow.OpDel, flow.KindListener, testIfindex, listener(flow.TransportUDP, v4Local, 9000), 1)); err != nil {
		t.Fatal(err)
	}
	if hit(u) {
		t.Fatal("deleted listener still hit")
	}
	if err := m.Apply(src.change(flow.OpAdd, flow.KindEstablished, testIfindex, tuple(flow.TransportUDP, v4Local, 9000, v4Remote, 4000), flow.MakeHandle(2, 3))); err != nil {
		t.Fatal(err)
	}
	if !hit(u) {
		t.Fatal("established session not hit")
	}
	v, err := o.Established.Lookup(testIfindex, tuple(flow.TransportUDP, v4Local, 9000, v4Remote, 4000))
	if err != nil || v.Handle != flow.MakeHandle(2, 3) || v.FIB != 3 {
		t.Fatalf("established value %+v, %v", v, err)
	}
	// Tamper with the real map; the check sees it and a resync repairs it.
	if err := o.Listeners.Put(testIfindex, listener(flow.TransportTCP, zero4, 22), Value{Handle: 5}); err != nil {
		t.Fatal(err)
	}
	if d, err := m.Check(); err != nil || d.Extra != 1 {
		t.Fatalf("check: %+v, %v", d, err)
	}
	if err := m.Resync(); err != nil {
		t.Fatal(err)
	}
	if d, err := m.Check(); err != nil || !d.IsZero() {
		t.Fatalf("check after resync: %+v, %v", d, err)
	}
}

// TestMirrorKeep: changes Keep refuses stay out of the maps in the feed, in
// resyncs and in checks, and do not break the feed's order.
func TestMirrorKeep(t *testing.T) {
	src := newFakeSource()
	tcp := lstB
	tcp.Proto = flow.TransportTCP
	src.change(flow.OpAdd, flow.KindListener, mirIf, lstA, 1)
	src.change(flow.OpAdd, flow.KindListener, mirIf, tcp, 2)
	fm := newFakeMaps()
	keep := func(c *flow.Change) bool { return c.Tuple.Proto != flow.TransportTCP }
	m, err := newMirror(fm, src, MirrorOptions{IfIndex: mirIf, Keep: keep})
	if err != nil {
		t.Fatal(err)
	}
	if len(fm.l) != 1 || fm.l[mustLst(t, mirIf, lstA)].Handle != 1 {
		t.Fatalf("after the first resync: listeners %v", fm.l)
	}
	if d, err := m.Check(); err != nil || d != (Divergence{}) {
		t.Fatalf("check: %+v %v", d, err)
	}
	// A live change that is not kept is skipped, and the next one applies.
	if err := m.Apply(src.change(flow.OpDel, flow.KindListener, mirIf, tcp, 2)); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(src.change(flow.OpAdd, flow.KindEstablished, mirIf, estA, 3)); err != nil {
		t.Fatal(err)
	}
	if s := m.Stats(); s.Skipped != 1 || s.Applied != 1 || len(fm.e) != 1 || len(fm.l) != 1 {
		t.Fatalf("stats %+v, maps %v %v", s, fm.l, fm.e)
	}
}

// fullMaps is fakeMaps whose listener map holds at most max entries, as a
// full BPF hash map refuses a new key (E2BIG).
type fullMaps struct {
	*fakeMaps
	max int
}

var errMapFull = errors.New("argument list too long")

func (f fullMaps) putListener(k xsessionXsLstKey, v xsessionXsValue) error {
	if _, ok := f.l[k]; !ok && len(f.l) >= f.max {
		return errMapFull
	}
	return f.fakeMaps.putListener(k, v)
}

func (f fullMaps) putSession(k xsessionXsEstKey, v xsessionXsValue) error {
	if _, ok := f.e[k]; !ok && len(f.e) >= f.max {
		return errMapFull
	}
	return f.fakeMaps.putSession(k, v)
}

// TestMirrorRefusedSession: a session whose entry the full established map
// refused is told as refused (a connect waiting for the mirror fails
// rather than leave a session that gets nothing), by the change and by a
// resync, until the map takes it or the session goes.
func TestMirrorRefusedSession(t *testing.T) {
	src := newFakeSource()
	fm := fullMaps{newFakeMaps(), 1}
	m, err := newMirror(fm, src, MirrorOptions{IfIndex: mirIf})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(src.change(flow.OpAdd, flow.KindEstablished, mirIf, estA, 1)); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(src.change(flow.OpAdd, flow.KindEstablished, mirIf, estB, 2)); !errors.Is(err, errMapFull) {
		t.Fatalf("a session past the map's room: %v, want the map's error", err)
	}
	if m.Refused(1) || !m.Refused(2) {
		t.Fatalf("refused: 1 %v, 2 %v; want 2 alone", m.Refused(1), m.Refused(2))
	}
	if err := m.Resync(); !errors.Is(err, errMapFull) || !m.Refused(2) {
		t.Fatalf("resync with the map full: %v, refused %v", err, m.Refused(2))
	}
	if err := m.Apply(src.change(flow.OpDel, flow.KindEstablished, mirIf, estB, 2)); err != nil || m.Refused(2) {
		t.Fatalf("a refused session that went: %v, refused %v", err, m.Refused(2))
	}
	same(t, src, fm.fakeMaps, mirIf)
}

// TestMirrorRefusedListener: a listener whose entry the full map refused
// is told as refused (a bind waiting for the mirror fails rather than
// leave a listener that gets nothing), until the map takes it, by a later
// change or a resync, or the listener goes.
func TestMirrorRefusedListener(t *testing.T) {
	src := newFakeSource()
	fm := fullMaps{newFakeMaps(), 1}
	m, err := newMirror(fm, src, MirrorOptions{IfIndex: mirIf})
	if err != nil {
		t.Fatal(err)
	}
	a := src.change(flow.OpAdd, flow.KindListener, mirIf, lstA, 1)
	b := src.change(flow.OpAdd, flow.KindListener, mirIf, lstB, 2)
	if err := m.Apply(a); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(b); !errors.Is(err, errMapFull) {
		t.Fatalf("a listener past the map's room: %v, want the map's error", err)
	}
	if m.Refused(1) || !m.Refused(2) {
		t.Fatalf("refused: 1 %v, 2 %v; want 2 alone", m.Refused(1), m.Refused(2))
	}
	// A resync with the map still full refuses it again.
	if err := m.Resync(); !errors.Is(err, errMapFull) || !m.Refused(2) {
		t.Fatalf("resync with the map full: %v, refused %v", err, m.Refused(2))
	}
	// The first goes: the map takes the second at the next resync.
	if err := m.Apply(src.change(flow.OpDel, flow.KindListener, mirIf, lstA, 1)); err != nil {
		t.Fatal(err)
	}
	if err := m.Resync(); err != nil || m.Refused(2) {
		t.Fatalf("resync with room: %v, refused %v", err, m.Refused(2))
	}
	same(t, src, fm.fakeMaps, mirIf)
	// The map full again (the second holds its one entry): a listener
	// refused, then gone, is no longer told as refused.
	c := src.change(flow.OpAdd, flow.KindListener, mirIf, lstA, 3)
	_ = m.Apply(c)
	if !m.Refused(3) {
		t.Fatal("a refused listener is not told as refused")
	}
	if err := m.Apply(src.change(flow.OpDel, flow.KindListener, mirIf, lstA, 3)); err != nil || m.Refused(3) {
		t.Fatalf("a refused listener that went: %v, refused %v", err, m.Refused(3))
	}
}
