package daemon

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// The ports of the hostile soak: the good app's echoes on host B, and the
// kernel servers on host A the hostile app talks to over the wire.
const (
	hsGoodTCP  = 7920
	hsGoodUDP  = 7921
	hsPeerTCP  = 7922
	hsPeerUDP  = 7923
	hsBindBase = 7930 // the hostile app binds ports from here
	hsBindN    = 8
)

// hsDuration is how long the hostile soak runs: 10 s, or what
// XSESSIOND_SOAK says (a Go duration, "5m").
func hsDuration(t *testing.T) time.Duration {
	s := os.Getenv("XSESSIOND_SOAK")
	if s == "" {
		return 10 * time.Second
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("XSESSIOND_SOAK=%q: want a duration such as 5m", s)
	}
	return d
}

// hsSeed is the seed of the hostile app's random source: a new one each
// run, or XSESSIOND_SOAK_SEED's to replay one.
func hsSeed(t *testing.T) uint64 {
	if s := os.Getenv("XSESSIOND_SOAK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("XSESSIOND_SOAK_SEED=%q: %v", s, err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// TestHostileAppSoak runs, on a rig, a good app that echoes TCP and UDP
// for kernel clients on host A, beside a hostile app driven by a seeded
// random source that attaches and detaches, binds, connects (over the wire
// to host A, and cut-through to the good app's listeners), closes, writes
// random values into the shared state of its own fifos (indices, flags,
// datagram records, its segments' headers, its event queue), kicks the
// workers and its cut-through peers, and sends random, truncated and
// out-of-order control records, for XSESSIOND_SOAK (10 s by default).
// Every byte of the good app's echoes comes back exact, every datagram
// comes back, the daemon answers ctl show afterwards and lists no app,
// listener or session of any id the hostile app attached as (it did each
// kind of thing many times, and had listeners and sessions), and its
// goroutines and descriptors are back to where they were before the
// hostile app came. A failure names the seed:
// XSESSIOND_SOAK_SEED replays it. sudo passes neither variable on by
// itself:
//
//	XSESSIOND_SOAK=5m XSESSIOND_PRIVILEGED=require go test -count=1 \
//	  -exec 'sudo --preserve-env=XSESSIOND_SOAK,XSESSIOND_SOAK_SEED' \
//	  -run TestHostileAppSoak -timeout 30m ./daemon/
func TestHostileAppSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test skipped in -short mode")
	}
	dur := hsDuration(t)
	seed := hsSeed(t)
	// A panic on another goroutine ends the binary before the test can
	// report, so the seed goes to stderr first as well.
	fmt.Fprintf(os.Stderr, "hostile soak: seed %d (XSESSIOND_SOAK_SEED=%d replays it), %v\n", seed, seed, dur)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hostile soak seed %d: replay with XSESSIOND_SOAK_SEED=%d", seed, seed)
		}
	})
	// Closed wire TCP connections hold their ports for a second, not
	// gVisor's minute, so that the leak check can see them go.
	rig, d := tcpRig(t, func(o *Config) {
		o.Datapath.TCP.Stack.TimeWait = time.Second
		o.Datapath.TCP.Stack.FinWait2Timeout = time.Second
	})

	// Host A's servers for the hostile app's wire sessions; what they
	// accept is closed at the end, so that the process's goroutines and
	// descriptors are the daemon's to account for.
	peers := &hsPeers{}
	tln := kernelListen(t, rig.A, fmt.Sprintf(":%d", hsPeerTCP))
	go peers.serve(tln)
	pu, err := rig.A.ListenUDP(netip.AddrPortFrom(rig.A.IPv4, hsPeerUDP), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pu.Close()
	go echoUDP(pu)

	// The good app.
	good := attach(t, d, app.Options{Name: "good"})
	ln := listenApp(t, good, fmt.Sprintf("tcp://0.0.0.0:%d", hsGoodTCP))
	go serveEach(ln, func(c net.Conn) { io.Copy(c, c) })
	gpc, err := good.ListenPacket(fmt.Sprintf("udp://0.0.0.0:%d", hsGoodUDP))
	if err != nil {
		t.Fatal(err)
	}
	defer gpc.Close()
	var goodUDPErrs atomic.Int64
	var goodUDPErr atomic.Value
	go func() {
		b := make([]byte, 65536)
		for {
			n, from, err := gpc.ReadFrom(b)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				// None: a cut-through session the hostile app broke
				// is dropped by the listener, which reads on.
				goodUDPErrs.Add(1)
				goodUDPErr.Store(err.Error())
				time.Sleep(10 * time.Microsecond)
				continue
			}
			gpc.WriteTo(b[:n], from)
		}
	}()

	// The kernel clients on host A.
	stop := make(chan struct{})
	tcpc := hsStartTCPClient(t, rig.A, netip.AddrPortFrom(rig.B.IPv4, hsGoodTCP), seed, stop)
	udpc := hsStartUDPClient(t, rig.A, netip.AddrPortFrom(rig.B.IPv4, hsGoodUDP), seed, stop)

	// A round of the hostile app's that does nothing wrong, so that what
	// the daemon starts once and keeps (and what the first use of a path
	// allocates) is there before the baseline.
	warm := newHostileSoakApp(t, d, rig, seed^0x5eed, false)
	warm.benign()
	warm.close()
	waitFor(t, "the warm-up app to go", 5*time.Second, func() bool { return len(d.layer.Apps()) == 1 })
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true, Timeout: 10 * time.Second})

	h := newHostileSoakApp(t, d, rig, seed, true)
	start := time.Now()
	for time.Since(start) < dur && !t.Failed() {
		h.step()
	}
	h.close()
	t.Logf("hostile app, %v: %s", time.Since(start).Round(time.Millisecond), h.stats())

	// The hostile app did what it is for: it attached, bound, connected
	// (and had listeners and sessions the daemon had to forget), closed,
	// scribbled, sent and sent garbage, each many times.
	for _, k := range []string{"attach", "bind", "connect", "close", "scribble", "send", "garbage", "misc"} {
		if h.counts[k] < hsMinActions {
			t.Errorf("the hostile app's %s: %d times, want %d at least", k, h.counts[k], hsMinActions)
		}
	}
	for _, k := range []string{"Attach->AttachReply", "Bind->BindReply", "Connect->ConnectReply"} {
		if h.replies[k] == 0 {
			t.Errorf("the hostile app never got a %s", k)
		}
	}

	// The daemon answers, and forgets the hostile app: every app,
	// listener and session ctl show lists is the good app's, none of
	// any id the hostile app attached as (nor of an attach its garbage
	// made), but for its wire TCP connections that are closing, which
	// show lists as lingering, as ss lists a closed socket's: in
	// TIME-WAIT, or waiting for host A's side, which closes below.
	waitFor(t, "the daemon to forget the hostile app", 10*time.Second, func() bool { return len(d.layer.Apps()) == 1 })
	goodID := uint32(appIDOf(good))
	lv, sv, av := hsShow(t, d)
	var left []string
	for _, l := range lv {
		if l.App != goodID {
			left = append(left, fmt.Sprintf("listener %v %s of app %d (hostile's id: %v)", l.Handle, l.URI, l.App, h.ids[l.App]))
		}
	}
	for _, s := range sv {
		if s.App != goodID && !hsClosing(s) {
			left = append(left, fmt.Sprintf("session %v %s %s-%s %s %s of app %d (hostile's id: %v)", s.Handle, s.Transport, s.Local, s.Remote, s.State, s.TCPState, s.App, h.ids[s.App]))
		}
	}
	for _, a := range av {
		if a.ID != goodID {
			left = append(left, fmt.Sprintf("app %d %q (hostile's id: %v)", a.ID, a.Name, h.ids[a.ID]))
		}
	}
	if len(left) > 0 {
		t.Errorf("ctl show lists, after the hostile app left (it attached as %d ids), %d rows not the good app's: %s", len(h.ids), len(left), strings.Join(left[:min(len(left), 20)], "; "))
	}
	if len(av) != 1 {
		t.Errorf("ctl show lists %d apps after the hostile app left, want the good app alone", len(av))
	}
	if _, err := show(t, d.Socket(), "stats"); err != nil {
		t.Fatalf("ctl show stats after the soak: %v", err)
	}
	peers.closeAll()
	// Host A's side closed: what the hostile app left closes too, but
	// for TIME-WAIT, which lasts its time as the kernel's.
	waitFor(t, "the hostile app's closing connections to end", 10*time.Second, func() bool {
		_, sv, _ := hsShow(t, d)
		for _, s := range sv {
			if s.App != goodID && s.TCPState != "TIME-WAIT" {
				return false
			}
		}
		return true
	})

	// The good app's echoes were exact all along.
	close(stop)
	if err := tcpc.wait(); err != nil {
		t.Errorf("the good app's TCP echo: %v", err)
	}
	if err := udpc.wait(); err != nil {
		t.Errorf("the good app's UDP echo: %v", err)
	}
	t.Logf("good app: TCP %d bytes echoed exact, UDP %d datagrams echoed exact; its listener dropped %d broken cut-through sessions",
		tcpc.echoed.Load(), udpc.echoed.Load(), gpc.(*app.PacketConn).BrokenPeers())
	if n := goodUDPErrs.Load(); n > 0 {
		t.Errorf("the good app's UDP listener: %d read errors, the last %v", n, goodUDPErr.Load())
	}

	// What is left is a leak. The good app's UDP listener drops a
	// cut-through peer that left as its reader next looks (the client on
	// host A has stopped): closing it lets go of those last ones.
	gpc.Close()
	if err := leaks.Wait(); err != nil {
		t.Errorf("after the hostile app left: %v", err)
	}
	if tcpc.echoed.Load() == 0 || udpc.echoed.Load() == 0 {
		t.Errorf("the good app echoed nothing")
	}
}

// hsMinActions is how many times at least the hostile app does each kind
// of thing in a soak (it does thousands in 10 s).
const hsMinActions = 20

// hsShow returns the listeners, sessions and apps ctl show lists (as
// JSON, over the control socket).
func hsShow(t *testing.T, d *Daemon) (lv []ListenerView, sv []SessionView, av []AppView) {
	t.Helper()
	decode := func(what string, v any) {
		t.Helper()
		out, err := show(t, d.Socket(), what)
		if err != nil {
			t.Fatalf("ctl show %s: %v", what, err)
		}
		if err := json.Unmarshal(out, v); err != nil {
			t.Fatalf("ctl show %s: %v: %s", what, err, out)
		}
	}
	decode("listeners", &lv)
	decode("sessions", &sv)
	decode("apps", &av)
	return lv, sv, av
}

// hsClosing reports whether s is a wire TCP connection whose session
// ended and that is closing (show's lingering rows): it waits for its
// peer's side or holds TIME-WAIT.
func hsClosing(s SessionView) bool {
	switch s.TCPState {
	case "FIN-WAIT1", "FIN-WAIT2", "CLOSING", "LAST-ACK", "TIME-WAIT":
		return s.State == "lingering"
	}
	return false
}

// hsPeers serves host A's side of the hostile app's wire TCP sessions
// (an echo) and closes what it accepted on closeAll.
type hsPeers struct {
	mu    sync.Mutex
	conns map[net.Conn]bool
	done  bool
}

func (p *hsPeers) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.done {
			p.mu.Unlock()
			c.Close()
			continue
		}
		if p.conns == nil {
			p.conns = map[net.Conn]bool{}
		}
		p.conns[c] = true
		p.mu.Unlock()
		go func() {
			io.Copy(c, c)
			c.Close()
			p.mu.Lock()
			delete(p.conns, c)
			p.mu.Unlock()
		}()
	}
}

func (p *hsPeers) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = true
	for c := range p.conns {
		c.Close()
	}
}

// hsClient is a kernel client of the good app's echo.
type hsClient struct {
	echoed atomic.Int64
	errc   chan error
	n      int
}

func (c *hsClient) wait() error {
	var first error
	for range c.n {
		select {
		case err := <-c.errc:
			if err != nil && first == nil {
				first = err
			}
		case <-time.After(30 * time.Second):
			return errors.New("the client did not finish within 30 s")
		}
	}
	return first
}

// hsStartTCPClient streams random bytes to the good app's TCP echo from
// host A until stop is closed, then half-closes, and checks every byte
// that comes back, and that all of them do.
func hsStartTCPClient(t *testing.T, a *nstest.Host, to netip.AddrPort, seed uint64, stop <-chan struct{}) *hsClient {
	c := kernelDial(t, a, to)
	t.Cleanup(func() { c.Close() })
	cl := &hsClient{errc: make(chan error, 2), n: 2}
	var sent atomic.Int64
	wrote := make(chan struct{})
	key := [32]byte{}
	binary.LittleEndian.PutUint64(key[:], seed)
	go func() {
		defer close(wrote)
		src := rand.NewChaCha8(key)
		sizes := rand.New(rand.NewPCG(seed, 1))
		buf := make([]byte, 32<<10)
		for {
			select {
			case <-stop:
				cl.errc <- c.(*net.TCPConn).CloseWrite()
				return
			default:
			}
			n := 1 + sizes.IntN(len(buf))
			src.Read(buf[:n])
			c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			if _, err := c.Write(buf[:n]); err != nil {
				cl.errc <- fmt.Errorf("write after %d bytes: %w", sent.Load(), err)
				return
			}
			sent.Add(int64(n))
			time.Sleep(200 * time.Microsecond)
		}
	}()
	go func() {
		src := rand.NewChaCha8(key)
		buf, want := make([]byte, 64<<10), make([]byte, 64<<10)
		for {
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, err := c.Read(buf)
			src.Read(want[:n])
			if !bytes.Equal(buf[:n], want[:n]) {
				i := 0
				for buf[i] == want[i] {
					i++
				}
				cl.errc <- fmt.Errorf("byte %d of the echo is %#x, was sent as %#x", cl.echoed.Load()+int64(i), buf[i], want[i])
				return
			}
			cl.echoed.Add(int64(n))
			if err == io.EOF {
				<-wrote
				if cl.echoed.Load() != sent.Load() {
					cl.errc <- fmt.Errorf("sent %d bytes, %d came back", sent.Load(), cl.echoed.Load())
					return
				}
				cl.errc <- nil
				return
			}
			if err != nil {
				cl.errc <- fmt.Errorf("read after %d bytes: %w", cl.echoed.Load(), err)
				return
			}
		}
	}()
	return cl
}

// hsStartUDPClient sends datagrams of random sizes to the good app's UDP
// echo from host A, one at a time, until stop is closed: each must come
// back, exact, within 3 s.
func hsStartUDPClient(t *testing.T, a *nstest.Host, to netip.AddrPort, seed uint64, stop <-chan struct{}) *hsClient {
	uc, err := a.ListenUDP(netip.AddrPortFrom(a.IPv4, 0), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	cl := &hsClient{errc: make(chan error, 1), n: 1}
	go func() {
		rng := rand.New(rand.NewPCG(seed, 2))
		msg, buf := make([]byte, 1472), make([]byte, 2048)
		for i := uint64(0); ; i++ {
			select {
			case <-stop:
				cl.errc <- nil
				return
			default:
			}
			n := 8 + rng.IntN(len(msg)-8)
			binary.LittleEndian.PutUint64(msg, i)
			for j := 8; j < n; j++ {
				msg[j] = byte(rng.Uint32())
			}
			if _, err := uc.WriteToUDPAddrPort(msg[:n], to); err != nil {
				cl.errc <- fmt.Errorf("datagram %d: %w", i, err)
				return
			}
			uc.SetReadDeadline(time.Now().Add(3 * time.Second))
			m, _, err := uc.ReadFromUDPAddrPort(buf)
			if err != nil {
				cl.errc <- fmt.Errorf("datagram %d (%d bytes) not echoed: %w", i, n, err)
				return
			}
			if !bytes.Equal(buf[:m], msg[:n]) {
				cl.errc <- fmt.Errorf("datagram %d: %d bytes came back for %d, or other bytes", i, m, n)
				return
			}
			cl.echoed.Add(1)
			time.Sleep(100 * time.Microsecond)
		}
	}()
	return cl
}

// hostileSoakApp is an app of the test's own on a bare control
// connection and the memory the daemon shares with it, doing what its
// random source says.
type hostileSoakApp struct {
	t       *testing.T
	d       *Daemon
	rig     *nstest.Pair
	rng     *rand.Rand
	hostile bool // false: only well-formed requests, no scribbling

	uc       *net.UnixConn // nil while not connected
	attached bool
	id       uint32
	ids      map[uint32]bool          // every id it attached as
	segs     map[uint32]*fifo.Segment // the app's segments by index
	ctSegs   []*fifo.Segment          // cut-through segments
	fds      []int                    // other descriptors held: epoll set, eventfds
	kicks    []int                    // worker kick eventfds
	ctKicks  []int                    // cut-through peers' eventfds
	evq      *fifo.EventQueue
	evqFifo  *fifo.Fifo
	handles  []flow.Handle
	fifos    []hsFifo
	evs      []fifo.Event
	rbuf     []byte
	oob      []byte
	counts   map[string]int
	replies  map[string]int
}

// hsFifo is a fifo of the hostile app's: a view for scribbling and what
// it is for.
type hsFifo struct {
	f     *fifo.Fifo
	dgram bool
	tx    bool // the app produces into it
}

func newHostileSoakApp(t *testing.T, d *Daemon, rig *nstest.Pair, seed uint64, hostile bool) *hostileSoakApp {
	return &hostileSoakApp{t: t, d: d, rig: rig, rng: rand.New(rand.NewPCG(seed, seed>>32|1)), hostile: hostile,
		segs: map[uint32]*fifo.Segment{}, ids: map[uint32]bool{}, evs: make([]fifo.Event, 64), rbuf: make([]byte, api.MaxRecordSize),
		oob: make([]byte, unix.CmsgSpace(4*api.MaxFDs)), counts: map[string]int{}, replies: map[string]int{}}
}

func (h *hostileSoakApp) stats() string {
	return fmt.Sprintf("actions %v; replies %v", h.counts, h.replies)
}

// benign attaches, binds, opens a session of each kind, sends on each,
// closes them and detaches.
func (h *hostileSoakApp) benign() {
	h.attach(false)
	if !h.attached {
		h.t.Fatal("the warm-up app could not attach")
	}
	h.bind("udp", false)
	h.bind("tcp", false)
	for k := range 4 {
		h.connect(k)
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		h.drainEvents()
		h.send()
		time.Sleep(10 * time.Millisecond)
	}
	// ctl show lists its listeners and sessions under its id, as the
	// soak's end looks for them.
	lv, sv, _ := hsShow(h.t, h.d)
	var ls, ss int
	for _, l := range lv {
		if l.App == h.id {
			ls++
		}
	}
	for _, s := range sv {
		if s.App == h.id {
			ss++
		}
	}
	if ls == 0 || ss == 0 {
		h.t.Fatalf("ctl show lists %d listeners and %d sessions of the warm-up app (id %d), which has both", ls, ss, h.id)
	}
	for _, hd := range append([]flow.Handle(nil), h.handles...) {
		h.call(&api.Disconnect{Handle: hd})
		h.call(&api.Unbind{Handle: hd})
	}
	h.call(&api.Detach{})
}

// step does one random thing.
func (h *hostileSoakApp) step() {
	if h.uc == nil || !h.attached {
		if h.uc != nil && h.rng.IntN(4) == 0 {
			h.garbage()
			return
		}
		h.attach(h.rng.IntN(8) == 0)
		return
	}
	switch r := h.rng.IntN(100); {
	case r < 2:
		h.count("detach")
		if h.rng.IntN(2) == 0 {
			h.call(&api.Detach{})
		}
		h.close()
	case r < 12:
		h.bind([]string{"udp", "tcp"}[h.rng.IntN(2)], h.rng.IntN(6) == 0)
	case r < 27:
		h.connect(h.rng.IntN(5))
	case r < 35:
		h.closeOne()
	case r < 55:
		h.scribble()
	case r < 68:
		h.send()
	case r < 75:
		h.kick()
	case r < 85:
		h.garbage()
	case r < 92:
		h.drainEvents()
	default:
		h.misc()
	}
}

func (h *hostileSoakApp) count(what string) { h.counts[what]++ }

// dial opens the control connection and, most of the time, says Hello.
func (h *hostileSoakApp) dial(skipHello bool) bool {
	uc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: h.d.Socket(), Net: "unixpacket"})
	if err != nil {
		h.t.Errorf("dial the daemon: %v", err)
		return false
	}
	h.uc = uc
	if skipHello {
		return true
	}
	minor := api.VersionMinor
	if h.hostile && h.rng.IntN(8) == 0 {
		minor = uint8(h.rng.Uint32())
	}
	h.call(&api.Hello{Major: api.VersionMajor, Minor: minor, Name: "hostile"})
	return h.uc != nil
}

// attach attaches the app, with sizes that are sometimes out of range.
func (h *hostileSoakApp) attach(odd bool) {
	h.count("attach")
	if h.uc == nil && !h.dial(odd && h.rng.IntN(2) == 0) {
		return
	}
	m := &api.Attach{Name: "hostile", Scope: flow.ScopeGlobal | flow.ScopeLocal,
		RxFifoSize: 1 << (6 + h.rng.IntN(10)), TxFifoSize: 1 << (6 + h.rng.IntN(10)),
		SegmentSize: uint64(64<<10) << h.rng.IntN(5), AddSegmentSize: uint64(64<<10) << h.rng.IntN(3)}
	if !h.hostile {
		m = &api.Attach{Name: "hostile", Scope: flow.ScopeGlobal | flow.ScopeLocal}
	} else if odd {
		m.RxFifoSize, m.TxFifoSize = h.rng.Uint32(), h.rng.Uint32()>>h.rng.IntN(32)
		m.SegmentSize, m.AddSegmentSize, m.MaxFifoMemory = h.rng.Uint64()>>h.rng.IntN(64), h.rng.Uint64()>>h.rng.IntN(64), h.rng.Uint64()>>h.rng.IntN(64)
		m.Scope = flow.Scope(h.rng.IntN(8))
	}
	rep, fds, err := h.callFDs(m)
	if err != nil {
		api.CloseFDs(fds)
		return
	}
	ar, ok := rep.(*api.AttachReply)
	if !ok || len(fds) != ar.FDs() {
		api.CloseFDs(fds)
		return
	}
	h.attached = true
	h.id = ar.AppIndex
	h.ids[h.id] = true
	for i, s := range ar.Segments {
		seg, err := fifo.MapSegment(fds[i])
		if err != nil {
			h.t.Errorf("map a segment of the AttachReply: %v", err)
			unix.Close(fds[i])
			continue
		}
		h.segs[s.Index] = seg
	}
	epfd := fds[len(ar.Segments)]
	h.kicks = append(h.kicks, fds[len(ar.Segments)+1:]...)
	if seg := h.segs[ar.EventQueue.Segment]; seg != nil {
		q, err := fifo.OpenEventQueue(seg, uint32(ar.EventQueue.Offset), epfd)
		if err != nil {
			h.t.Errorf("open the event queue: %v", err)
			unix.Close(epfd)
		} else {
			h.evq = q
			h.evqFifo, _ = seg.FifoAt(uint32(ar.EventQueue.Offset))
		}
	} else {
		unix.Close(epfd)
	}
}

// close drops the connection (the daemon detaches the app) and releases
// everything the app held.
func (h *hostileSoakApp) close() {
	if h.uc != nil {
		h.uc.Close()
		h.uc = nil
	}
	h.attached = false
	if h.evq != nil {
		h.evq.Close()
		h.evq = nil
	}
	h.evqFifo = nil
	for i, s := range h.segs {
		s.Close()
		delete(h.segs, i)
	}
	for _, s := range h.ctSegs {
		s.Close()
	}
	h.ctSegs = nil
	for _, fds := range [][]int{h.fds, h.kicks, h.ctKicks} {
		api.CloseFDs(fds)
	}
	h.fds, h.kicks, h.ctKicks, h.handles, h.fifos = nil, nil, nil, nil, nil
}

// call sends m and waits for its reply; see callFDs.
func (h *hostileSoakApp) call(m api.Message) (api.Message, error) {
	rep, fds, err := h.callFDs(m)
	api.CloseFDs(fds)
	return rep, err
}

var hsReqID atomic.Uint32

// callFDs sends m with a new request id and reads until its reply comes,
// handling the notices that come before it. A well-formed request on a
// connection the daemon keeps is answered within 5 s.
func (h *hostileSoakApp) callFDs(m api.Message) (api.Message, []int, error) {
	if h.uc == nil {
		return nil, nil, net.ErrClosed
	}
	id := hsReqID.Add(1) | 1<<31
	rec, err := api.AppendRecord(nil, id, 0, m)
	if err != nil {
		h.t.Errorf("encode %v: %v", m.Type(), err)
		return nil, nil, err
	}
	if err := h.write(rec); err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		hd, rep, fds, err := h.recv(deadline)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			h.t.Errorf("no reply to %v (%+v) within 5 s", m.Type(), m)
			h.close()
			return nil, nil, err
		}
		if err != nil {
			return nil, nil, err
		}
		if hd.ID != id {
			api.CloseFDs(fds)
			continue
		}
		h.replies[m.Type().String()+"->"+rep.Type().String()]++
		if e, ok := rep.(*api.Error); ok {
			api.CloseFDs(fds)
			return nil, nil, e.Err()
		}
		return rep, fds, nil
	}
}

// write sends one record; a connection the daemon closed is dropped.
func (h *hostileSoakApp) write(rec []byte, fds ...int) error {
	h.uc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := h.uc.WriteMsgUnix(rec, oob, nil); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			h.t.Errorf("the daemon took no record for 5 s")
		}
		h.close()
		return err
	}
	return nil
}

// recv reads one record until deadline. Notices are handled here: the
// segments of SegmentAdded are mapped (their descriptors are not
// returned). A connection that ends is dropped.
func (h *hostileSoakApp) recv(deadline time.Time) (api.Header, api.Message, []int, error) {
	h.uc.SetReadDeadline(deadline)
	n, oobn, _, _, err := h.uc.ReadMsgUnix(h.rbuf, h.oob)
	var fds []int
	if oobn > 0 {
		fds = hsRights(h.oob[:oobn])
	}
	if err == nil && n == 0 {
		err = io.EOF
	}
	if err != nil {
		api.CloseFDs(fds)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			h.close()
		}
		return api.Header{}, nil, nil, err
	}
	hd, m, err := api.Decode(h.rbuf[:n])
	if err != nil {
		h.t.Errorf("the daemon sent a record that does not decode: %v", err)
		api.CloseFDs(fds)
		h.close()
		return api.Header{}, nil, nil, err
	}
	if sa, ok := m.(*api.SegmentAdded); ok && hd.ID == 0 {
		for i, sg := range sa.Segments {
			if i >= len(fds) {
				break
			}
			seg, err := fifo.MapSegment(fds[i])
			if err != nil {
				h.t.Errorf("map an added segment: %v", err)
				unix.Close(fds[i])
				continue
			}
			if old := h.segs[sg.Index]; old != nil {
				old.Close()
			}
			h.segs[sg.Index] = seg
		}
		if len(fds) > len(sa.Segments) {
			api.CloseFDs(fds[len(sa.Segments):])
		}
		fds = nil
	}
	return hd, m, fds, nil
}

func hsRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var out []int
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err == nil {
			out = append(out, fds...)
		}
	}
	return out
}

// fifoAt returns a view of the fifo ref names in the app's segments, or
// in seg when it is not nil (a cut-through session's).
func (h *hostileSoakApp) fifoAt(seg *fifo.Segment, ref fifo.FifoRef) *fifo.Fifo {
	if seg == nil {
		seg = h.segs[ref.Segment]
	}
	if seg == nil || ref.Size == 0 {
		return nil
	}
	f, err := seg.FifoAt(ref.Offset)
	if err != nil {
		return nil
	}
	return f
}

func (h *hostileSoakApp) addPair(seg *fifo.Segment, rx, tx fifo.FifoRef, dgram bool) {
	if f := h.fifoAt(seg, rx); f != nil {
		h.fifos = append(h.fifos, hsFifo{f: f, dgram: dgram})
	}
	if f := h.fifoAt(seg, tx); f != nil {
		h.fifos = append(h.fifos, hsFifo{f: f, dgram: dgram, tx: true})
	}
	if len(h.fifos) > 64 { // keep the newest
		h.fifos = h.fifos[len(h.fifos)-64:]
	}
}

func (h *hostileSoakApp) addHandle(hd flow.Handle) {
	h.handles = append(h.handles, hd)
	if len(h.handles) > 64 {
		h.handles = h.handles[len(h.handles)-64:]
	}
}

// bind starts a listener: UDP or TCP on one of a few ports, on the
// wildcard, host B's address or loopback; odd: a random URI or endpoint.
func (h *hostileSoakApp) bind(proto string, odd bool) {
	h.count("bind")
	addrs := []string{"0.0.0.0", h.rig.B.IPv4.String(), "127.0.0.1", "[::]", "[" + h.rig.B.IPv6.String() + "]"}
	m := &api.Bind{URI: fmt.Sprintf("%s://%s:%d", proto, addrs[h.rng.IntN(len(addrs))], hsBindBase+h.rng.IntN(hsBindN))}
	if odd {
		m = &api.Bind{Endpoint: flow.Endpoint{Transport: flow.Transport(h.rng.IntN(4)),
			Addr: []netip.Addr{{}, netip.AddrFrom4([4]byte{byte(h.rng.Uint32()), 0, 0, 1}), netip.IPv6Unspecified(), h.rig.A.IPv4}[h.rng.IntN(4)],
			Port: uint16(h.rng.Uint32())}}
		if h.rng.IntN(2) == 0 {
			m = &api.Bind{URI: hsRandomURI(h.rng)}
		}
	}
	rep, err := h.call(m)
	if err != nil {
		return
	}
	br, ok := rep.(*api.BindReply)
	if !ok {
		return
	}
	h.addHandle(br.Handle)
	h.addPair(nil, br.Rx, br.Tx, true)
}

func hsRandomURI(rng *rand.Rand) string {
	parts := []string{"udp://", "tcp://", "tcp", "://", "1.2.3.4", "[::1]", ":", "65536", "0", "/", "%", "x", "\x00", "[", "]", "999.1.1.1", "@"}
	var b []byte
	for range 1 + rng.IntN(8) {
		b = append(b, parts[rng.IntN(len(parts))]...)
	}
	return string(b)
}

// connect opens a session: 0 UDP and 1 TCP over the wire to host A, 2
// UDP and 3 TCP cut-through to the good app, 4 somewhere odd.
func (h *hostileSoakApp) connect(kind int) {
	h.count("connect")
	var uri string
	switch kind {
	case 0:
		uri = fmt.Sprintf("udp://%s:%d", h.rig.A.IPv4, hsPeerUDP)
	case 1:
		uri = fmt.Sprintf("tcp://%s:%d", h.rig.A.IPv4, hsPeerTCP)
	case 2:
		uri = fmt.Sprintf("udp://127.0.0.1:%d", hsGoodUDP)
	case 3:
		uri = fmt.Sprintf("tcp://127.0.0.1:%d", hsGoodTCP)
	default:
		switch h.rng.IntN(4) {
		case 0: // a port nobody listens on, over the wire
			uri = fmt.Sprintf("tcp://%s:%d", h.rig.A.IPv4, 7999)
		case 1: // one of its own listeners, maybe
			uri = fmt.Sprintf("%s://127.0.0.1:%d", []string{"udp", "tcp"}[h.rng.IntN(2)], hsBindBase+h.rng.IntN(hsBindN))
		case 2:
			uri = hsRandomURI(h.rng)
		default: // an address nobody has
			uri = fmt.Sprintf("udp://10.77.0.%d:%d", 3+h.rng.IntN(250), 1+h.rng.IntN(65535))
		}
	}
	rep, fds, err := h.callFDs(&api.Connect{URI: uri, Opaque: h.rng.Uint32()})
	if err != nil {
		api.CloseFDs(fds)
		return
	}
	cr, ok := rep.(*api.ConnectReply)
	if !ok {
		api.CloseFDs(fds)
		return
	}
	h.addHandle(cr.Handle)
	dgram := cr.Local.Transport == flow.TransportUDP
	if cr.CutThrough && len(fds) == 2 {
		seg, err := fifo.MapSegment(fds[0])
		if err != nil {
			h.t.Errorf("map a cut-through segment: %v", err)
			api.CloseFDs(fds)
			return
		}
		h.ctSegs = append(h.ctSegs, seg)
		h.ctKicks = append(h.ctKicks, fds[1])
		h.addPair(seg, cr.Rx, cr.Tx, dgram)
		return
	}
	api.CloseFDs(fds)
	h.addPair(nil, cr.Rx, cr.Tx, dgram)
}

// closeOne closes a session or listener it has (or a handle it made up)
// one of the ways there are.
func (h *hostileSoakApp) closeOne() {
	h.count("close")
	hd := flow.Handle(h.rng.Uint64())
	if len(h.handles) > 0 && h.rng.IntN(8) != 0 {
		i := h.rng.IntN(len(h.handles))
		hd = h.handles[i]
		if h.rng.IntN(4) != 0 { // sometimes closes it again later
			h.handles = append(h.handles[:i], h.handles[i+1:]...)
		}
	}
	switch h.rng.IntN(5) {
	case 0:
		h.call(&api.Disconnect{Handle: hd})
	case 1:
		h.call(&api.Unbind{Handle: hd})
	case 2:
		h.call(&api.Abort{Handle: hd})
	case 3:
		h.call(&api.CloseWrite{Handle: hd})
	default:
		// The in-band close: store a random value or the fifo's gen in
		// close of a tx fifo.
		if f := h.pickFifo(); f != nil && f.tx {
			v := h.rng.Uint32()
			if h.rng.IntN(2) == 0 {
				v = binary.NativeEndian.Uint32(hsHeader(f.f)[fifo.FifoOffGen:])
			}
			hsPut32(f.f, fifo.FifoOffClose, v)
			f.f.SetEvent()
			h.kick()
		}
	}
}

func (h *hostileSoakApp) pickFifo() *hsFifo {
	if len(h.fifos) == 0 {
		return nil
	}
	return &h.fifos[h.rng.IntN(len(h.fifos))]
}

// hsHeader is f's shared header.
func hsHeader(f *fifo.Fifo) []byte {
	off := int(f.Offset())
	return f.Segment().Bytes()[off : off+fifo.FifoHeaderSize]
}

// hsData is f's shared data, as its header was when the view attached.
func hsData(f *fifo.Fifo) []byte {
	off := int(f.Offset()) + fifo.FifoHeaderSize
	return f.Segment().Bytes()[off : off+int(f.Size())]
}

func hsPut32(f *fifo.Fifo, off int, v uint32) {
	binary.NativeEndian.PutUint32(hsHeader(f)[off:], v)
}

// scribble writes random values into shared state the app can write.
func (h *hostileSoakApp) scribble() {
	if !h.hostile {
		return
	}
	h.count("scribble")
	rng := h.rng
	switch r := rng.IntN(10); {
	case r < 6: // a fifo header field
		f := h.pickFifo()
		if f == nil {
			return
		}
		hd := hsHeader(f.f)
		offs := []int{fifo.FifoOffTail, fifo.FifoOffHead, fifo.FifoOffHasEvent, fifo.FifoOffWantDeqNtf,
			fifo.FifoOffHasDeqNtf, fifo.FifoOffClose, fifo.FifoOffTaken, fifo.FifoOffMagic, fifo.FifoOffSize,
			fifo.FifoOffSelf, fifo.FifoOffGen}
		off := offs[rng.IntN(len(offs))]
		if rng.IntN(3) != 0 {
			off = offs[rng.IntN(2)] // mostly the indices
		}
		head := binary.NativeEndian.Uint32(hd[fifo.FifoOffHead:])
		tail := binary.NativeEndian.Uint32(hd[fifo.FifoOffTail:])
		vals := []uint32{rng.Uint32(), head + f.f.Size() + 1, tail - 1, tail + 1 + uint32(rng.IntN(64)),
			head - uint32(rng.IntN(64)), 0, 1, tail + f.f.Size(), head + 1<<31, tail &^ 7}
		hsPut32(f.f, off, vals[rng.IntN(len(vals))])
		if rng.IntN(2) == 0 {
			f.f.SetEvent()
			h.kick()
		}
	case r < 8: // a datagram record in a tx fifo, published
		f := h.pickFifo()
		if f == nil || !f.tx {
			return
		}
		hd := hsHeader(f.f)
		data := hsData(f.f)
		tail := binary.NativeEndian.Uint32(hd[fifo.FifoOffTail:])
		size := uint32(len(data))
		var rec [fifo.DgramHeaderSize]byte
		for i := range rec {
			rec[i] = byte(rng.Uint32())
		}
		lens := []uint32{rng.Uint32(), size, size - fifo.DgramHeaderSize, size - fifo.DgramHeaderSize + 1, 0, uint32(rng.IntN(2000)), 1 << 31}
		l := lens[rng.IntN(len(lens))]
		binary.NativeEndian.PutUint32(rec[fifo.DgramOffLen:], l)
		if rng.IntN(2) == 0 { // a plausible address, so that it may get far
			rec[fifo.DgramOffFamily] = 4
			copy(rec[fifo.DgramOffRemote:], h.rig.A.IPv4.AsSlice())
			clear(rec[fifo.DgramOffRemote+4 : fifo.DgramOffRemote+16])
			binary.NativeEndian.PutUint16(rec[fifo.DgramOffRemotePort:], hsPeerUDP)
		}
		for i := range rec {
			data[(tail+uint32(i))&(size-1)] = rec[i]
		}
		adv := []uint32{uint32(fifo.DgramRecordSize(int(l % (1 << 20)))), fifo.DgramHeaderSize, uint32(rng.IntN(int(size) + 1)), size}
		hsPut32(f.f, fifo.FifoOffTail, tail+adv[rng.IntN(len(adv))])
		f.f.SetEvent()
		h.kick()
	case r < 9: // the event queue's consumer index and flags
		if h.evqFifo == nil {
			return
		}
		offs := []int{fifo.FifoOffHead, fifo.FifoOffHasEvent, fifo.FifoOffWantDeqNtf, fifo.FifoOffHasDeqNtf}
		hsPut32(h.evqFifo, offs[rng.IntN(len(offs))], []uint32{rng.Uint32(), 0, 64, 1 << 31}[rng.IntN(4)])
	default: // a segment header field
		for _, s := range h.segs {
			b := s.Bytes()
			off := []int{fifo.SegOffMagic, fifo.SegOffSize, fifo.SegOffFifoHdrSize, fifo.SegOffAllocStart,
				fifo.SegOffEventQueue, fifo.SegOffIndex, fifo.SegOffAllocCount}[rng.IntN(7)]
			binary.NativeEndian.PutUint32(b[off:], rng.Uint32())
			break
		}
	}
}

// send queues data as an app does, into a tx fifo: a datagram to host A
// or the peer, or stream bytes, then signals.
func (h *hostileSoakApp) send() {
	h.count("send")
	for range 1 + h.rng.IntN(4) {
		f := h.pickFifo()
		if f == nil {
			return
		}
		if !f.tx {
			// Take what came, as a consumer does.
			if f.dgram {
				var dh fifo.DgramHeader
				f.f.DequeueDgram(&dh, make([]byte, 65536))
			} else {
				f.f.Dequeue(make([]byte, 4096))
			}
			continue
		}
		payload := make([]byte, h.rng.IntN(1500))
		if f.dgram {
			dh := fifo.DgramHeader{Family: 4, RemotePort: hsPeerUDP}
			copy(dh.Remote[:], h.rig.A.IPv4.AsSlice())
			f.f.EnqueueDgram(&dh, payload)
		} else {
			f.f.Enqueue(payload)
		}
		f.f.SetEvent()
	}
	h.kick()
}

// kick writes the workers' and the cut-through peers' eventfds.
func (h *hostileSoakApp) kick() {
	var one [8]byte
	v := uint64(1)
	if h.hostile && h.rng.IntN(16) == 0 {
		v = h.rng.Uint64() >> 2
	}
	binary.NativeEndian.PutUint64(one[:], v)
	for _, k := range h.kicks {
		unix.Write(k, one[:])
	}
	for _, k := range h.ctKicks {
		unix.Write(k, one[:])
	}
}

// drainEvents takes the events queued for the app, adding the fifos of
// sessions that connected.
func (h *hostileSoakApp) drainEvents() {
	if h.evq == nil {
		return
	}
	n, err := h.evq.PopBatch(h.evs)
	if err != nil {
		return // ErrEmpty, or the queue it broke itself
	}
	for i := range n {
		se := fifo.DecodeSessionEvent(&h.evs[i])
		switch se.Type {
		case fifo.EventConnected, fifo.EventAccepted:
			if !se.CutThrough {
				se.Rx.Size, se.Tx.Size = 1, 1
				h.addPair(nil, se.Rx, se.Tx, false)
			}
			h.addHandle(flow.Handle(se.Handle))
		}
	}
}

// garbage sends a record that is random, a valid one truncated or
// mutated, or a valid request in the wrong order or with descriptors it
// must not carry.
func (h *hostileSoakApp) garbage() {
	if !h.hostile {
		return
	}
	h.count("garbage")
	rng := h.rng
	// Not the operator's requests (namespaces, rules): the test runs as
	// root, whose rules may drop the good app's traffic as asked.
	var reqs []api.Message
	for _, m := range validRequests() {
		switch m.(type) {
		case *api.NsAdd, *api.NsDel, *api.RuleAdd, *api.RuleDel:
		default:
			reqs = append(reqs, m)
		}
	}
	reqs = append(reqs, &api.SleepFlags{}, &api.PathMTU{Handle: flow.Handle(rng.Uint64()), Remote: h.rig.A.IPv4},
		&api.Membership{Handle: flow.Handle(rng.Uint64()), Group: netip.MustParseAddr("239.1.2.3")},
		&api.Show{What: api.ShowWhat(rng.IntN(10))}, &api.Hello{Major: api.VersionMajor, Name: "again"},
		&api.Show{What: api.ShowWhat(rng.IntN(10)), After: rng.Uint64() >> rng.IntN(64), Limit: rng.Uint32() >> rng.IntN(32)},
		&api.Attach{Name: "twice", Scope: flow.ScopeLocal})
	for _, hd := range h.handles {
		reqs = append(reqs, &api.SetKeepalive{Handle: hd, Enabled: true, Idle: time.Duration(rng.Int64()), Interval: time.Duration(rng.Int64()), Count: rng.Uint32()},
			&api.PathMTU{Handle: hd, Remote: h.rig.A.IPv4}, &api.CloseWrite{Handle: hd})
	}
	m := reqs[rng.IntN(len(reqs))]
	id := rng.Uint32() &^ (1 << 31)
	rec, err := api.AppendRecord(nil, id, 0, m)
	if err != nil {
		return
	}
	var fds []int
	switch rng.IntN(7) {
	case 0: // random bytes
		rec = make([]byte, rng.IntN(300))
		for i := range rec {
			rec[i] = byte(rng.Uint32())
		}
	case 1: // truncated
		rec = rec[:rng.IntN(len(rec))]
	case 2: // mutated
		for k := 1 + rng.IntN(4); k > 0; k-- {
			rec[rng.IntN(len(rec))] = byte(rng.Uint32())
		}
	case 3: // longer than it says
		rec = append(rec, make([]byte, 1+rng.IntN(64))...)
	case 4: // a header that says more is coming, or another version
		rec[3] = byte(rng.IntN(256))
		if rng.IntN(2) == 0 {
			rec[2] = byte(rng.IntN(256))
		}
	case 5: // descriptors nobody asked for
		if fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC); err == nil {
			fds = append(fds, fd)
		}
		if len(h.segs) > 0 && rng.IntN(2) == 0 {
			for _, s := range h.segs {
				fds = append(fds, s.FD())
				break
			}
		}
	default: // well-formed, maybe out of order
	}
	if len(rec) == 0 {
		rec = []byte{0}
	}
	err = h.write(rec, fds...)
	if len(fds) > 0 {
		unix.Close(fds[0]) // the eventfd; a segment's stays the segment's
	}
	if err != nil {
		return
	}
	// Take what comes back for a moment (a reply, an error, the close).
	deadline := time.Now().Add(time.Duration(1+rng.IntN(20)) * time.Millisecond)
	for h.uc != nil {
		hd, rep, rfds, err := h.recv(deadline)
		if err != nil {
			return
		}
		api.CloseFDs(rfds)
		if hd.ID == id {
			h.replies["garbage->"+rep.Type().String()]++
		}
	}
}

// misc sends well-formed requests of the other kinds, on its handles.
func (h *hostileSoakApp) misc() {
	h.count("misc")
	var hd flow.Handle
	if len(h.handles) > 0 {
		hd = h.handles[h.rng.IntN(len(h.handles))]
	}
	switch h.rng.IntN(5) {
	case 0:
		rep, fds, err := h.callFDs(&api.SleepFlags{})
		if err == nil {
			if _, ok := rep.(*api.SleepFlagsReply); ok && len(fds) == 1 {
				// The page cannot be made writable.
				if b, err := unix.Mmap(fds[0], 0, api.SleepFlagsSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
					unix.Munmap(b)
					h.t.Errorf("the sleep flags page mapped writable")
				}
			}
		}
		api.CloseFDs(fds)
	case 1:
		h.call(&api.SetKeepalive{Handle: hd, Enabled: h.rng.IntN(2) == 0, Idle: time.Duration(h.rng.IntN(10)) * time.Second,
			Interval: time.Duration(h.rng.IntN(5)) * time.Second, Count: uint32(h.rng.IntN(10))})
	case 2:
		h.call(&api.PathMTU{Handle: hd, Remote: h.rig.A.IPv4})
	case 3:
		h.call(&api.Membership{Handle: hd, Group: netip.MustParseAddr("239.1.2.3"), Leave: h.rng.IntN(2) == 0})
	default:
		h.call(&api.Bind{URI: fmt.Sprintf("udp://127.0.0.1:%d", hsGoodUDP)}) // the good app's port: refused
	}
}
