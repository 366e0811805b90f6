package tcp_test

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/tcp"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
)

var (
	addrA  = netip.MustParseAddr("10.0.0.1")
	addrB  = netip.MustParseAddr("10.0.0.2")
	addrA6 = netip.MustParseAddr("fd00::1")
	addrB6 = netip.MustParseAddr("fd00::2")
)

// wireOpts shape one direction of the in-process wire.
type wireOpts struct {
	loss    float64 // probability a packet is dropped
	reorder float64 // probability a packet is held back behind the next one
	drop    func(pkt []byte) bool
}

// wire carries packets from one stack's Writer to the other's link on a
// goroutine, as the workers will (gVisor's goroutines never inject into the
// peer themselves).
type wire struct {
	opts  wireOpts
	to    atomic.Pointer[tcp.LinkEndpoint]
	ch    chan *[]byte
	pool  sync.Pool
	rng   *rand.Rand
	done  chan struct{}
	drops atomic.Uint64
}

func newWire(o wireOpts) *wire {
	w := &wire{opts: o, ch: make(chan *[]byte, 8192), done: make(chan struct{}), rng: rand.New(rand.NewPCG(1, 2))}
	w.pool.New = func() any { b := make([]byte, 0, 2048); return &b } // an MTU; AppendTo grows it for more
	go w.run()
	return w
}

func (w *wire) WritePacket(p tcp.Packet) bool {
	bp := w.pool.Get().(*[]byte)
	*bp = p.AppendTo((*bp)[:0])
	select {
	case w.ch <- bp:
		return true
	default:
		w.pool.Put(bp)
		w.drops.Add(1)
		return false
	}
}

// run delivers what the channel holds in batches (InjectBatch), as a worker
// delivers what one poll of its rx ring gave.
func (w *wire) run() {
	defer close(w.done)
	var held *[]byte
	var batch []*[]byte
	var pkts [][]byte
	add := func(b *[]byte) {
		switch {
		case w.opts.loss > 0 && w.rng.Float64() < w.opts.loss, w.opts.drop != nil && w.opts.drop(*b):
			w.put(b)
			return
		case held == nil && w.opts.reorder > 0 && w.rng.Float64() < w.opts.reorder:
			held = b
			return
		}
		batch = append(batch, b)
		if held != nil {
			batch = append(batch, held)
			held = nil
		}
	}
	for b := range w.ch {
		add(b)
	drain:
		for len(batch) < wireBatch {
			select {
			case b, ok := <-w.ch:
				if !ok {
					break drain
				}
				add(b)
			default:
				break drain
			}
		}
		if l := w.to.Load(); l != nil && len(batch) > 0 {
			for _, b := range batch {
				pkts = append(pkts, *b)
			}
			l.InjectBatch(pkts)
			clear(pkts)
			pkts = pkts[:0]
		}
		for i, b := range batch {
			w.put(b)
			batch[i] = nil
		}
		batch = batch[:0]
	}
	if held != nil {
		w.put(held)
	}
}

// wireBatch is the most packets the wire hands to InjectBatch at once.
const wireBatch = 64

func (w *wire) put(b *[]byte) { w.pool.Put(b) }

func (w *wire) close() { close(w.ch); <-w.done }

// pair is two stacks joined back to back: A 10.0.0.1/fd00::1, B 10.0.0.2/fd00::2.
type pair struct {
	a, b   *tcp.Stack
	ab, ba *wire
}

func newPair(tb testing.TB, opts tcp.Options, ab, ba wireOpts) *pair {
	tb.Helper()
	return newPairOpts(tb, opts, opts, ab, ba)
}

// newPairOpts is newPair with options of its own for each stack.
func newPairOpts(tb testing.TB, optsA, optsB tcp.Options, ab, ba wireOpts) *pair {
	tb.Helper()
	p := &pair{ab: newWire(ab), ba: newWire(ba)}
	var err error
	if p.a, err = tcp.NewStack(p.ab, optsA); err != nil {
		tb.Fatal(err)
	}
	if p.b, err = tcp.NewStack(p.ba, optsB); err != nil {
		tb.Fatal(err)
	}
	p.ab.to.Store(p.b.Link())
	p.ba.to.Store(p.a.Link())
	for _, x := range []struct {
		s *tcp.Stack
		a netip.Prefix
	}{{p.a, netip.PrefixFrom(addrA, 24)}, {p.b, netip.PrefixFrom(addrB, 24)}, {p.a, netip.PrefixFrom(addrA6, 64)}, {p.b, netip.PrefixFrom(addrB6, 64)}} {
		if err := x.s.AddAddress(x.a); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Cleanup(p.close)
	return p
}

func (p *pair) close() {
	p.a.Close()
	p.b.Close()
	p.ab.close()
	p.ba.close()
}

// app plays an app on one Conn: it holds the app's views of the fifos and
// records the Conn's events.
type app struct {
	rx, tx     *fifo.Fifo // the Conn's views
	appRx      *fifo.Fifo // the app's consumer view of rx
	appTx      *fifo.Fifo // the app's producer view of tx
	conn       chan *tcp.Conn
	connected  chan struct{}
	failed     chan error
	readable   chan struct{}
	writable   chan struct{}
	peerClosed chan struct{}
	reset      chan error
	closed     chan struct{}

	sendBlocked atomic.Bool  // send waits for room in the tx fifo
	queuedTx    atomic.Int64 // bytes send queued in the tx fifo so far
	closeReqs   atomic.Int32 // CloseRequested calls
	resetsAhead atomic.Int32 // ResetAhead calls

	mu sync.Mutex // guards c
	c  *tcp.Conn
}

func newApp(tb testing.TB, fifoSize uint32) *app {
	a := emptyApp()
	a.rx, a.appRx = fifotest.Pair(tb, fifoSize)
	a.tx, a.appTx = fifotest.Pair(tb, fifoSize)
	return a
}

func emptyApp() *app {
	return &app{
		conn: make(chan *tcp.Conn, 1), connected: make(chan struct{}, 1), failed: make(chan error, 1),
		readable: make(chan struct{}, 1), writable: make(chan struct{}, 1), peerClosed: make(chan struct{}, 1),
		reset: make(chan error, 1), closed: make(chan struct{}),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (a *app) setConn(c *tcp.Conn) {
	a.mu.Lock()
	a.c = c
	a.mu.Unlock()
}

func (a *app) getConn() *tcp.Conn {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.c
}

func (a *app) Connected(c *tcp.Conn)              { signal(a.connected) }
func (a *app) ConnectFailed(c *tcp.Conn, e error) { a.failed <- e }
func (a *app) Readable(c *tcp.Conn)               { signal(a.readable) }
func (a *app) Writable(c *tcp.Conn)               { signal(a.writable) }
func (a *app) PeerClosed(c *tcp.Conn)             { signal(a.peerClosed) }
func (a *app) Reset(c *tcp.Conn, e error)         { a.reset <- e }
func (a *app) ResetAhead(c *tcp.Conn, e error)    { a.resetsAhead.Add(1) }
func (a *app) Closed(c *tcp.Conn)                 { close(a.closed) }
func (a *app) CloseRequested(c *tcp.Conn)         { a.closeReqs.Add(1); c.Close() }

// acceptor hands out a fresh app per accepted Conn. Accept runs on the
// Stack's goroutines, where a test's Fatal would end that goroutine instead
// of the test: it never touches tb, refuses a Conn it cannot serve, and
// reports why when the test ends (a Conn it is handed after that is refused
// too).
type acceptor struct {
	fifoSize uint32
	apps     chan *app
	closed   chan struct{}
	gate     acceptGate
}

func newAcceptor(tb testing.TB, fifoSize uint32) *acceptor {
	ac := &acceptor{fifoSize: fifoSize, apps: make(chan *app, 16), closed: make(chan struct{})}
	ac.gate.watch(tb)
	return ac
}

func (ac *acceptor) Accept(c *tcp.Conn) (*fifo.Fifo, *fifo.Fifo, tcp.Handler, error) {
	return ac.gate.accept(c, ac.apps, func() (*app, error) { return heapApp(ac.fifoSize) })
}

func (ac *acceptor) ListenerClosed(*tcp.Listener) { close(ac.closed) }

func recvOrFail[T any](tb testing.TB, ch <-chan T, d time.Duration, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		tb.Fatalf("timeout waiting for %s", what)
		panic("unreachable")
	}
}

// dialFrom dials remote from local on A for a new app with fifos of
// fifoSize bytes.
func dialFrom(tb testing.TB, p *pair, local, remote netip.AddrPort, fifoSize uint32) (*app, *tcp.Conn, error) {
	a := newApp(tb, fifoSize)
	c, err := p.a.Dial(local, remote, 1, a.rx, a.tx, a)
	if err == nil {
		a.setConn(c)
	}
	return a, c, err
}

// dial connects A to B's listener on port and returns both apps, connected.
func dial(tb testing.TB, p *pair, ac *acceptor, remote netip.AddrPort, fifoSize uint32) (client, server *app) {
	tb.Helper()
	local := addrA
	if remote.Addr().Is6() {
		local = addrA6
	}
	client, _, err := dialFrom(tb, p, netip.AddrPortFrom(local, 0), remote, fifoSize)
	if err != nil {
		tb.Fatal(err)
	}
	select {
	case <-client.connected:
	case err := <-client.failed:
		tb.Fatalf("connect: %v", err)
	case <-time.After(5 * time.Second):
		tb.Fatal("connect timed out")
	}
	server = recvOrFail(tb, ac.apps, 5*time.Second, "accept")
	return client, server
}

// send writes n bytes of a deterministic stream (seed) into the app's tx
// fifo, feeding h, and returns when all are queued.
func (a *app) send(n int64, seed uint64, h hash.Hash, chunk int) error {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	rng := rand.NewChaCha8(key)
	buf := make([]byte, chunk)
	var left []byte
	deadline := 30 * time.Second
	for sent := int64(0); sent < n || len(left) > 0; {
		if len(left) == 0 {
			m := min(int64(chunk), n-sent)
			rng.Read(buf[:m])
			left = buf[:m]
			h.Write(left)
			sent += m
		}
		k, err := a.appTx.Enqueue(left)
		if k > 0 {
			left = left[k:]
			a.queuedTx.Add(int64(k))
			if a.appTx.SetEvent() {
				a.getConn().Kick()
			}
			continue
		}
		if !errors.Is(err, fifo.ErrNoSpace) {
			return err
		}
		a.appTx.WantDeqNotify(fifo.DeqNotifyIfFull)
		if a.appTx.MaxEnqueue() > 0 {
			continue
		}
		a.sendBlocked.Store(true)
		select {
		case <-a.writable:
		case <-a.closed:
			return errors.New("closed while sending")
		case <-time.After(deadline):
			return errors.New("send stalled")
		}
		a.sendBlocked.Store(false)
	}
	return nil
}

// recv reads from the app's rx fifo into h until n bytes arrived (n < 0:
// until the peer's FIN), pausing pause after each read of at most chunk.
func (a *app) recv(n int64, h hash.Hash, chunk int, pause time.Duration) (int64, error) {
	buf := make([]byte, chunk)
	var got int64
	fin := false
	for n < 0 || got < n {
		k, err := a.appRx.Dequeue(buf)
		if k > 0 {
			h.Write(buf[:k])
			got += int64(k)
			if a.appRx.DeqNotify(k) {
				a.getConn().Kick()
			}
			if pause > 0 {
				time.Sleep(pause)
			}
			continue
		}
		if !errors.Is(err, fifo.ErrEmpty) {
			return got, err
		}
		if fin {
			return got, nil
		}
		a.appRx.ClearEvent()
		if a.appRx.MaxDequeue() > 0 {
			continue
		}
		select {
		case <-a.readable:
		case <-a.peerClosed:
			fin = true // drain what is queued, then stop
		case <-time.After(30 * time.Second):
			return got, errors.New("recv stalled")
		}
	}
	return got, nil
}

func newHash() hash.Hash { return sha256.New() }

var _ io.Writer = newHash()

// newAppIn is newApp with the fifos allocated in seg (freed by free), for
// tests that make many Conns.
func newAppIn(tb testing.TB, seg *fifo.Segment, fifoSize uint32) *app {
	tb.Helper()
	a, err := appIn(seg, fifoSize)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

func appIn(seg *fifo.Segment, fifoSize uint32) (*app, error) {
	a := emptyApp()
	var err error
	if a.rx, err = seg.AllocFifo(fifoSize); err != nil {
		return nil, err
	}
	if a.tx, err = seg.AllocFifo(fifoSize); err != nil {
		seg.FreeFifo(a.rx)
		return nil, err
	}
	if a.appRx, err = seg.FifoAt(a.rx.Offset()); err == nil {
		a.appTx, err = seg.FifoAt(a.tx.Offset())
	}
	if err != nil {
		a.free(seg)
		return nil, err
	}
	return a, nil
}

// heapApp is newApp for the Stack's goroutines: its fifos are in heap
// segments of their own, which the garbage collector frees.
func heapApp(fifoSize uint32) (*app, error) {
	a := emptyApp()
	var err error
	if a.rx, a.appRx, err = fifotest.HeapPair("accepted", fifoSize); err != nil {
		return nil, err
	}
	if a.tx, a.appTx, err = fifotest.HeapPair("accepted", fifoSize); err != nil {
		return nil, err
	}
	return a, nil
}

// acceptGate is what an acceptor's Accept, on the Stack's goroutines,
// needs of its test: whether it has ended, and where to keep what Accept
// could not do until then.
type acceptGate struct {
	mu    sync.Mutex
	ended chan struct{} // closed as the test ends
	errs  []error
}

// watch reports the errors as tb ends, and refuses Accept calls after.
// Cleanups run last registered first, so a Stack made before the acceptor
// closes after this, with no Accept of it left waiting on apps.
func (g *acceptGate) watch(tb testing.TB) {
	g.ended = make(chan struct{})
	tb.Cleanup(func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		close(g.ended)
		for _, err := range g.errs {
			tb.Errorf("accept: %v", err)
		}
	})
}

var errTestEnded = errors.New("accepted after the test ended")

// accept is an acceptor's Accept: unless the test has ended, it makes c's
// app with build (keeping its error) and gives it to the test through
// apps, or refuses c if the test ends first.
func (g *acceptGate) accept(c *tcp.Conn, apps chan<- *app, build func() (*app, error)) (*fifo.Fifo, *fifo.Fifo, tcp.Handler, error) {
	a, err := g.build(build)
	if err != nil {
		return nil, nil, nil, err
	}
	a.setConn(c)
	select {
	case apps <- a:
		return a.rx, a.tx, a, nil
	case <-g.ended:
		return nil, nil, nil, errTestEnded
	}
}

func (g *acceptGate) build(build func() (*app, error)) (*app, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.ended:
		return nil, errTestEnded
	default:
	}
	a, err := build()
	if err != nil {
		g.errs = append(g.errs, err)
	}
	return a, err
}

func (a *app) free(seg *fifo.Segment) {
	seg.FreeFifo(a.rx)
	seg.FreeFifo(a.tx)
}

// segAcceptor hands out apps whose fifos live in one segment; like
// acceptor, it never touches a test's tb from the Stack's goroutines.
type segAcceptor struct {
	seg  *fifo.Segment
	size uint32
	apps chan *app
	gate acceptGate
}

func newSegAcceptor(tb testing.TB, seg *fifo.Segment, size uint32) *segAcceptor {
	ac := &segAcceptor{seg: seg, size: size, apps: make(chan *app, 1)}
	ac.gate.watch(tb)
	return ac
}

func (ac *segAcceptor) Accept(c *tcp.Conn) (*fifo.Fifo, *fifo.Fifo, tcp.Handler, error) {
	return ac.gate.accept(c, ac.apps, func() (*app, error) { return appIn(ac.seg, ac.size) })
}

func (ac *segAcceptor) ListenerClosed(*tcp.Listener) {}

// connectedPair is a pair with a client Conn on A connected to a listener
// on B's port 80, both ends with fifos of size bytes.
func connectedPair(tb testing.TB, size uint32) (p *pair, client, server *app) {
	tb.Helper()
	p = newPair(tb, tcp.Options{}, wireOpts{}, wireOpts{})
	_, ac := listen(tb, p.b, netip.AddrPortFrom(addrB, 80), size)
	client, server = dial(tb, p, ac, netip.AddrPortFrom(addrB, 80), size)
	return p, client, server
}
