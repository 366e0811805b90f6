package sessions_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// TestNotify_FullQueuePostponesEvents: a burst of accepts larger than the
// app's event queue, while the app reads nothing, loses no session: what
// does not fit waits in the daemon and reaches the queue, in order and
// each with its local address, as the app makes room, also when no other
// event comes. Advisory events (data notices) are not kept.
func TestNotify_FullQueuePostponesEvents(t *testing.T) {
	am, err := sessions.FifoMemory{}.NewApp(sessions.AppMemoryOptions{Name: "postpone", SegmentSize: 1 << 20, EventQueueSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer am.Close()
	m, _ := sessions.FifoManager(am)
	q := m.EventQueue()
	local := netip.MustParseAddrPort("10.0.0.2:7000")
	const n = 200
	for i := range n {
		ev := sessions.Event{Kind: sessions.EventAccepted, Handle: flow.MakeHandle(0, uint32(i+1)), Listener: 9,
			Transport: flow.TransportTCP, Local: local, Remote: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(40000+i))}
		if err := am.Notify(ev); err != nil {
			t.Fatalf("accept %d: %v", i, err)
		}
		_ = am.Notify(sessions.Event{Kind: sessions.EventKind(fifo.EventRx), Handle: ev.Handle})
	}
	// Read slowly, as a busy app would, with no event coming meanwhile.
	next, localAddrs := 1, 0
	evs := make([]fifo.Event, 8)
	deadline := time.Now().Add(10 * time.Second)
	for next <= n {
		if time.Now().After(deadline) {
			t.Fatalf("accepted events stopped at %d of %d", next-1, n)
		}
		k, err := q.PopBatch(evs)
		if err != nil && k == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		for _, e := range evs[:k] {
			se := fifo.DecodeSessionEvent(&e)
			switch se.Type {
			case fifo.EventLocalAddr:
				if se.Local != local || flow.Handle(se.Handle).Index() != uint32(next) {
					t.Fatalf("local address record %+v before accept %d", se, next)
				}
				localAddrs++
			case fifo.EventAccepted:
				if got := flow.Handle(se.Handle).Index(); got != uint32(next) {
					t.Fatalf("accepted session %d, want %d (order or loss)", got, next)
				}
				next++
			}
		}
	}
	if localAddrs < n-16 {
		t.Errorf("%d local address records for %d accepts", localAddrs, n)
	}
	if waiting, lost := sessions.PostponedEvents(am); waiting != 0 || lost != 0 {
		t.Errorf("%d events still waiting, %d lost", waiting, lost)
	}
}
