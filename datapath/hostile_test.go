package datapath_test

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
	"github.com/xsessiond/xsessiond/sessions"
)

// scribble plays a malicious app on its own shared memory: it writes
// random indices, garbage datagram headers and random header bytes into
// rx, tx and evq (all of them the app's own), and wakes worker w as an
// app that queued datagrams would, until ctx ends.
func (r *engineRig) scribble(ctx context.Context, rx, tx, evq *fifo.Fifo, w uint32, seed uint64) (rounds int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	size := tx.Size()
	data := fifotest.Data(tx)
	// put writes b into tx's data at stream index pos, wrapping.
	put := func(pos uint32, b []byte) {
		for i := range b {
			data[(pos+uint32(i))&(size-1)] = b[i]
		}
	}
	// Headers the engine must refuse: lengths beyond any buffer or the
	// fifo, a bad family, zero lengths and ports, random bytes.
	bad := func(k int) []byte {
		var hb [fifo.DgramHeaderSize]byte
		le := binary.NativeEndian
		switch k % 8 {
		case 0:
			le.PutUint32(hb[0:], 0xffffffff)
			hb[8] = 4
		case 1:
			le.PutUint32(hb[0:], size) // past the fifo's data
			hb[8] = 4
		case 2:
			le.PutUint32(hb[0:], size-fifo.DgramHeaderSize+8)
			hb[8] = 6
		case 3: // zero length, no destination
			hb[8] = 4
		case 4: // bad family
			le.PutUint32(hb[0:], 16)
			le.PutUint16(hb[4:], 7)
			hb[8] = 9
			hb[16], hb[17], hb[18], hb[19] = 10, 77, 0, 1
		case 5: // longer than a frame holds
			le.PutUint32(hb[0:], 4000)
			hb[8] = 4
		case 6: // remote port 0
			le.PutUint32(hb[0:], 32)
			hb[8] = 4
			hb[16], hb[17], hb[18], hb[19] = 10, 77, 0, 1
		default:
			for i := range hb {
				hb[i] = byte(rng.Uint32())
			}
		}
		return hb[:]
	}
	for ctx.Err() == nil {
		rounds++
		switch rng.IntN(6) {
		case 0: // a random consumer index on rx
			fifotest.SetHead(rx, rng.Uint32())
		case 1: // a random producer index on tx
			fifotest.SetTail(tx, rng.Uint32())
		case 2, 3: // a garbage record where the engine reads next
			h := fifotest.Head(tx)
			k := rng.IntN(16)
			put(h, bad(k))
			var n uint32
			switch rng.IntN(5) {
			case 0: // exactly one record, as the header says
				n = fifo.DgramHeaderSize
				if l := binary.NativeEndian.Uint32(fifotest.Data(tx)[h&(size-1):]); h&(size-1) <= size-4 && l <= size-fifo.DgramHeaderSize {
					n = uint32(fifo.DgramRecordSize(int(l)))
				}
			case 4:
				n = fifo.DgramHeaderSize
			case 1:
				n = fifo.DgramHeaderSize + uint32(rng.IntN(int(size)))
			case 2:
				n = size
			default:
				n = size + 1 + uint32(rng.IntN(1<<20))
			}
			fifotest.SetTail(tx, h+n)
		case 4: // random bytes over a whole header
			f := []*fifo.Fifo{rx, tx, evq}[rng.IntN(3)]
			hdr := fifotest.Header(f)
			h := fifotest.Head(tx)
			for i := range hdr {
				hdr[i] = byte(rng.Uint32())
			}
			if f == tx {
				// The engine never reads back its own consumer index:
				// put it back so that later garbage records land where
				// the engine reads.
				fifotest.SetHead(tx, h)
			}
		case 5: // random bytes in the tx data
			for i := 0; i < 256; i++ {
				data[rng.IntN(len(data))] = byte(rng.Uint32())
			}
		}
		// As the app side does after queueing.
		if tx.SetEvent() || rng.IntN(4) == 0 {
			r.kick(w)
		}
		if rounds%64 == 0 {
			time.Sleep(20 * time.Microsecond)
		}
	}
	return rounds
}

// TestHostileAppDoesNotHurtOthers: app B scribbles over its own fifos
// (indices, datagram headers, whole headers, its event queue) while app A
// echoes on the same worker. A's echo is exact, B's damage is counted as
// drops, and after B detaches the engine still serves A.
func TestHostileAppDoesNotHurtOthers(t *testing.T) {
	r := newEngineRig(t, 1, 1520)
	a := r.attach(t)
	r.listenEcho(t, a, "udp://0.0.0.0:9000")

	at, err := r.l.Attach(sessions.AttachOptions{ClientID: nextClient.Add(1), Name: "hostile",
		RxFifoSize: 64 << 10, TxFifoSize: 64 << 10, SegmentSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	detached := false
	t.Cleanup(func() {
		if !detached {
			_ = r.l.Detach(at.App)
		}
	})
	hb, err := r.l.BindURI(at.App, "udp://0.0.0.0:9001")
	if err != nil {
		t.Fatal(err)
	}
	pair, wb, err := r.l.ListenerPair(at.App, hb)
	if err != nil {
		t.Fatal(err)
	}
	brx, btx := pair.Rx, pair.Tx
	if brx == nil || btx == nil {
		t.Fatal("listener pair without fifos")
	}
	m, _ := sessions.FifoManager(at.Memory)
	r.waitMirror(t)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var rounds int
	wg.Add(1)
	go func() { defer wg.Done(); rounds = r.scribble(ctx, brx, btx, m.EventQueue().Fifo(), wb, 11) }()
	// A kernel socket on A keeps sending to B's port.
	var bsent int
	wg.Add(1)
	go func() {
		defer wg.Done()
		var c *net.UDPConn
		if err := r.p.A.Do(func() error {
			var err error
			c, err = net.ListenUDP("udp", &net.UDPAddr{IP: r.p.A.IPv4.AsSlice()})
			return err
		}); err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		dst := netip.AddrPortFrom(r.p.B.IPv4, 9001)
		for i := 0; ctx.Err() == nil; i++ {
			if _, err := c.WriteToUDPAddrPort(content(uint32(i), 1+i%1400), dst); err == nil {
				bsent++
			}
			if i%16 == 0 {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	stopB := func() {
		cancel()
		wg.Wait()
	}

	const n = 60000
	res := runClient(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, 0), netip.AddrPortFrom(r.p.B.IPv4, 9000), n, 1472, 64, 21)
	stopB()
	st := r.eng.Stats()
	var bt, atg udp.Stats
	for _, x := range st.Targets {
		if x.Handle == hb {
			bt = x
		} else {
			atg = x
		}
	}
	t.Logf("A echo: sent %d received %d mismatched %d; B: %d scribbles, %d datagrams sent to it", res.sent, res.received, res.mismatched, rounds, bsent)
	t.Logf("drops %v; rx %d delivered %d tx %d", st.Totals.Drops, st.Totals.Rx, st.Totals.Delivered, st.Totals.Tx)
	t.Logf("B target %+v", bt)
	t.Logf("A target %+v", atg)
	if res.sent != n || res.received != n || res.mismatched != 0 {
		t.Fatalf("A's echo: sent %d, received %d, mismatched %d", res.sent, res.received, res.mismatched)
	}
	d := st.Totals.Drops
	if d["fifo-corrupt"] == 0 {
		t.Errorf("no fifo-corrupt drops for B's rx fifo: %v", d)
	}
	if d["tx-fifo-corrupt"]+d["tx-bad-header"]+d["tx-too-long"] == 0 {
		t.Errorf("no tx drops for B's tx fifo: %v", d)
	}
	if bt.DropCorrupt == 0 || bt.TxCorrupt+bt.TxDrops == 0 {
		t.Errorf("B's target shows no damage: %+v", bt)
	}
	if d["no-session"] != 0 {
		t.Errorf("no-session drops %d", d["no-session"])
	}
	// A's own counters: nothing of A's was dropped.
	if atg.Delivered < n || atg.Sent < n || atg.DropFull+atg.DropTooBig+atg.DropCorrupt+atg.TxDrops+atg.TxCorrupt != 0 {
		t.Errorf("A's target %+v", atg)
	}

	// B leaves; A is served as before.
	if err := r.l.Detach(at.App); err != nil {
		t.Fatalf("detach B: %v", err)
	}
	detached = true
	res = runClient(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, 0), netip.AddrPortFrom(r.p.B.IPv4, 9000), 5000, 1472, 64, 22)
	if res.sent != 5000 || res.received != 5000 || res.mismatched != 0 {
		t.Fatalf("A's echo after B left: %+v", res)
	}
}
