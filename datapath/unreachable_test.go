package datapath_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
)

// TestUnreachableSenderDoesNotStallOthers: app B, registered with the worker
// before app A, keeps its tx fifo full of datagrams to on-link addresses
// nobody answers, so each waits for a neighbour that never resolves. Without
// a per-session share of the worker's hold slots B would take all of them
// again every time the old ones expire, before A's turn, and A's echoes
// would stop; with it A's echo is exact and B's datagrams are counted as
// no-neighbour drops.
func TestUnreachableSenderDoesNotStallOthers(t *testing.T) {
	r := newEngineRig(t, 1, 1520)
	b := r.attach(t)
	hb, err := r.l.BindURI(b.id, "udp://0.0.0.0:9001")
	if err != nil {
		t.Fatal(err)
	}
	pair, wb, err := r.l.ListenerPair(b.id, hb)
	if err != nil {
		t.Fatal(err)
	}
	btx := pair.Tx
	a := r.attach(t)
	r.listenEcho(t, a, "udp://0.0.0.0:9000")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var queued int
	wg.Add(1)
	go func() {
		defer wg.Done()
		payload := make([]byte, 64)
		var h fifo.DgramHeader
		h.Family = flow.Family4
		h.RemotePort = 9
		for i := 0; ctx.Err() == nil; i++ {
			// 10.77.0.100-199: on the rig's link, owned by nobody.
			h.Remote = flow.AddrBytes(netip.AddrFrom4([4]byte{10, 77, 0, byte(100 + i%100)}))
			err := btx.EnqueueDgram(&h, payload)
			switch {
			case err == nil:
				queued++
				if btx.SetEvent() {
					r.kick(wb)
				}
			case errors.Is(err, fifo.ErrNoSpace):
				r.kick(wb)
				time.Sleep(200 * time.Microsecond)
			default:
				t.Error(err)
				return
			}
		}
	}()
	// Let B fill the hold slots first.
	time.Sleep(300 * time.Millisecond)
	const n = 5000
	res := runClient(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, 0), netip.AddrPortFrom(r.p.B.IPv4, 9000), n, 1472, 32, 5)
	// Through at least one expiry of B's held datagrams (a second).
	time.Sleep(1500 * time.Millisecond)
	res2 := runClient(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, 0), netip.AddrPortFrom(r.p.B.IPv4, 9000), n, 1472, 32, 6)
	cancel()
	wg.Wait()
	st := r.eng.Stats()
	t.Logf("B queued %d; A echo %+v then %+v; drops %v; held %d", queued, res, res2, st.Totals.Drops, st.Totals.Held)
	for _, x := range []clientResult{res, res2} {
		if x.sent != n || x.received != n || x.mismatched != 0 {
			t.Fatalf("A's echo while B waits for neighbours: sent %d, received %d, mismatched %d", x.sent, x.received, x.mismatched)
		}
	}
	if st.Totals.Held == 0 || st.Totals.Drops["no-neighbour"] == 0 {
		t.Fatalf("B's datagrams were neither held nor dropped for want of a neighbour: held %d, drops %v", st.Totals.Held, st.Totals.Drops)
	}
}
