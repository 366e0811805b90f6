package datapath_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/sessions"
)

// TestUnreachableConnectedSessionsDoNotStallOthers: app B's connected UDP
// sessions, more than it takes to fill the worker's hold slots at each
// session's share, keep their tx fifos full of datagrams to on-link
// addresses nobody answers. A connected session's datagrams are held for
// their neighbour (no early drop, as a listener's), so without a share per
// app B would hold every slot, and app A's replies, whose next hop is
// resolved, would wait in A's fifo until B's expired: A's echo is exact
// and takes no longer than a second or two.
func TestUnreachableConnectedSessionsDoNotStallOthers(t *testing.T) {
	r := newEngineRig(t, 1, 1520)
	b := r.attach(t)
	const hogs = 8
	var txs []*fifo.Fifo
	var worker uint32
	for i := range hogs {
		// 10.77.0.100-107: on the rig's link, owned by nobody.
		dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 77, 0, byte(100 + i)}), 9)
		opaque := uint32(100 + i)
		if _, err := r.l.ConnectURI(b.id, "udp://"+dst.String(), opaque); err != nil {
			t.Fatal(err)
		}
		ev := r.note.wait(t, "connected", func(e sessions.Event) bool { return e.Kind == sessions.EventConnected && e.Opaque == opaque })
		txs = append(txs, ev.Pair.Tx)
		worker = ev.Handle.Worker()
	}
	a := r.attach(t)
	r.listenEcho(t, a, "udp://0.0.0.0:9000")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var queued atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		payload := make([]byte, 64)
		for ctx.Err() == nil {
			full := 0
			for _, tx := range txs {
				err := tx.EnqueueDgram(&fifo.DgramHeader{}, payload)
				switch {
				case err == nil:
					queued.Add(1)
				case errors.Is(err, fifo.ErrNoSpace):
					full++
				default:
					t.Error(err)
					return
				}
				if tx.SetEvent() {
					r.kick(worker)
				}
			}
			if full == len(txs) {
				time.Sleep(200 * time.Microsecond)
			}
		}
	}()
	// Let B fill the hold slots first.
	time.Sleep(300 * time.Millisecond)
	const n = 2000
	start := time.Now()
	res := runClient(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, 0), netip.AddrPortFrom(r.p.B.IPv4, 9000), n, 1472, 32, 7)
	took := time.Since(start)

	// A's datagrams to a next hop B's host has not resolved yet (a new
	// address of host A) must wait for it too: they take slots B holds.
	fresh := netip.MustParseAddr("10.77.0.50")
	if err := r.p.A.Do(func() error {
		l, err := netlink.LinkByName(r.p.A.Link)
		if err != nil {
			return err
		}
		return netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: fresh.AsSlice(), Mask: net.CIDRMask(24, 32)}})
	}); err != nil {
		t.Fatal(err)
	}
	sink := hostUDP(t, r.p.A, netip.AddrPortFrom(fresh, 9100))
	if _, err := r.l.ConnectURI(a.id, "udp://"+netip.AddrPortFrom(fresh, 9100).String(), 200); err != nil {
		t.Fatal(err)
	}
	ev := r.note.wait(t, "connected", func(e sessions.Event) bool { return e.Kind == sessions.EventConnected && e.Opaque == 200 })
	const m = 20
	for i := range m {
		if err := ev.Pair.Tx.EnqueueDgram(&fifo.DgramHeader{}, content(uint32(i), 100)); err != nil {
			t.Fatal(err)
		}
	}
	if ev.Pair.Tx.SetEvent() {
		r.kick(ev.Handle.Worker())
	}
	got := 0
	buf := make([]byte, 2048)
	for got < m {
		_ = sink.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, err := sink.Read(buf)
		if err != nil {
			break
		}
		if string(buf[:k]) != string(content(uint32(got), 100)) {
			t.Fatalf("datagram %d to the new next hop: %d bytes, not the %dth sent", got, k, got)
		}
		got++
	}
	cancel()
	wg.Wait()
	st := r.eng.Stats()
	t.Logf("B queued %d; A echo %+v in %v; A to a new next hop %d of %d; drops %v; held %d", queued.Load(), res, took, got, m, st.Totals.Drops, st.Totals.Held)
	if got != m {
		t.Errorf("A's datagrams to a next hop that resolves, while B held every slot: %d of %d arrived", got, m)
	}
	if res.sent != n || res.received != n || res.mismatched != 0 {
		t.Fatalf("A's echo while B's sessions wait for neighbours: sent %d, received %d, mismatched %d", res.sent, res.received, res.mismatched)
	}
	if took > 3*time.Second {
		t.Fatalf("A's echo of %d datagrams took %v while B's sessions waited for neighbours", n, took)
	}
	if st.Totals.Held == 0 {
		t.Fatalf("B's datagrams were not held: drops %v", st.Totals.Drops)
	}
}
