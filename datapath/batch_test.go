package datapath

import (
	"runtime"
	"time"

	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/xsessiond/xsessiond/datapath/frame"
	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind"
	"github.com/xsessiond/xsessiond/sessions"
	"github.com/xsessiond/xsessiond/sessions/sessionstest"
)

// The in-memory world of these tests: the engine's interface is ifindex 2
// with 10.9.0.2 and fd09::2, FIB 7; peers are 10.9.0.1 and fd09::1.
var (
	tLocal4  = netip.MustParseAddr("10.9.0.2")
	tLocal6  = netip.MustParseAddr("fd09::2")
	tRemote4 = netip.MustParseAddr("10.9.0.1")
	tRemote6 = netip.MustParseAddr("fd09::1")
	tMAC     = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
	tPeerMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
)

const tFIB flow.FIBID = 7

// memRig is an Engine without kernel objects: one worker with no socket,
// a session layer with fifo memory, and an app. processBatch and the
// Datapath methods need nothing more.
type memRig struct {
	e   *Engine
	w   *worker
	l   *sessions.Layer
	app sessions.AppID
	at  sessions.Attached
}

func newMemRig(t testing.TB, fifoSize uint32) *memRig {
	t.Helper()
	e := &Engine{cfg: Config{Batch: DefaultBatch}, fib: tFIB, conns: map[flow.Handle]*connectedSession{}, claims: make(chan claim, 16),
		ifc: nsbind.Interface{Index: 2, MAC: tMAC, MTU: 1500}}
	e.lis.Store(&map[flow.Handle]*udp0{})
	e.est.Store(newEstTable(nil))
	e.work = []*worker{newWorker(e, 0, 0, nil, -1)}
	e.dp = &enginePath{e: e}
	view := sessionstest.NewView().Add(2, tFIB, tLocal4).Add(2, tFIB, tLocal6)
	l, err := sessions.New(sessions.Config{View: view, Memory: sessions.FifoMemory{}, Datapath: e.dp, Workers: 1,
		Default: sessions.NamespaceConfig{IfIndex: 2, FIB4: tFIB, FIB6: tFIB}})
	if err != nil {
		t.Fatal(err)
	}
	e.layer.Store(l)
	e.work[0].shard = l.Shard(0)
	at, err := l.Attach(sessions.AttachOptions{ClientID: 1, Name: "bench", RxFifoSize: fifoSize, TxFifoSize: 4096, SegmentSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = l.Detach(at.App)
		l.Shard(0).Drain()
	})
	return &memRig{e: e, w: e.work[0], l: l, app: at.App, at: at}
}

// listen binds uri and returns the listener's rx fifo, with the worker's
// mailbox drained.
func (r *memRig) listen(t testing.TB, uri string) (flow.Handle, *fifo.Fifo) {
	t.Helper()
	h, err := r.l.BindURI(r.app, uri)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := r.l.ListenerPair(r.app, h)
	if err != nil {
		t.Fatal(err)
	}
	r.l.Shard(0).Drain()
	rx := p.Rx
	return h, rx
}

// udpFrames builds n frames from peer to local:port with payloads of size
// bytes, source ports counting from 40000.
func udpFrames(t testing.TB, n int, peer, local netip.Addr, port uint16, size int) [][]byte {
	t.Helper()
	frames := make([][]byte, n)
	for i := range frames {
		var tpl frame.Template
		if err := tpl.Prepare(frame.Spec{DstMAC: tMAC, SrcMAC: tPeerMAC, Src: peer, Dst: local, SrcPort: uint16(40000 + i), DstPort: port}); err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, size)
		for j := range payload {
			payload[j] = byte(i + j)
		}
		buf := make([]byte, 2048)
		fl, err := tpl.Build(buf, payload)
		if err != nil {
			t.Fatal(err)
		}
		frames[i] = buf[:fl]
	}
	return frames
}

func TestProcessBatch_DeliversWithHeader(t *testing.T) {
	for _, fam := range []struct {
		name        string
		peer, local netip.Addr
		uri         string
	}{{"ipv4", tRemote4, tLocal4, "udp://0.0.0.0:9000"}, {"ipv6", tRemote6, tLocal6, "udp://[::]:9000"}} {
		t.Run(fam.name, func(t *testing.T) {
			r := newMemRig(t, 1<<20)
			h, rx := r.listen(t, fam.uri)
			frames := udpFrames(t, 8, fam.peer, fam.local, 9000, 100)
			r.w.processBatch(frames)
			if r.w.c.Delivered != 8 {
				t.Fatalf("delivered %d, counters %+v", r.w.c.Delivered, r.w.c)
			}
			buf := make([]byte, 2048)
			for i := 0; i < 8; i++ {
				var dh fifo.DgramHeader
				n, err := rx.DequeueDgram(&dh, buf)
				if err != nil {
					t.Fatal(err)
				}
				var p frame.Packet
				if frame.Decode(frames[i], &p) != frame.OK {
					t.Fatal("frame does not decode")
				}
				if string(buf[:n]) != string(p.Payload(frames[i])) {
					t.Fatalf("datagram %d: payload differs", i)
				}
				if dh.Remote != flow.AddrBytes(fam.peer) || dh.RemotePort != uint16(40000+i) ||
					dh.Local != flow.AddrBytes(fam.local) || dh.LocalPort != 9000 || dh.Family != p.Family {
					t.Fatalf("datagram %d: header %+v", i, dh)
				}
			}
			// One EventRx for the batch.
			evs := make([]fifo.Event, 8)
			q := eventQueue(t, r.at)
			n, err := q.PopBatch(evs)
			if err != nil || n != 1 || evs[0].Type != fifo.EventRx || evs[0].Handle != uint64(h) {
				t.Fatalf("events %v %v", evs[:n], err)
			}
		})
	}
}

func eventQueue(t testing.TB, at sessions.Attached) *fifo.EventQueue {
	m, ok := sessions.FifoManager(at.Memory)
	if !ok || m.EventQueue() == nil {
		t.Fatal("no event queue")
	}
	return m.EventQueue()
}

func TestProcessBatch_CountsDrops(t *testing.T) {
	r := newMemRig(t, 4096) // room for a few datagrams only
	_, rx := r.listen(t, "udp://10.9.0.2:9000")
	good := udpFrames(t, 64, tRemote4, tLocal4, 9000, 200)
	other := udpFrames(t, 3, tRemote4, tLocal4, 9999, 10) // no listener
	bad := append([]byte(nil), good[0]...)
	bad[len(bad)-1] ^= 0xff // payload changed: UDP checksum fails
	short := good[1][:20]
	batch := append(append(append([][]byte{}, good...), other...), bad, short, nil)
	r.w.processBatch(batch)
	c := r.w.c
	full := c.Drops[dropFifoFull]
	if c.Delivered == 0 || full == 0 || c.Delivered+full != 64 {
		t.Fatalf("delivered %d + fifo-full %d != 64", c.Delivered, full)
	}
	if c.Drops[dropNoSession] != 3 || c.Bad[frame.BadUDPCsum] != 1 || c.Bad[frame.TruncatedIP]+c.Bad[frame.TruncatedEth] != 2 {
		t.Fatalf("counters %+v", c)
	}
	if rx.MaxDequeue() == 0 {
		t.Fatal("nothing queued")
	}
}

// TestProcessBatch_DropsOtherHosts: frames to another host's unicast MAC
// or tagged for a VLAN are dropped as other-host, as the kernel drops them
// (PACKET_OTHERHOST), though a wildcard listener has their port; the
// broadcast MAC and a priority tag (VLAN id 0) are delivered.
func TestProcessBatch_DropsOtherHosts(t *testing.T) {
	r := newMemRig(t, 1<<20)
	r.listen(t, "udp://0.0.0.0:9000")
	var frames [][]byte
	for _, s := range []frame.Spec{
		{DstMAC: tMAC},
		{DstMAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}},
		{DstMAC: tMAC, VLAN: true, VLANTCI: 100},
		{DstMAC: tMAC, VLAN: true, VLANTCI: 0x6000},
		{DstMAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
	} {
		s.SrcMAC, s.Src, s.Dst, s.SrcPort, s.DstPort = tPeerMAC, tRemote4, tLocal4, 40000, 9000
		var tpl frame.Template
		if err := tpl.Prepare(s); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		n, err := tpl.Build(buf, []byte("payload"))
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, buf[:n])
	}
	r.w.processBatch(frames)
	if c := r.w.c; c.Delivered != 3 || c.Drops[dropOtherHost] != 2 {
		t.Fatalf("delivered %d, other-host %d; want 3 and 2 (counters %+v)", c.Delivered, c.Drops[dropOtherHost], c)
	}
}

func TestProcessBatch_ConnectedBeforeListener(t *testing.T) {
	r := newMemRig(t, 1<<20)
	_, lrx := r.listen(t, "udp://0.0.0.0:9000")
	frames := udpFrames(t, 2, tRemote4, tLocal4, 9000, 10)
	// A connected session on the first frame's 5-tuple.
	var p frame.Packet
	frame.Decode(frames[0], &p)
	tup := p.FiveTuple()
	tgt, crx := newConnTarget(t, r)
	m := map[flow.FiveTuple]*udp0{tup: tgt}
	r.e.est.Store(newEstTable(m))
	r.w.processBatch(frames)
	if crx.MaxDequeue() == 0 || lrx.MaxDequeue() == 0 {
		t.Fatalf("connected %d bytes, listener %d bytes", crx.MaxDequeue(), lrx.MaxDequeue())
	}
	tgt.Kill()
	before := r.w.c.Drops[dropNoSession]
	r.w.processBatch(frames[:1])
	if r.w.c.Drops[dropNoSession] != before+1 {
		t.Fatal("datagram for a dead target not dropped")
	}
}

func TestProcessBatch_NoAllocs(t *testing.T) {
	r := newMemRig(t, 1<<20)
	_, rx := r.listen(t, "udp://0.0.0.0:9000")
	q := eventQueue(t, r.at)
	evs := make([]fifo.Event, 16)
	for _, size := range []int{1, 64, 1472} {
		frames := udpFrames(t, DefaultBatch, tRemote4, tLocal4, 9000, size)
		allocs := testing.AllocsPerRun(200, func() {
			r.w.processBatch(frames)
			_ = rx.Drop(rx.MaxDequeue())
			rx.ClearEvent() // so that every batch signals the app
			_, _ = q.PopBatch(evs)
		})
		if allocs != 0 {
			t.Errorf("%d-byte datagrams: %v allocations per batch", size, allocs)
		}
		if r.w.c.Drops[dropFifoFull] != 0 {
			t.Fatalf("drops %+v", r.w.c.Drops)
		}
	}
}

func BenchmarkWorkerUDP(b *testing.B) {
	for _, size := range []int{64, 1400} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			r := newMemRig(b, 1<<20)
			_, rx := r.listen(b, "udp://0.0.0.0:9000")
			frames := udpFrames(b, DefaultBatch, tRemote4, tLocal4, 9000, size)
			// The thread's own CPU time beside wall time: on a shared
			// machine wall time counts other processes' turns.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ReportAllocs()
			b.SetBytes(int64(size * len(frames)))
			b.ResetTimer()
			cpu0 := threadCPU(b)
			for b.Loop() {
				r.w.processBatch(frames)
				_ = rx.Drop(rx.MaxDequeue())
			}
			cpu := threadCPU(b) - cpu0
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(frames)), "ns/packet")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*len(frames)), "cpu-ns/packet")
			if r.w.c.Delivered != uint64(b.N*len(frames)) {
				b.Fatalf("delivered %d of %d", r.w.c.Delivered, b.N*len(frames))
			}
		})
	}
}

// BenchmarkMemmove is the baseline of BenchmarkWorkerUDP: copying the same
// frames' payloads into one buffer, nothing else.
func BenchmarkMemmove(b *testing.B) {
	for _, size := range []int{64, 1400} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			frames := udpFrames(b, DefaultBatch, tRemote4, tLocal4, 9000, size)
			off := len(frames[0]) - size
			dst := make([]byte, 1<<20)
			b.ReportAllocs()
			b.SetBytes(int64(size * len(frames)))
			b.ResetTimer()
			for b.Loop() {
				o := 0
				for _, f := range frames {
					o += copy(dst[o:], f[off:])
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(frames)), "ns/packet")
		})
	}
}

type udp0 = udp.Target

// newConnTarget makes a connected-session Target with a pair of the rig's
// app.
func newConnTarget(t testing.TB, r *memRig) (*udp.Target, *fifo.Fifo) {
	t.Helper()
	p, _, err := r.at.Memory.AllocPair(1<<16, 4096)
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := udp.NewTarget(udp.KindConnected, flow.MakeHandle(0, 99), r.app, 0, p, r.at.Memory)
	if err != nil {
		t.Fatal(err)
	}
	rx := p.Rx
	return tgt, rx
}

// TestTCPWithoutStack: an Engine without a TCP stack (not made by New)
// accepts a global TCP listener with no datagram Target (cut-through
// only); TCP and UDP changes both belong in the program's maps; a connect
// to a remote TCP peer fails at once.
func TestTCPWithoutStack(t *testing.T) {
	r := newMemRig(t, 1<<16)
	f := r.l.Subscribe(16)
	defer f.Close()
	th, err := r.l.BindURI(r.app, "tcp://0.0.0.0:8080")
	if err != nil {
		t.Fatalf("global TCP bind: %v", err)
	}
	uh, _ := r.listen(t, "udp://0.0.0.0:8080")
	if lis := *r.e.lis.Load(); len(lis) != 1 || lis[uh] == nil {
		t.Fatalf("datagram listeners %v", lis)
	}
	for _, want := range []struct {
		h      flow.Handle
		served bool
	}{{th, true}, {uh, true}} {
		c := <-f.C()
		if c.Handle != want.h {
			t.Fatalf("change %+v, want handle %#x", c, uint64(want.h))
		}
		if got := served(&c); got != want.served {
			t.Fatalf("change %+v: served %v, want %v", c, got, want.served)
		}
	}
	r.e.started.Store(true)
	defer r.e.started.Store(false)
	_, err = r.l.ConnectURI(r.app, "tcp://10.9.0.1:80", 1)
	if !errors.Is(err, flow.ErrNotSupported) || !strings.Contains(err.Error(), "no tcp stack") {
		t.Fatalf("connect to a remote TCP peer: %v", err)
	}
	if err := r.l.Unbind(r.app, th); err != nil {
		t.Fatal(err)
	}
}

// TestEstTableLookup: the port bitmap only lets the map answer.
func TestEstTableLookup(t *testing.T) {
	r := newMemRig(t, 1<<16)
	tgt, _ := newConnTarget(t, r)
	k := flow.FiveTuple{Local: flow.AddrBytes(tLocal4), LocalPort: 40001, Remote: flow.AddrBytes(tRemote4),
		RemotePort: 7000, Proto: flow.TransportUDP, Family: flow.Family4}
	et := newEstTable(map[flow.FiveTuple]*udp0{k: tgt})
	if et.lookup(&k) != tgt {
		t.Fatal("session not found")
	}
	other := k
	other.RemotePort++ // same local port, another remote
	if et.lookup(&other) != nil {
		t.Fatal("another remote on the session's port found it")
	}
	other = k
	other.LocalPort = 9000
	if et.lookup(&other) != nil || newEstTable(nil).lookup(&k) != nil {
		t.Fatal("lookup on another port or in an empty table found something")
	}
}

// benchRules returns n global UDP rules of the kind a host filters its
// wire traffic with: remote prefixes of every length from /8 to /32 over
// the whole address space, a third with this host's address as the local
// prefix, a fifth with a remote port, half of them drop and half allow.
// None matches a remote in avoid (the traffic being measured).
func benchRules(n int, avoid []netip.Addr) []sessions.Rule {
	rnd := rand.New(rand.NewPCG(3, 3))
	seen := map[sessions.Rule]bool{}
	rules := make([]sessions.Rule, 0, n)
outer:
	for len(rules) < n {
		a := netip.AddrFrom4([4]byte{byte(rnd.IntN(256)), byte(rnd.IntN(256)), byte(rnd.IntN(256)), byte(rnd.IntN(256))})
		ru := sessions.Rule{Transport: flow.TransportUDP, Remote: netip.PrefixFrom(a, 8+rnd.IntN(25)).Masked()}
		if rnd.IntN(3) == 0 {
			ru.Local = netip.PrefixFrom(tLocal4, 32)
		}
		if rnd.IntN(5) == 0 {
			ru.RemotePort = uint16(1 + rnd.IntN(65535))
		}
		if seen[ru] {
			continue
		}
		for _, x := range avoid {
			if ru.Remote.Contains(x) {
				continue outer
			}
		}
		seen[ru] = true
		ru.Action = sessions.RuleDrop + sessions.RuleAction(len(rules)%2)
		rules = append(rules, ru)
	}
	return rules
}

// rulePeers are the remotes of the rules benchmark's traffic: one batch
// from as many hosts.
func rulePeers(n int) []netip.Addr {
	peers := make([]netip.Addr, n)
	for i := range peers {
		peers[i] = netip.AddrFrom4([4]byte{10, 9, byte(1 + i/250), byte(1 + i%250)})
	}
	return peers
}

// BenchmarkWorkerUDPRules is a listener hit (the worker's per-datagram
// path, 64-byte datagrams from 64 remotes) with no rules, with 10,000
// global rules none of which matches, and with those plus an allow rule
// for the remotes (so that every datagram is matched and counted). The
// 8kflows cases are the worst for the worker's rule cache: every datagram
// of a new flow (8 times as many flows as the cache has entries, each
// batch from 64 remotes), so that each one misses it (after the first
// window the cache steps aside and the table answers directly); their
// frames no longer fit in the CPU's caches, so they compare with each
// other only.
func BenchmarkWorkerUDPRules(b *testing.B) {
	peers := rulePeers(DefaultBatch)
	for _, c := range []struct {
		name  string
		rules int
		allow bool
		ports int // source ports per remote: flows = remotes * ports
	}{{"0rules", 0, false, 1}, {"10krules", 10000, false, 1}, {"10krules+allow", 10000, true, 1},
		{"0rules+8kflows", 0, false, 8 << ruleCacheBits / DefaultBatch}, {"10krules+allow+8kflows", 10000, true, 8 << ruleCacheBits / DefaultBatch}} {
		b.Run(c.name, func(b *testing.B) {
			r := newMemRig(b, 1<<20)
			_, rx := r.listen(b, "udp://0.0.0.0:9000")
			// Frame port*len(peers)+i: from peers[i], source port 40000+port.
			// The frames are made before the rules, so that where the heap
			// puts them (their cache and TLB footprint, which the 8kflows
			// cases feel) does not depend on the rules made beside them.
			frames := make([][]byte, len(peers)*c.ports)
			for i, p := range peers {
				for port, f := range udpFrames(b, c.ports, p, tLocal4, 9000, 64) {
					frames[port*len(peers)+i] = f
				}
			}
			rules := benchRules(c.rules, peers)
			if c.allow {
				rules = append(rules, sessions.Rule{Transport: flow.TransportUDP, Remote: netip.MustParsePrefix("10.9.0.0/16"), Action: sessions.RuleAllow})
			}
			if len(rules) > 0 {
				if _, err := r.l.AddRules(rules); err != nil {
					b.Fatal(err)
				}
			}
			// On a shared machine wall time counts other processes' turns:
			// the thread's own CPU time is reported beside it.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := threadCPU(b)
			off := 0
			for b.Loop() {
				r.w.processBatch(frames[off : off+len(peers)])
				_ = rx.Drop(rx.MaxDequeue())
				if off += len(peers); off == len(frames) {
					off = 0
				}
			}
			cpu := threadCPU(b) - cpu0
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(peers)), "ns/packet")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*len(peers)), "cpu-ns/packet")
			if r.w.c.Delivered != uint64(b.N*len(peers)) {
				b.Fatalf("delivered %d of %d, drops %v", r.w.c.Delivered, b.N*len(peers), r.w.c.Drops)
			}
		})
	}
}

// threadCPU returns the CPU time the calling thread used so far.
func threadCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
