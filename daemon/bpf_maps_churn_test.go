package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/loader"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
	"github.com/xsessiond/xsessiond/sessions"
)

// bpfMaps reads the maps of the XDP program a daemon attached to a rig's
// host B: found from the pinned link (program, then its map ids), so that
// the maps that are not pinned (locals) are read too.
type bpfMaps struct {
	maps map[string]*ebpf.Map
}

// openBPFMaps opens the maps of the program attached to rig's host B.
func openBPFMaps(t testing.TB, rig *nstest.Pair) *bpfMaps {
	t.Helper()
	pin := filepath.Join(loader.DefaultPinRoot, rig.B.Name, rig.B.Link, loader.PinLink)
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		t.Fatalf("open %s: %v", pin, err)
	}
	defer l.Close()
	li, err := l.Info()
	if err != nil {
		t.Fatalf("link info: %v", err)
	}
	prog, err := ebpf.NewProgramFromID(li.Program)
	if err != nil {
		t.Fatalf("open program %d: %v", li.Program, err)
	}
	defer prog.Close()
	pi, err := prog.Info()
	if err != nil {
		t.Fatalf("program info: %v", err)
	}
	ids, ok := pi.MapIDs()
	if !ok {
		t.Fatal("the program's map ids are not available")
	}
	bm := &bpfMaps{maps: map[string]*ebpf.Map{}}
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			t.Fatalf("open map %d: %v", id, err)
		}
		mi, err := m.Info()
		if err != nil {
			t.Fatalf("map %d info: %v", id, err)
		}
		bm.maps[mi.Name] = m
	}
	t.Cleanup(func() {
		for _, m := range bm.maps {
			m.Close()
		}
	})
	for _, n := range []string{"listeners", "established", "locals", "ports", "fragments"} {
		if bm.maps[n] == nil {
			t.Fatalf("the program has no map %q (has %v)", n, bm.names())
		}
	}
	return bm
}

func (bm *bpfMaps) names() []string {
	var out []string
	for n := range bm.maps {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// bpfCounts are the entries of each map: hash maps by entry, the port
// index by bit set. The xsks map (one socket per worker) and the
// counters are not entries that come and go.
type bpfCounts map[string]int

func (c bpfCounts) String() string {
	var parts []string
	for _, n := range []string{"listeners", "established", "ports", "locals", "fragments"} {
		parts = append(parts, fmt.Sprintf("%s=%d", n, c[n]))
	}
	return strings.Join(parts, " ")
}

func (bm *bpfMaps) counts(t testing.TB) bpfCounts {
	t.Helper()
	out := bpfCounts{}
	for _, n := range []string{"listeners", "established", "locals", "fragments"} {
		es, err := bm.entries(n)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = len(es)
	}
	m := bm.maps["ports"]
	var k, v uint32
	for it := m.Iterate(); it.Next(&k, &v); {
		out["ports"] += bits.OnesCount32(v)
	}
	return out
}

// entries returns the raw key and value of every entry of hash map n.
func (bm *bpfMaps) entries(n string) (map[string][]byte, error) {
	m := bm.maps[n]
	k, v := make([]byte, m.KeySize()), make([]byte, m.ValueSize())
	out := map[string][]byte{}
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[string(k)] = append([]byte(nil), v...)
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return nil, fmt.Errorf("iterate %s: %w", n, err)
	}
	return out, nil
}

// steered returns the handles the listener and established maps hold,
// with a description of each entry.
func (bm *bpfMaps) steered() (map[flow.Handle]string, error) {
	out := map[flow.Handle]string{}
	ls, err := bm.entries("listeners")
	if err != nil {
		return nil, err
	}
	es, err := bm.entries("established")
	if err != nil {
		return nil, err
	}
	for k, v := range ls {
		h := flow.Handle(binary.LittleEndian.Uint64(v))
		out[h] = fmt.Sprintf("listener port %d", binary.BigEndian.Uint16([]byte(k)[20:22]))
	}
	for k, v := range es {
		h := flow.Handle(binary.LittleEndian.Uint64(v))
		kb := []byte(k)
		out[h] = fmt.Sprintf("session proto %d local port %d remote port %d", kb[36],
			binary.BigEndian.Uint16(kb[32:34]), binary.BigEndian.Uint16(kb[34:36]))
	}
	return out, nil
}

// layerHandles are the handles in the layer's global tables (listeners,
// sessions, 5-tuples kept while their connection lingers).
func layerHandles(l *sessions.Layer) map[flow.Handle]bool {
	_, cs := l.Snapshot()
	out := make(map[flow.Handle]bool, len(cs))
	for _, c := range cs {
		out[c.Handle] = true
	}
	return out
}

// staleWatch samples the maps and the layer until stopped and reports an
// entry whose handle the layer had no more for longer than the mirror
// needs (grace) to apply a change.
type staleWatch struct {
	stop    chan struct{}
	close   func()
	done    chan struct{}
	mu      sync.Mutex
	stale   []string
	samples int
}

func watchStale(t testing.TB, bm *bpfMaps, l *sessions.Layer, grace time.Duration) *staleWatch {
	w := &staleWatch{stop: make(chan struct{}), done: make(chan struct{})}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(w.stop) }); <-w.done })
	w.close = func() { once.Do(func() { close(w.stop) }) }
	go func() {
		defer close(w.done)
		absent := map[flow.Handle]time.Time{} // since when the layer lacks a steered handle
		reported := map[flow.Handle]bool{}
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			now := time.Now()
			in, err := bm.steered()
			if err != nil {
				continue
			}
			have := layerHandles(l)
			for h, what := range in {
				if have[h] {
					delete(absent, h)
					continue
				}
				since, ok := absent[h]
				if !ok {
					absent[h] = now
					continue
				}
				if now.Sub(since) > grace && !reported[h] {
					reported[h] = true
					w.mu.Lock()
					w.stale = append(w.stale, fmt.Sprintf("%#x (%s) for %v", uint64(h), what, now.Sub(since).Round(time.Millisecond)))
					w.mu.Unlock()
				}
			}
			for h := range absent {
				if _, ok := in[h]; !ok {
					delete(absent, h)
				}
			}
			w.mu.Lock()
			w.samples++
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *staleWatch) end() (stale []string, samples int) {
	w.close()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stale, w.samples
}

// churnKernelDial connects from host A (from local when valid) to dst.
func churnKernelDial(rig *nstest.Pair, local netip.AddrPort, dst netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := rig.A.Do(func() error {
		nd := net.Dialer{Timeout: 5 * time.Second}
		if local.IsValid() {
			nd.LocalAddr = net.TCPAddrFromAddrPort(local)
		}
		var err error
		c, err = nd.Dial("tcp", dst.String())
		return err
	})
	return c, err
}

// resetClose closes a kernel TCP connection with a reset.
func resetClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// churnChildApp listens (UDP, TCP) and sends to the kernel sink on host A
// given by arg without end, until it is killed.
func churnChildApp(sock, sink string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := app.Attach(ctx, app.Options{Socket: sock, Name: "churnchild"})
	if err != nil {
		fmt.Println("attach:", err)
		return 1
	}
	if _, err := a.ListenPacket("udp://0.0.0.0:7390"); err != nil {
		fmt.Println("listen udp:", err)
		return 1
	}
	if _, err := a.Listen("tcp://0.0.0.0:7391"); err != nil {
		fmt.Println("listen tcp:", err)
		return 1
	}
	if _, err := a.Dial(ctx, "udp://"+sink); err != nil {
		fmt.Println("dial udp:", err)
		return 1
	}
	c, err := a.Dial(ctx, "tcp://"+sink)
	if err != nil {
		fmt.Println("dial tcp:", err)
		return 1
	}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	fmt.Println("ready")
	select {}
}

func init() { childApps["bpf-churn"] = churnChildApp }

// TestBPFMapsChurn: the XDP program's maps (listeners, established, the
// port index, locals, fragments) are back at their baseline once
// everything closes after heavy churn of UDP listeners and connected
// sessions, TCP listeners, TCP connections accepted and dialed and ended
// every way (in order either side first, reset either side, refused,
// timed out, the app killed mid-transfer), rules, and an app detaching
// with everything open; and during the churn no map holds an entry for a
// handle the session layer no longer has for longer than the mirror takes.
func TestBPFMapsChurn(t *testing.T) {
	rig, d := tcpRig(t, func(o *Config) { o.Datapath.TCP.Stack.TimeWait = time.Second })
	bm := openBPFMaps(t, rig)
	// The baseline once the daemon is up: the namespace's addresses in
	// locals, nothing steered.
	base := bm.counts(t)
	t.Logf("baseline: %v", base)
	if base["listeners"] != 0 || base["established"] != 0 || base["ports"] != 0 || base["locals"] == 0 {
		t.Fatalf("baseline %v: want nothing steered and the local addresses", base)
	}
	watch := watchStale(t, bm, d.layer, 1500*time.Millisecond)
	var peak bpfCounts
	notePeak := func() {
		c := bm.counts(t)
		if peak == nil || c["listeners"]+c["established"] > peak["listeners"]+peak["established"] {
			peak = c
		}
	}

	a4, a6 := rig.A.IPv4, rig.A.IPv6
	b4, b6 := rig.B.IPv4, rig.B.IPv6
	// Kernel peers on host A: a UDP echo, a TCP echo, a TCP server that
	// resets each connection after reading a byte, a sink.
	var udpEcho4, udpEcho6 *net.UDPConn
	if err := rig.A.Do(func() error {
		var err error
		if udpEcho4, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 7301}); err != nil {
			return err
		}
		udpEcho6, err = net.ListenUDP("udp6", &net.UDPAddr{Port: 7301})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udpEcho4.Close(); udpEcho6.Close() })
	go echoUDP(udpEcho4)
	go echoUDP(udpEcho6)
	echoLn := kernelListen(t, rig.A, ":7302")
	go echoServe(echoLn)
	rstLn := kernelListen(t, rig.A, ":7303")
	go func() {
		for {
			c, err := rstLn.Accept()
			if err != nil {
				return
			}
			go func() {
				b := make([]byte, 1)
				io.ReadFull(c, b)
				resetClose(c)
			}()
		}
	}()
	sinkLn := kernelListen(t, rig.A, ":7304")
	go serveEach(sinkLn, func(c net.Conn) { io.Copy(io.Discard, c) })
	var sinkUDP *net.UDPConn
	if err := rig.A.Do(func() error {
		var err error
		sinkUDP, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 7304})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sinkUDP.Close() })

	a := attach(t, d, app.Options{Name: "churn"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// UDP listeners, specific and wildcard, both families, with a
	// datagram each from host A.
	for round := range 3 {
		var pcs []net.PacketConn
		for i, uri := range []string{"udp://0.0.0.0:7310", "udp://" + b4.String() + ":7311", "udp://[::]:7312", "udp://[" + b6.String() + "]:7313"} {
			pc, err := a.ListenPacket(uri)
			if err != nil {
				t.Fatalf("round %d: listen %s: %v", round, uri, err)
			}
			pcs = append(pcs, pc)
			go echoPackets(pc)
			dst := netip.AddrPortFrom(b4, uint16(7310+i))
			if i >= 2 {
				dst = netip.AddrPortFrom(b6, uint16(7310+i))
			}
			if err := churnUDPRoundTrip(rig, dst); err != nil {
				t.Fatalf("round %d: %s: %v", round, uri, err)
			}
		}
		notePeak()
		for _, pc := range pcs {
			pc.Close()
		}
	}

	// Connected UDP sessions, both families.
	for range 3 {
		for _, dst := range []netip.AddrPort{netip.AddrPortFrom(a4, 7301), netip.AddrPortFrom(a6, 7301)} {
			c, err := a.Dial(ctx, "udp://"+dst.String())
			if err != nil {
				t.Fatalf("dial udp %v: %v", dst, err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 16)
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatalf("udp %v: write: %v", dst, err)
			}
			if n, err := c.Read(b); err != nil || string(b[:n]) != "ping" {
				t.Fatalf("udp %v: read %q, %v", dst, b[:n], err)
			}
			notePeak()
			c.Close()
		}
	}

	// TCP listeners bound and closed, specific and wildcard, both
	// families.
	for range 3 {
		var lns []net.Listener
		for _, uri := range []string{"tcp://0.0.0.0:7320", "tcp://" + b4.String() + ":7321", "tcp://[::]:7322", "tcp://[" + b6.String() + "]:7323"} {
			ln, err := a.Listen(uri)
			if err != nil {
				t.Fatalf("listen %s: %v", uri, err)
			}
			lns = append(lns, ln)
		}
		notePeak()
		for _, ln := range lns {
			ln.Close()
		}
	}

	// TCP connections accepted from kernel clients on host A, ended
	// every way.
	ln4, ln6 := listenApp(t, a, "tcp://0.0.0.0:7330"), listenApp(t, a, "tcp://[::]:7330")
	accepted := make(chan net.Conn, 1)
	for _, ln := range []net.Listener{ln4, ln6} {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
	}
	take := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("no connection accepted")
			return nil
		}
	}
	for _, dst := range []netip.Addr{b4, b6} {
		to := netip.AddrPortFrom(dst, 7330)
		// The kernel client closes first.
		kc, err := churnKernelDial(rig, netip.AddrPort{}, to)
		if err != nil {
			t.Fatal(err)
		}
		ac := take()
		kc.Write([]byte("x"))
		kc.Close()
		ac.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(ac); err != nil {
			t.Errorf("accepted, client closed first: %v", err)
		}
		notePeak()
		ac.Close()
		// The app closes first.
		kc, err = churnKernelDial(rig, netip.AddrPort{}, to)
		if err != nil {
			t.Fatal(err)
		}
		ac = take()
		ac.Write([]byte("bye"))
		ac.Close()
		kc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, err := io.ReadAll(kc); err != nil || string(b) != "bye" {
			t.Errorf("accepted, app closed first: read %q, %v", b, err)
		}
		kc.Close()
		// Reset by the kernel client.
		kc, err = churnKernelDial(rig, netip.AddrPort{}, to)
		if err != nil {
			t.Fatal(err)
		}
		ac = take()
		resetClose(kc)
		ac.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.ReadAll(ac)
		ac.Close()
		// The app aborts (SetLinger(0)).
		kc, err = churnKernelDial(rig, netip.AddrPort{}, to)
		if err != nil {
			t.Fatal(err)
		}
		ac = take()
		if err := ac.(*app.Conn).SetLinger(0); err != nil {
			t.Fatal(err)
		}
		ac.Close()
		kc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(kc); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("accepted, app aborted: the client read %v, want a reset", err)
		}
		kc.Close()
	}
	ln4.Close()
	ln6.Close()

	// TCP connections the app dials to kernel servers on host A, ended
	// every way.
	for _, dst := range []netip.Addr{a4, a6} {
		// The app closes first, after an echo.
		c := dialAppCtx(t, ctx, a, "tcp://"+netip.AddrPortFrom(dst, 7302).String())
		c.Write([]byte("ping"))
		b := make([]byte, 4)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, b); err != nil {
			t.Errorf("dialed echo: %v", err)
		}
		notePeak()
		c.Close()
		// The kernel server closes first.
		c = dialAppCtx(t, ctx, a, "tcp://"+netip.AddrPortFrom(dst, 7302).String())
		c.(*app.Conn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.ReadAll(c)
		c.Close()
		// Reset by the kernel server.
		c = dialAppCtx(t, ctx, a, "tcp://"+netip.AddrPortFrom(dst, 7303).String())
		c.Write([]byte("x"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.ReadAll(c)
		c.Close()
		// The app aborts.
		c = dialAppCtx(t, ctx, a, "tcp://"+netip.AddrPortFrom(dst, 7304).String())
		c.Write([]byte("data"))
		c.(*app.Conn).SetLinger(0)
		c.Close()
		// Refused.
		if _, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(dst, 7305).String()); !errors.Is(err, flow.ErrRefused) {
			t.Errorf("dial to a closed port: %v, want refused", err)
		}
	}
	// Connects that time out: an unreachable address, the app giving up.
	for _, uri := range []string{"tcp://10.77.0.99:7306", "tcp://[fd77::99]:7306"} {
		dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		if c, err := a.Dial(dctx, uri); err == nil {
			c.Close()
			t.Errorf("dial %s connected", uri)
		}
		dcancel()
	}

	// Rules added and deleted.
	for i := range 5 {
		id, err := d.layer.AddRule(sessions.Rule{Transport: flow.TransportTCP, Remote: netip.PrefixFrom(a4, 32), LocalPort: uint16(7340 + i), Action: sessions.RuleDrop})
		if err != nil {
			t.Fatal(err)
		}
		id2, err := d.layer.AddRule(sessions.Rule{Transport: flow.TransportUDP, LocalPort: uint16(7340 + i), Action: sessions.RuleAllow})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.layer.DelRule(id); err != nil {
			t.Fatal(err)
		}
		if err := d.layer.DelRule(id2); err != nil {
			t.Fatal(err)
		}
	}

	// An app killed mid-transfer.
	child := startChildApp(t, "bpf-churn", d.Socket(), netip.AddrPortFrom(a4, 7304).String())
	child.expect(t, "ready")
	notePeak()
	child.cmd.Process.Signal(syscall.SIGKILL)
	child.cmd.Wait()

	// An app that detaches with everything open.
	b := attach(t, d, app.Options{Name: "detach"})
	if _, err := b.ListenPacket("udp://0.0.0.0:7350"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Dial(ctx, "udp://"+netip.AddrPortFrom(a4, 7301).String()); err != nil {
		t.Fatal(err)
	}
	bln, err := b.Listen("tcp://[::]:7351")
	if err != nil {
		t.Fatal(err)
	}
	kc, err := churnKernelDial(rig, netip.AddrPort{}, netip.AddrPortFrom(b6, 7351))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	if _, err := bln.Accept(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Dial(ctx, "tcp://"+netip.AddrPortFrom(a4, 7302).String()); err != nil {
		t.Fatal(err)
	}
	notePeak()
	b.Close()
	kc.Close() // ends the accepted connection's FIN-WAIT-2, if any

	// Everything closes: the maps go back to the baseline (TIME-WAIT is
	// a second here).
	a.Close()
	var now bpfCounts
	end := time.Now().Add(15 * time.Second)
	for {
		now = bm.counts(t)
		if fmt.Sprint(now) == fmt.Sprint(base) {
			break
		}
		if time.Now().After(end) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stale, samples := watch.end()
	t.Logf("peak: %v; after: %v; %d samples", peak, now, samples)
	if fmt.Sprint(now) != fmt.Sprint(base) {
		left, _ := bm.steered()
		t.Logf("connections: %+v", d.Engine().TCPConns())
		t.Errorf("maps after the churn: %v, want the baseline %v; still steered: %v", now, base, left)
	}
	for _, s := range stale {
		t.Errorf("steered while the layer had it no more: %s", s)
	}
}

// dialAppCtx dials uri from app a; the connection is closed at the test's
// end.
func dialAppCtx(t *testing.T, ctx context.Context, a *app.App, uri string) net.Conn {
	t.Helper()
	c, err := a.Dial(ctx, uri)
	if err != nil {
		t.Fatalf("dial %s: %v", uri, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// churnUDPRoundTrip sends a datagram from host A to dst and waits for its
// echo.
func churnUDPRoundTrip(rig *nstest.Pair, dst netip.AddrPort) error {
	return rig.A.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		b := make([]byte, 16)
		for range 10 {
			c.Write([]byte("hello"))
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if n, err := c.Read(b); err == nil && string(b[:n]) == "hello" {
				return nil
			}
		}
		return fmt.Errorf("no echo from %v", dst)
	})
}
