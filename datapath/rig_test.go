package datapath_test

// The rig: host A (the kernel's own UDP stack as the peer) and host B (the
// engine on B's veth end, an in-process app reading and writing its fifos
// with package fifo). Host A's veth keeps its default tx checksum offload:
// its datagrams reach XDP with partial UDP checksums (CHECKSUM_PARTIAL
// skbs), which the engine accepts on a veth (Config.Checksum auto). Tests
// that want the full checksums of a real wire turn A's offload off
// (newEngineRigCsum).

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/datapath/frame"
	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/loader"
	"github.com/xsessiond/xsessiond/nsbind"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
	"github.com/xsessiond/xsessiond/sessions"
)

type engineRig struct {
	p    *nstest.Pair
	ns   *nsbind.Namespace
	view *nsbind.View
	eng  *datapath.Engine
	l    *sessions.Layer
	note *notes
}

// notes keeps the events the layer delivers (for the fifos of connected
// sessions).
type notes struct {
	mu  sync.Mutex
	evs []sessions.Event
}

func (n *notes) Notify(ev sessions.Event) {
	n.mu.Lock()
	n.evs = append(n.evs, ev)
	n.mu.Unlock()
}

func (n *notes) find(kind sessions.EventKind, opaque uint32) (sessions.Event, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, e := range n.evs {
		if e.Kind == kind && e.Opaque == opaque {
			return e, true
		}
	}
	return sessions.Event{}, false
}

func newEngineRig(t *testing.T, queues, mtu int) *engineRig {
	return newEngineRigWith(t, queues, mtu, nil)
}

// newEngineRigWith is newEngineRig with the engine's Config adjusted by
// adjust (nil: left as is).
func newEngineRigWith(t *testing.T, queues, mtu int, adjust func(*datapath.Config)) *engineRig {
	return newEngineRigCsum(t, queues, mtu, false, adjust)
}

// newEngineRigCsum is newEngineRigWith; full turns host A's tx checksum
// offload off first, so that its datagrams carry full UDP checksums as
// from a real wire (it cannot be turned off once B's end runs XDP: the
// veth then fixes A's segmentation features).
func newEngineRigCsum(t *testing.T, queues, mtu int, full bool, adjust func(*datapath.Config)) *engineRig {
	t.Helper()
	nstest.RequirePrivileged(t)
	p := nstest.NewPair(t, nstest.Options{Queues: queues, MTU: mtu})
	if full {
		if err := xsktest.DisableTxOffload(p.A); err != nil {
			t.Fatal(err)
		}
	}
	ns, err := nsbind.OpenNamed(p.B.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	view, err := nsbind.NewView(ns, nsbind.ViewOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { view.Close() })
	cfg := datapath.Config{IfName: p.B.Link, Netns: ns, NetnsName: p.B.Name, XDPMode: "native"}
	if adjust != nil {
		adjust(&cfg)
	}
	eng, err := datapath.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := eng.Close(); err != nil {
			t.Errorf("engine close: %v", err)
		}
	})
	n := &notes{}
	l, err := sessions.New(sessions.Config{View: view, Memory: sessions.FifoMemory{}, Datapath: eng.Datapath(), Notifier: n,
		Workers: eng.Workers(), Default: sessions.NamespaceConfig{IfIndex: eng.IfIndex(), FIB4: eng.FIB(), FIB6: eng.FIB()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(l); err != nil {
		t.Fatal(err)
	}
	// Resolve the neighbours first: datagrams a kernel socket on A sends
	// while its neighbour entry for B resolves can leave out of order (one
	// sent as the entry turns valid overtakes those queued on it), and the
	// clients here count a reordered reply as lost.
	for _, dst := range []netip.Addr{p.B.IPv4, p.B.IPv6} {
		if err := p.A.Ping(dst); err != nil {
			t.Fatal(err)
		}
	}
	return &engineRig{p: p, ns: ns, view: view, eng: eng, l: l, note: n}
}

// app is an in-process app attached to the rig's layer.
type app struct {
	id  sessions.AppID
	at  sessions.Attached
	evq *fifo.EventQueue
}

var nextClient atomic.Uint64

func (r *engineRig) attach(t *testing.T) *app {
	t.Helper()
	at, err := r.l.Attach(sessions.AttachOptions{ClientID: nextClient.Add(1), Name: "test",
		RxFifoSize: 4 << 20, TxFifoSize: 4 << 20, SegmentSize: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.l.Detach(at.App) })
	m, _ := sessions.FifoManager(at.Memory)
	return &app{id: at.App, at: at, evq: m.EventQueue()}
}

func (r *engineRig) waitMirror(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.eng.WaitMirror(ctx); err != nil {
		t.Fatal(err)
	}
}

// kick wakes worker w (a sessions worker index).
func (r *engineRig) kick(w uint32) {
	fd := r.eng.KickFDs()[w]
	one := [8]byte{1}
	_, _ = unix.Write(fd, one[:])
}

// echo serves a datagram listener: every datagram goes back to its sender
// from the address it was sent to, until ctx ends.
func (r *engineRig) echo(ctx context.Context, a *app, rx, tx *fifo.Fifo, worker uint32) {
	hs := make([]fifo.DgramHeader, 64)
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	pay := make([][]byte, 64)
	evs := make([]fifo.Event, 64)
	for ctx.Err() == nil {
		rx.ClearEvent()
		n, _ := rx.DequeueDgrams(hs, bufs)
		if n == 0 {
			wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			_ = a.evq.Wait(wctx)
			cancel()
			_, _ = a.evq.PopBatch(evs)
			continue
		}
		for i := 0; i < n; i++ {
			pay[i] = bufs[i][:hs[i].Len]
		}
		for done := 0; done < n && ctx.Err() == nil; {
			k, err := tx.EnqueueDgrams(hs[done:n], pay[done:n])
			done += k
			if tx.SetEvent() {
				r.kick(worker)
			}
			if err == fifo.ErrNoSpace {
				time.Sleep(50 * time.Microsecond)
			} else if err != nil {
				return
			}
		}
	}
}

// listenEcho binds uri for a and runs an echo app on it until the test ends.
func (r *engineRig) listenEcho(t *testing.T, a *app, uri string) flow.Handle {
	t.Helper()
	h, err := r.l.BindURI(a.id, uri)
	if err != nil {
		t.Fatal(err)
	}
	pair, w, err := r.l.ListenerPair(a.id, h)
	if err != nil {
		t.Fatal(err)
	}
	rx, tx := pair.Rx, pair.Tx
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.echo(ctx, a, rx, tx, w) }()
	t.Cleanup(func() { cancel(); <-done })
	r.waitMirror(t)
	return h
}

// hostUDP opens a kernel UDP socket of host h bound to ap (port 0: an
// ephemeral one), closed when the test ends.
func hostUDP(t testing.TB, h *nstest.Host, ap netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := h.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// content is the payload of datagram seq: size bytes that only seq and
// size make (the first four carry seq when they fit).
func content(seq uint32, size int) []byte {
	b := make([]byte, size)
	var s [4]byte
	binary.BigEndian.PutUint32(s[:], seq)
	x := seq*2654435761 + uint32(size)
	for i := range b {
		if i < 4 {
			b[i] = s[i]
			continue
		}
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// clientResult is what one kernel client saw.
type clientResult struct {
	sent, received, mismatched int
}

// runClient sends n datagrams of random sizes in [1, maxSize] from a kernel
// UDP socket in h to dst and checks every byte of every echo. window > 0
// paces it (at most window datagrams outstanding); 0 sends as fast as the
// socket takes them. A reply is matched by content with a datagram not
// answered yet, in whatever order it comes: one flow is not always kept in
// order on its way back (the kernel queues a veth's frames on the backlog
// of the CPU that sent them, and the worker's thread may move between
// CPUs), so the reply to the last datagram is no sign that the others are
// in. The client reads until every datagram was answered or none came for
// 2 s.
func runClient(t *testing.T, h *nstest.Host, src netip.AddrPort, dst netip.AddrPort, n, maxSize, window int, seed uint64) clientResult {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(src))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadBuffer(8 << 20)
	_ = c.SetWriteBuffer(8 << 20)
	rng := rand.New(rand.NewPCG(seed, 1))
	sizes := make([]int, n)
	for i := range sizes {
		sizes[i] = 1 + rng.IntN(maxSize)
	}
	var res clientResult
	var received atomic.Int64
	var credits chan struct{} // window > 0: one token per datagram in flight
	if window > 0 {
		credits = make(chan struct{}, window)
	}
	// Datagrams of 4 bytes or more carry their sequence number; the few
	// shorter ones are looked up among the unanswered of their size.
	answered := make([]bool, n)
	late, highest := 0, -1 // replies that came after one of a later datagram
	short := map[int][]int{}
	for j, size := range sizes {
		if size < 4 {
			short[size] = append(short[size], j)
		}
	}
	match := func(got []byte) bool {
		k := len(got)
		if k >= 4 {
			j := int(binary.BigEndian.Uint32(got))
			if j >= n || answered[j] || sizes[j] != k || string(content(uint32(j), k)) != string(got) {
				return false
			}
			answered[j] = true
			if j < highest {
				late++
			}
			highest = max(highest, j)
			return true
		}
		for _, j := range short[k] {
			if !answered[j] && string(content(uint32(j), k)) == string(got) {
				answered[j] = true
				return true
			}
		}
		return false
	}
	recvDone := make(chan struct{})
	var sendDone atomic.Bool
	go func() {
		defer close(recvDone)
		buf := make([]byte, 65536)
		for received.Load() < int64(n) {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			k, err := c.Read(buf)
			if err != nil {
				// While the sender still waits for credits, a quiet
				// spell is no reason to stop reading: replies that come
				// after it would sit unread in the socket and the
				// sender would stall on credits they hold. The sender's
				// own stall (3 s without a credit) is the failure.
				if errors.Is(err, os.ErrDeadlineExceeded) && !sendDone.Load() {
					continue
				}
				return
			}
			if match(buf[:k]) {
				received.Add(1)
				if credits != nil {
					<-credits
				}
			} else {
				res.mismatched++
			}
		}
	}()
	for i := 0; i < n; i++ {
		if credits != nil {
			select {
			case credits <- struct{}{}:
			case <-time.After(3 * time.Second):
				t.Errorf("paced client stalled at %d sent, %d received", i, received.Load())
				res.sent = i
				sendDone.Store(true)
				<-recvDone
				res.received = int(received.Load())
				return res
			}
		}
		if _, err := c.WriteToUDPAddrPort(content(uint32(i), sizes[i]), dst); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	res.sent = n
	sendDone.Store(true)
	<-recvDone
	res.received = int(received.Load())
	if late > 0 {
		t.Logf("%d replies came after that of a later datagram", late)
	}
	return res
}

func TestEchoPaced(t *testing.T) {
	for _, fam := range []string{"ipv4", "ipv6", "ipv4-full-csum", "ipv6-full-csum"} {
		t.Run(fam, func(t *testing.T) {
			full := strings.HasSuffix(fam, "-full-csum")
			r := newEngineRigCsum(t, 1, 1520, full, nil)
			a := r.attach(t)
			src, dst, uri := netip.AddrPortFrom(r.p.A.IPv4, 0), netip.AddrPortFrom(r.p.B.IPv4, 9000), "udp://0.0.0.0:9000"
			if strings.HasPrefix(fam, "ipv6") {
				src, dst, uri = netip.AddrPortFrom(r.p.A.IPv6, 0), netip.AddrPortFrom(r.p.B.IPv6, 9000), "udp://[::]:9000"
			}
			r.listenEcho(t, a, uri)
			const n = 100000
			start := time.Now()
			res := runClient(t, r.p.A, src, dst, n, 1472, 64, 1)
			el := time.Since(start)
			st := r.eng.Stats()
			t.Logf("%s paced: sent %d received %d mismatched %d in %v (%.0f datagrams/s each way); totals %+v",
				fam, res.sent, res.received, res.mismatched, el, float64(res.received)/el.Seconds(), st.Totals)
			if res.sent != n || res.received != n || res.mismatched != 0 {
				t.Fatalf("sent %d, received %d, mismatched %d", res.sent, res.received, res.mismatched)
			}
			if st.Totals.Dropped != 0 {
				t.Fatalf("drops %+v", st.Totals.Drops)
			}
			// Offload on: A's datagrams come with partial checksums (but
			// not always all: the kernel completes some in software).
			if full && st.Totals.PartialCsum != 0 || !full && st.Totals.PartialCsum == 0 {
				t.Fatalf("partial checksums %d (full checksums: %v)", st.Totals.PartialCsum, full)
			}
		})
	}
}

// snmpUDP reads a counter of the Udp (or Udp6) line of /proc/net/snmp(6)
// in h's namespace.
func snmpUDP(t *testing.T, h *nstest.Host, v6 bool, name string) uint64 {
	t.Helper()
	var v uint64
	err := h.Do(func() error {
		if v6 {
			b, err := os.ReadFile("/proc/thread-self/net/snmp6")
			if err != nil {
				return err
			}
			for _, line := range strings.Split(string(b), "\n") {
				f := strings.Fields(line)
				if len(f) == 2 && f[0] == "Udp6"+name {
					v, _ = strconv.ParseUint(f[1], 10, 64)
				}
			}
			return nil
		}
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var hdr []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "Udp:" {
				continue
			}
			if hdr == nil {
				hdr = f
				continue
			}
			for i := range hdr {
				if hdr[i] == name && i < len(f) {
					v, _ = strconv.ParseUint(f[i], 10, 64)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestEchoUnpaced blasts datagrams with no pacing: losses are allowed, but
// every lost datagram must be counted somewhere: the engine's drops, the
// AF_XDP socket's kernel drops, or the client socket's receive errors.
// TestEchoIdleModes echoes through workers that sleep in poll at once or
// spin before sleeping, instead of the default naps under load.
func TestEchoIdleModes(t *testing.T) {
	modes := []struct {
		name string
		spin time.Duration
	}{{"poll", -1}, {"spin", 50 * time.Microsecond}}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			r := newEngineRigWith(t, 1, 1520, func(c *datapath.Config) { c.IdleNap, c.IdleSpin = -1, m.spin })
			a := r.attach(t)
			r.listenEcho(t, a, "udp://0.0.0.0:9000")
			const n = 20000
			res := runClient(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, 0), netip.AddrPortFrom(r.p.B.IPv4, 9000), n, 512, 64, 1)
			st := r.eng.Stats()
			for deadline := time.Now().Add(2 * time.Second); st.Totals.Delivered < n && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
				st = r.eng.Stats()
			}
			t.Logf("%s: sent %d received %d; totals %+v", m.name, res.sent, res.received, st.Totals)
			if res.sent != n || res.received != n || res.mismatched != 0 || st.Totals.Delivered != n {
				t.Fatalf("sent %d, received %d, mismatched %d, delivered %d", res.sent, res.received, res.mismatched, st.Totals.Delivered)
			}
			if st.Totals.Naps != 0 {
				t.Errorf("%d naps with IdleNap < 0", st.Totals.Naps)
			}
			// With a spin budget a worker spins after the loops that
			// received or sent.
			if spun := st.Totals.Spins > 0; spun != (m.spin > 0) {
				t.Errorf("spins %d with IdleSpin %v", st.Totals.Spins, m.spin)
			}
		})
	}
}

func TestEchoUnpaced(t *testing.T) {
	for _, fam := range []string{"ipv4", "ipv6"} {
		t.Run(fam, func(t *testing.T) {
			r := newEngineRig(t, 1, 1520)
			a := r.attach(t)
			v6 := fam == "ipv6"
			src, dst, uri := netip.AddrPortFrom(r.p.A.IPv4, 0), netip.AddrPortFrom(r.p.B.IPv4, 9000), "udp://0.0.0.0:9000"
			if v6 {
				src, dst, uri = netip.AddrPortFrom(r.p.A.IPv6, 0), netip.AddrPortFrom(r.p.B.IPv6, 9000), "udp://[::]:9000"
			}
			r.listenEcho(t, a, uri)
			lk0 := linkDrops(t, r.p.A) + linkDrops(t, r.p.B)
			sn0 := softnetDrops(t)
			rcvErr0 := snmpUDP(t, r.p.A, v6, "RcvbufErrors")
			inErr0 := snmpUDP(t, r.p.A, v6, "InErrors")
			res := runClient(t, r.p.A, src, dst, 100000, 1472, 0, 2)
			time.Sleep(200 * time.Millisecond)
			st := r.eng.Stats()
			var xskDrops uint64
			for _, q := range st.Queues {
				if q.XSK != nil {
					xskDrops += q.XSK.RxDropped + q.XSK.RxRingFull + q.XSK.TxInvalidDescs
				}
			}
			rcvErr := snmpUDP(t, r.p.A, v6, "RcvbufErrors") - rcvErr0
			inErr := snmpUDP(t, r.p.A, v6, "InErrors") - inErr0
			lost := uint64(res.sent - res.received)
			lk := linkDrops(t, r.p.A) + linkDrops(t, r.p.B) - lk0
			sn := softnetDrops(t) - sn0
			t.Logf("veth drops %d, softnet drops %d", lk, sn)
			// The veth counts an XDP redirect that found the AF_XDP rx
			// ring full as an rx drop too: logged, not added again.
			counted := st.Totals.Dropped + xskDrops + inErr
			t.Logf("%s unpaced: sent %d received %d lost %d; engine drops %v, xsk drops %d, client InErrors %d (RcvbufErrors %d); rx %d delivered %d tx %d",
				fam, res.sent, res.received, lost, st.Totals.Drops, xskDrops, inErr, rcvErr, st.Totals.Rx, st.Totals.Delivered, st.Totals.Tx)
			if res.mismatched != 0 {
				t.Fatalf("%d replies matched no datagram", res.mismatched)
			}
			if counted != lost {
				t.Fatalf("lost %d, counted %d", lost, counted)
			}
		})
	}
}

// TestAutoXDPMode checks what the default mode becomes on a veth: generic
// with one rx queue, native with several, and that datagrams go both ways
// in either.
func TestAutoXDPMode(t *testing.T) {
	for _, c := range []struct {
		queues int
		want   string
	}{{1, "generic"}, {2, "native"}} {
		t.Run(fmt.Sprintf("queues=%d", c.queues), func(t *testing.T) {
			r := newEngineRigWith(t, c.queues, 1500, func(cfg *datapath.Config) { cfg.XDPMode = "" })
			if got := r.eng.Stats().XDPMode; got != c.want {
				t.Fatalf("xdp mode %q on a veth with %d rx queues, want %q", got, c.queues, c.want)
			}
			a := r.attach(t)
			r.listenEcho(t, a, "udp://0.0.0.0:9000")
			const per = 200
			res := runClient(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, 20000), netip.AddrPortFrom(r.p.B.IPv4, 9000), per, 64, 16, 1)
			if res.sent != per || res.received != per || res.mismatched != 0 {
				t.Fatalf("sent %d, echoed %d, mismatched %d", res.sent, res.received, res.mismatched)
			}
		})
	}
}

func TestMultiQueueFlows(t *testing.T) {
	const queues, flows, per = 4, 64, 500
	r := newEngineRig(t, queues, 1500)
	a := r.attach(t)
	r.listenEcho(t, a, "udp://0.0.0.0:9000")
	lk0, sn0 := linkDrops(t, r.p.A)+linkDrops(t, r.p.B), softnetDrops(t)
	ie0, rb0 := snmpUDP(t, r.p.A, false, "InErrors"), snmpUDP(t, r.p.A, false, "RcvbufErrors")
	var wg sync.WaitGroup
	results := make([]clientResult, flows)
	for f := 0; f < flows; f++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[f] = runClient(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, uint16(20000+f)), netip.AddrPortFrom(r.p.B.IPv4, 9000), per, 1472, 16, uint64(f))
		}()
	}
	wg.Wait()
	sent, got, mis := 0, 0, 0
	for _, res := range results {
		sent += res.sent
		got += res.received
		mis += res.mismatched
	}
	t.Logf("flows %d: sent %d received %d; veth drops %d, softnet drops %d, client InErrors %d RcvbufErrors %d", flows, sent, got,
		linkDrops(t, r.p.A)+linkDrops(t, r.p.B)-lk0, softnetDrops(t)-sn0, snmpUDP(t, r.p.A, false, "InErrors")-ie0, snmpUDP(t, r.p.A, false, "RcvbufErrors")-rb0)
	// Workers publish their counts when a loop finds nothing more to do,
	// and their tx counts when completions come back, which can be just
	// after the last echo arrived (a worker that delivered the last
	// request may not have looped again yet): wait for them to settle.
	st := r.eng.Stats()
	for deadline := time.Now().Add(2 * time.Second); (st.Totals.Tx < uint64(sent) || st.Totals.Delivered < uint64(sent)) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		st = r.eng.Stats()
	}
	t.Logf("mismatched %d, held %d", mis, st.Totals.Held)
	var rxSum uint64
	for _, q := range st.Queues {
		t.Logf("queue %d: rx %d delivered %d tx %d drops %v", q.Queue, q.Rx, q.Delivered, q.Tx, q.Drops)
		rxSum += q.Rx
		if q.Rx == 0 {
			t.Errorf("queue %d received nothing", q.Queue)
		}
	}
	if sent != flows*per || got != sent || rxSum != uint64(sent) || st.Totals.Delivered != uint64(sent) || st.Totals.Tx != uint64(sent) {
		t.Fatalf("sent %d, echoed %d, engine rx %d delivered %d tx %d", sent, got, rxSum, st.Totals.Delivered, st.Totals.Tx)
	}
}

func TestConnectedUDP(t *testing.T) {
	for _, fam := range []string{"ipv4", "ipv6"} {
		t.Run(fam, func(t *testing.T) {
			r := newEngineRig(t, 1, 1500)
			a := r.attach(t)
			srvAddr := netip.AddrPortFrom(r.p.A.IPv4, 7000)
			if fam == "ipv6" {
				srvAddr = netip.AddrPortFrom(r.p.A.IPv6, 7000)
			}
			// The kernel server on A echoes.
			var srv *net.UDPConn
			if err := r.p.A.Do(func() error {
				var err error
				srv, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(srvAddr))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			_ = srv.SetReadBuffer(8 << 20)
			var srvGot atomic.Int64
			go func() {
				buf := make([]byte, 2048)
				for {
					n, from, err := srv.ReadFromUDPAddrPort(buf)
					if err != nil {
						return
					}
					srvGot.Add(1)
					_, _ = srv.WriteToUDPAddrPort(buf[:n], from)
				}
			}()
			res, err := r.l.ConnectURI(a.id, "udp://"+srvAddr.String(), 77)
			if err != nil {
				t.Fatal(err)
			}
			var ev sessions.Event
			for deadline := time.Now().Add(5 * time.Second); ; {
				var ok bool
				if ev, ok = r.note.find(sessions.EventConnected, 77); ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no connected event")
				}
				time.Sleep(time.Millisecond)
			}
			r.waitMirror(t)
			rx, tx := ev.Pair.Rx, ev.Pair.Tx
			t.Logf("half-open %#x connected as %#x: %v -> %v", uint64(res.Handle), uint64(ev.Handle), ev.Local, ev.Remote)
			const n = 10000
			const window = 32
			buf := make([]byte, 2048)
			var h fifo.DgramHeader
			sent, got := 0, 0
			deadline := time.Now().Add(15 * time.Second)
			for got < n && time.Now().Before(deadline) {
				for sent < n && sent-got < window {
					p := content(uint32(sent), 1+sent%1400)
					if err := tx.EnqueueDgram(&fifo.DgramHeader{}, p); err != nil {
						break
					}
					sent++
				}
				if tx.SetEvent() {
					r.kick(ev.Handle.Worker())
				}
				rx.ClearEvent()
				k, err := rx.DequeueDgram(&h, buf)
				if errors.Is(err, fifo.ErrEmpty) {
					time.Sleep(20 * time.Microsecond)
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				want := content(uint32(got), 1+got%1400)
				if string(buf[:k]) != string(want) {
					t.Fatalf("reply %d differs (len %d, want %d)", got, k, len(want))
				}
				if netip.AddrPortFrom(flow.AddrFrom(h.Remote, h.Family), h.RemotePort) != srvAddr {
					t.Fatalf("reply from %v", h)
				}
				got++
			}
			st := r.eng.Stats()
			t.Logf("%s connected: app sent %d, server got %d, app got %d; totals %+v", fam, sent, srvGot.Load(), got, st.Totals)
			if got != n || srvGot.Load() != n {
				t.Fatalf("app sent %d, server got %d, app got %d", sent, srvGot.Load(), got)
			}
			// Closing releases the reserved port in the kernel, once the
			// program no longer steers the session (WaitMirror waits for
			// that, as the daemon does before it answers the close).
			local := ev.Local
			if err := r.l.Disconnect(a.id, ev.Handle); err != nil {
				t.Fatal(err)
			}
			wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer wcancel()
			if err := r.eng.WaitMirror(wctx); err != nil {
				t.Fatal(err)
			}
			if err := r.p.B.Do(func() error {
				c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(local))
				if err == nil {
					c.Close()
				}
				return err
			}); err != nil {
				t.Fatalf("port %v still reserved after close: %v", local, err)
			}
		})
	}
}

// TestConnectReservesPort: while a connected session is open its local
// port cannot be bound by a kernel socket.
func TestConnectReservesPort(t *testing.T) {
	r := newEngineRig(t, 1, 1500)
	a := r.attach(t)
	if _, err := r.l.ConnectURI(a.id, fmt.Sprintf("udp://%v:7001", r.p.A.IPv4), 5); err != nil {
		t.Fatal(err)
	}
	var ev sessions.Event
	for deadline := time.Now().Add(5 * time.Second); ; {
		var ok bool
		if ev, ok = r.note.find(sessions.EventConnected, 5); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no connected event")
		}
		time.Sleep(time.Millisecond)
	}
	err := r.p.B.Do(func() error {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ev.Local))
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("binding the session's port %v: %v, want EADDRINUSE", ev.Local, err)
	}
}

// linkDrops returns the rx and tx drops of h's veth end.
func linkDrops(t *testing.T, h *nstest.Host) uint64 {
	t.Helper()
	var v uint64
	if err := h.Do(func() error {
		l, err := netlink.LinkByName(h.Link)
		if err != nil {
			return err
		}
		if s := l.Attrs().Statistics; s != nil {
			v = s.RxDropped + s.TxDropped
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// softnetDrops sums the backlog drops of every CPU (host-wide).
func softnetDrops(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		t.Fatal(err)
	}
	var v uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			x, _ := strconv.ParseUint(f[1], 16, 64)
			v += x
		}
	}
	return v
}

// TestKernelPathUntouched: while the echo runs through the engine, host A
// pings B and talks to a kernel UDP socket on another port of B.
func TestKernelPathUntouched(t *testing.T) {
	r := newEngineRig(t, 1, 1520)
	a := r.attach(t)
	r.listenEcho(t, a, "udp://0.0.0.0:9000")
	// A kernel echo server on B:9001.
	var ks *net.UDPConn
	if err := r.p.B.Do(func() error {
		var err error
		ks, err = net.ListenUDP("udp", &net.UDPAddr{Port: 9001})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := ks.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = ks.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	var wg sync.WaitGroup
	var echo clientResult
	wg.Add(1)
	go func() {
		defer wg.Done()
		echo = runClient(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, 0), netip.AddrPortFrom(r.p.B.IPv4, 9000), 20000, 1472, 64, 3)
	}()
	pings := 0
	for i := 0; i < 20; i++ {
		for _, dst := range []netip.Addr{r.p.B.IPv4, r.p.B.IPv6} {
			if err := r.p.A.Ping(dst); err != nil {
				t.Fatalf("ping %v: %v", dst, err)
			}
			pings++
		}
	}
	var kc clientResult
	for _, dst := range []netip.Addr{r.p.B.IPv4, r.p.B.IPv6} {
		src := netip.AddrPortFrom(r.p.A.IPv4, 0)
		if dst.Is6() {
			src = netip.AddrPortFrom(r.p.A.IPv6, 0)
		}
		res := runClient(t, r.p.A, src, netip.AddrPortFrom(dst, 9001), 1000, 1400, 8, 4)
		kc.sent += res.sent
		kc.received += res.received
	}
	wg.Wait()
	t.Logf("echo through the engine %d/%d; %d pings answered; kernel UDP socket %d/%d", echo.received, echo.sent, pings, kc.received, kc.sent)
	if echo.received != 20000 || kc.received != 2000 || kc.sent != 2000 {
		t.Fatalf("echo %+v, kernel %+v", echo, kc)
	}
	// Workers publish their counts when they run out of work, which can
	// be just after the last echo arrived: wait for them to settle.
	st := r.eng.Stats()
	for deadline := time.Now().Add(2 * time.Second); st.Totals.Delivered < 20000 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		st = r.eng.Stats()
	}
	if st.BPF["pass"] == 0 || st.Totals.Delivered != 20000 {
		t.Fatalf("bpf %v, delivered %d", st.BPF, st.Totals.Delivered)
	}
}

// badFrames returns broken variants of a valid A→B:port frame.
func badFrames(t *testing.T, p *nstest.Pair, port uint16) [][]byte {
	t.Helper()
	var tpl frame.Template
	if err := tpl.Prepare(frame.Spec{DstMAC: p.B.MAC, SrcMAC: p.A.MAC, Src: p.A.IPv4, Dst: p.B.IPv4, SrcPort: 5555, DstPort: port}); err != nil {
		t.Fatal(err)
	}
	good := make([]byte, 2048)
	n, err := tpl.Build(good, []byte("a datagram that is about to be broken in many ways"))
	if err != nil {
		t.Fatal(err)
	}
	good = good[:n]
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	l3, l4 := frame.EthHeaderLen, frame.EthHeaderLen+frame.IPv4HeaderLen
	fixIP := func(b []byte) {
		b[l3+10], b[l3+11] = 0, 0
		ihl := int(b[l3]&0xf) * 4
		binary.BigEndian.PutUint16(b[l3+10:], frame.Checksum(b[l3:l3+ihl]))
	}
	out := [][]byte{
		good[:10],          // truncated Ethernet
		good[:l3+10],       // truncated IPv4
		good[:l4],          // no UDP header
		good[:l4+4],        // truncated UDP
		good[:len(good)-5], // IP and UDP lengths beyond the frame
		mod(func(b []byte) []byte { b[l3+10] ^= 0x55; return b }),              // bad IP checksum
		mod(func(b []byte) []byte { b[len(b)-1] ^= 0x55; return b }),           // bad UDP checksum
		mod(func(b []byte) []byte { b[l4+5] = 4; return b }),                   // UDP length below 8
		mod(func(b []byte) []byte { b[l4+4], b[l4+5] = 0xff, 0xf0; return b }), // UDP length beyond the IP payload
		mod(func(b []byte) []byte { b[l3] = 0x44; fixIP(b); return b }),        // IHL 4
		mod(func(b []byte) []byte { b[l3] = 0x65; return b }),                  // version 6 in an IPv4 ethertype
		mod(func(b []byte) []byte { // IPv4 options, UDP checksum left for the old header
			o := append(append(append([]byte(nil), b[:l4]...), 1, 1, 1, 0), b[l4:]...)
			o[l3] = 0x46
			binary.BigEndian.PutUint16(o[l3+2:], binary.BigEndian.Uint16(o[l3+2:])+4)
			fixIP(o)
			o[len(o)-1] ^= 0x11
			return o
		}),
	}
	rng := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < 20; i++ {
		b := make([]byte, 14+rng.IntN(200))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		copy(b, p.B.MAC)
		if i%2 == 0 { // random bytes after an IPv4 ethertype
			b[12], b[13] = 0x08, 0x00
		}
		out = append(out, b)
	}
	return out
}

// inject sends frames out of h's veth with a packet socket.
func inject(t *testing.T, h *nstest.Host, frames [][]byte) {
	t.Helper()
	err := h.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: h.IfIndex, Halen: 6}
		copy(sa.Addr[:], []byte{0, 0, 0, 0, 0, 0})
		for _, f := range frames {
			if len(f) < 14 {
				// The kernel refuses frames shorter than a link header;
				// pad with zeros past what the frame says it holds.
				f = append(append([]byte(nil), f...), make([]byte, 14-len(f))...)
			}
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				return fmt.Errorf("inject %d bytes: %w", len(f), err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBadFrames injects broken frames from A while the echo runs: they are
// counted (by the XDP program, which passes what it cannot parse to the
// kernel, or by the worker's decoder) and dropped, and the echo goes on.
func TestBadFrames(t *testing.T) {
	r := newEngineRig(t, 1, 1520)
	a := r.attach(t)
	r.listenEcho(t, a, "udp://0.0.0.0:9000")
	bad := badFrames(t, r.p, 9000)
	before := r.eng.Stats()
	var wg sync.WaitGroup
	var echo clientResult
	wg.Add(1)
	go func() {
		defer wg.Done()
		echo = runClient(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, 0), netip.AddrPortFrom(r.p.B.IPv4, 9000), 20000, 1472, 64, 5)
	}()
	const rounds = 50
	for i := 0; i < rounds; i++ {
		inject(t, r.p.A, bad)
		time.Sleep(2 * time.Millisecond)
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond)
	st := r.eng.Stats()
	t.Logf("echo %d/%d during %d bad frames; worker drops %v; bpf malformed %d (was %d)", echo.received, echo.sent,
		rounds*len(bad), st.Totals.Drops, st.BPF["malformed"], before.BPF["malformed"])
	if echo.sent != 20000 || echo.received != 20000 {
		t.Fatalf("echo %+v", echo)
	}
	if st.Totals.Drops["bad-udp-csum"] < 2*rounds || st.Totals.Drops["bad-ip-csum"] < rounds {
		t.Fatalf("decoder drops %v", st.Totals.Drops)
	}
	if st.BPF["malformed"]-before.BPF["malformed"] < 4*rounds {
		t.Fatalf("bpf counters %v", st.BPF)
	}
	if st.Totals.Delivered != 20000 {
		t.Fatalf("delivered %d: a bad frame reached the app", st.Totals.Delivered)
	}
}

// TestCloseLeavesNothing: Close stops every goroutine, closes every fd,
// detaches the program and removes its pins, with traffic and sessions
// in flight. Descriptors, goroutines and the pins under the rig's
// namespace are checked with leakcheck (sets, polled until they settle).
func TestCloseLeavesNothing(t *testing.T) {
	nstest.RequirePrivileged(t)
	p := nstest.NewPair(t, nstest.Options{Queues: 2})
	ns, err := nsbind.OpenNamed(p.B.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	view, err := nsbind.NewView(ns, nsbind.ViewOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	for round := 0; round < 2; round++ {
		leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true,
			Dirs: []leakcheck.Dir{{Path: loader.DefaultPinRoot, Prefix: p.B.Name}}})
		eng, err := datapath.New(datapath.Config{IfName: p.B.Link, Netns: ns, NetnsName: p.B.Name})
		if err != nil {
			t.Fatal(err)
		}
		l, err := sessions.New(sessions.Config{View: view, Memory: sessions.FifoMemory{}, Datapath: eng.Datapath(),
			Workers: eng.Workers(), Default: sessions.NamespaceConfig{IfIndex: eng.IfIndex(), FIB4: eng.FIB(), FIB6: eng.FIB()}})
		if err != nil {
			t.Fatal(err)
		}
		if err := eng.Start(l); err != nil {
			t.Fatal(err)
		}
		r := &engineRig{p: p, ns: ns, view: view, eng: eng, l: l, note: &notes{}}
		at, err := l.Attach(sessions.AttachOptions{ClientID: nextClient.Add(1), SegmentSize: 8 << 20})
		if err != nil {
			t.Fatal(err)
		}
		h, err := l.BindURI(at.App, "udp://0.0.0.0:9000")
		if err != nil {
			t.Fatal(err)
		}
		pair, w, _ := l.ListenerPair(at.App, h)
		rx, tx := pair.Rx, pair.Tx
		m, _ := sessions.FifoManager(at.Memory)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.echo(ctx, &app{id: at.App, at: at, evq: m.EventQueue()}, rx, tx, w) }()
		r.waitMirror(t)
		if _, err := l.ConnectURI(at.App, fmt.Sprintf("udp://%v:7000", p.A.IPv4), 1); err != nil {
			t.Fatal(err)
		}
		res := runClient(t, p.A, netip.AddrPortFrom(p.A.IPv4, 0), netip.AddrPortFrom(p.B.IPv4, 9000), 2000, 1000, 32, 7)
		if res.received != 2000 {
			t.Fatalf("round %d: echo %+v", round, res)
		}
		pin := eng.Stats().PinDir
		cancel()
		<-done
		// The daemon's order: apps go first; the memory they held is
		// freed once the workers drained (Close drains what is left).
		if err := l.Detach(at.App); err != nil {
			t.Fatal(err)
		}
		if err := eng.Close(); err != nil {
			t.Fatal(err)
		}
		if err := eng.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("pin dir %s: %v", pin, err)
		}
		if err := p.B.Do(func() error {
			lk, err := netlink.LinkByName(p.B.Link)
			if err != nil {
				return err
			}
			if x := lk.Attrs().Xdp; x != nil && x.Attached {
				return fmt.Errorf("XDP program %d still attached", x.ProgId)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		// The segment memory of the app was closed by Detach; what is
		// left must be back to where it was.
		if !leaks.Check(t) {
			t.Fatalf("round %d left the above behind", round)
		}
	}
}
