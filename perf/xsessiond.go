package main

// The xsessiond implementations run in-process, built from the project's
// own packages the way the daemon builds them: an nsbind namespace and View
// of the receiving host, a datapath.Engine on its interface, a
// sessions.Layer over fifo memory, and an app attached to the layer that
// reads and writes its fifos directly (what the app library does after
// mapping the segments the daemon hands it). The cut-through pair needs no
// engine: two apps of one layer joined by a local-scope connect.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind"
	"github.com/xsessiond/xsessiond/sessions"
)

// XsessiondOptions shape how the harness drives xsessiond.
type XsessiondOptions struct {
	// Batch is the engine's frames per poll (datapath.Config.Batch); 0 is
	// the engine's default.
	Batch int
	// BusyPoll makes the engine's workers poll without sleeping.
	BusyPoll bool
	// XDPMode is datapath.Config.XDPMode: "" (auto), "native", "generic".
	XDPMode string
	// RxFifo is the app's rx fifo size in bytes.
	RxFifo uint32
}

// xsOptions is what the command line chose; the constructors read it.
var xsOptions = XsessiondOptions{RxFifo: 4 << 20}

// xsMirrorTimeout bounds the wait for the bpf maps to follow a bind.
const xsMirrorTimeout = 5 * time.Second

// NewXsessiondReceiver returns the receiver that delivers the generator's
// traffic into an app through xsessiond.
func NewXsessiondReceiver() (Receiver, error) {
	return &XsessiondReceiver{opts: xsOptions}, nil
}

// NewXsessiondEcho returns the echo server running as an xsessiond app.
func NewXsessiondEcho() (Echoer, error) {
	return &XsessiondEcho{opts: xsOptions}, nil
}

// NewXsessiondCutThrough returns a pair of local xsessiond apps joined by
// cut-through fifos.
func NewXsessiondCutThrough() (LocalPair, error) {
	return &XsessiondCutThrough{}, nil
}

type naError struct{ msg string }

func (e naError) Error() string        { return e.msg }
func (e naError) Is(target error) bool { return target == ErrNotAvailable }

// wrapNA is an error that errors.Is ErrNotAvailable, with its own message.
func wrapNA(msg string) error { return naError{msg} }

// xsEngine is xsessiond on the receiving interface with one app attached
// and bound to a UDP listener: what the daemon and an attached app hold.
type xsEngine struct {
	ns     *nsbind.Namespace
	view   *nsbind.View
	eng    *datapath.Engine
	l      *sessions.Layer
	app    sessions.AppID
	bound  bool // app attached (and to be detached)
	evq    *fifo.EventQueue
	rx, tx *fifo.Fifo // the listener's datagram fifos, app side
	worker uint32     // owner of tx: the kick eventfd to write
}

// startXsEngine builds the engine on env's interface, attaches an app and
// binds udp://env.Addr:env.Port, and waits until the XDP program's maps
// steer the listener's traffic.
func startXsEngine(env *Env, o XsessiondOptions) (x *xsEngine, err error) {
	x = &xsEngine{}
	defer func() {
		if err != nil {
			err = errors.Join(err, x.close())
			x = nil
		}
	}()
	if env.NetNS != "" {
		x.ns, err = nsbind.OpenNamed(env.NetNS)
	} else {
		x.ns, err = nsbind.OpenCurrent()
	}
	if err != nil {
		return nil, fmt.Errorf("open netns: %w", err)
	}
	if x.view, err = nsbind.NewView(x.ns, nsbind.ViewOptions{}); err != nil {
		return nil, fmt.Errorf("view of netns: %w", err)
	}
	x.eng, err = datapath.New(datapath.Config{IfName: env.IfName, Netns: x.ns, NetnsName: env.NetNS,
		Queues: env.Queues, Batch: o.Batch, BusyPoll: o.BusyPoll, XDPMode: o.XDPMode})
	if err != nil {
		return nil, fmt.Errorf("engine on %s: %w", env.IfName, err)
	}
	x.l, err = sessions.New(sessions.Config{View: x.view, Memory: sessions.FifoMemory{}, Datapath: x.eng.Datapath(),
		Workers: x.eng.Workers(), Default: sessions.NamespaceConfig{IfIndex: x.eng.IfIndex(), FIB4: x.eng.FIB(), FIB6: x.eng.FIB()}})
	if err != nil {
		return nil, fmt.Errorf("session layer: %w", err)
	}
	// The engine's goroutines (workers, mirror) carry this label in CPU
	// profiles.
	pprof.Do(context.Background(), pprof.Labels("part", "datapath"), func(context.Context) { err = x.eng.Start(x.l) })
	if err != nil {
		return nil, fmt.Errorf("start engine: %w", err)
	}
	rxSize := max(o.RxFifo, fifo.MinFifoSize)
	at, err := x.l.Attach(sessions.AttachOptions{ClientID: 1, Name: "perf", RxFifoSize: rxSize,
		SegmentSize: uint64(rxSize) + 8<<20})
	if err != nil {
		return nil, fmt.Errorf("attach app: %w", err)
	}
	x.app, x.bound = at.App, true
	m, ok := sessions.FifoManager(at.Memory)
	if !ok || m.EventQueue() == nil {
		return nil, errors.New("attach app: no fifo memory or event queue")
	}
	x.evq = m.EventQueue()
	uri := "udp://" + netip.AddrPortFrom(env.Addr, env.Port).String()
	h, err := x.l.BindURI(x.app, uri)
	if err != nil {
		return nil, fmt.Errorf("bind %s: %w", uri, err)
	}
	pair, w, err := x.l.ListenerPair(x.app, h)
	if err != nil {
		return nil, err
	}
	if x.rx, x.tx = pair.Rx, pair.Tx; x.rx == nil || x.tx == nil {
		return nil, errors.New("listener pair has no fifos")
	}
	x.worker = w
	ctx, cancel := context.WithTimeout(context.Background(), xsMirrorTimeout)
	defer cancel()
	if err := x.eng.WaitMirror(ctx); err != nil {
		return nil, fmt.Errorf("wait for the bpf maps: %w", err)
	}
	return x, nil
}

// kick wakes the worker that owns the listener's tx fifo.
func (x *xsEngine) kick() {
	fds := x.eng.KickFDs()
	if i := int(x.worker); i < len(fds) { // the engine's FirstWorker is 0
		one := [8]byte{1}
		_, _ = unix.Write(fds[i], one[:])
	}
}

// wait sleeps until the app's event queue has events or ctx ends, then
// empties the queue (every event is the listener's EventRx). The caller
// has cleared the rx fifo's event flag and found it empty.
func (x *xsEngine) wait(ctx context.Context, evs []fifo.Event) {
	_ = x.evq.Wait(ctx)
	for {
		if n, err := x.evq.PopBatch(evs); err != nil || n < len(evs) {
			return
		}
	}
}

// close detaches the app first (the layer frees fifo memory once the
// workers drained their mailboxes), then closes the engine and the rest.
// It may be called on a partly built xsEngine.
func (x *xsEngine) close() error {
	var errs []error
	if x.bound {
		errs = append(errs, x.l.Detach(x.app))
		x.bound = false
		x.rx, x.tx, x.evq = nil, nil, nil
	}
	if x.eng != nil {
		errs = append(errs, x.eng.Close())
		x.eng = nil
	}
	if x.view != nil {
		errs = append(errs, x.view.Close())
		x.view = nil
	}
	if x.ns != nil {
		errs = append(errs, x.ns.Close())
		x.ns = nil
	}
	return errors.Join(errs...)
}

// consumeDgrams takes every whole datagram queued in f the way a
// line-rate app does: it reads the records' headers in place (PeekSlices),
// counts them, and hands the space back with one Release. It returns the
// datagrams, their payload bytes and the fifo bytes released; ErrEmpty
// when nothing was queued, or ErrCorrupt when the queued bytes do not
// start with a whole record. It allocates nothing.
func consumeDgrams(f *fifo.Fifo) (n, bytes uint64, released int, err error) {
	a, b, err := f.PeekSlices()
	if err != nil {
		return 0, 0, 0, err
	}
	total := len(a) + len(b)
	off := 0
	for off+fifo.DgramHeaderSize <= total {
		plen := uint64(u32At(a, b, off+fifo.DgramOffLen))
		if plen > uint64(total-off) {
			break
		}
		rec := fifo.DgramRecordSize(int(plen))
		if rec > total-off {
			break
		}
		off += rec
		n++
		bytes += plen
	}
	if off == 0 {
		return 0, 0, 0, fifo.ErrCorrupt
	}
	if err := f.Release(off); err != nil {
		return 0, 0, 0, err
	}
	return n, bytes, off, nil
}

// u32At reads a native-order u32 at off of the region a followed by b.
func u32At(a, b []byte, off int) uint32 {
	if off+4 <= len(a) {
		return binary.NativeEndian.Uint32(a[off:])
	}
	var x [4]byte
	for i := range x {
		if p := off + i; p < len(a) {
			x[i] = a[p]
		} else {
			x[i] = b[p-len(a)]
		}
	}
	return binary.NativeEndian.Uint32(x[:])
}

// XsessiondReceiver is xsessiond delivering UDP into an app: the engine on
// the receiving interface, a listener on the generator's port, and a
// consumer goroutine that drains the listener's rx fifo whole (peek the
// records in place, release them with one store) and sleeps on the app's
// event queue eventfd when it is empty.
type XsessiondReceiver struct {
	opts      XsessiondOptions
	x         *xsEngine
	cancel    context.CancelFunc
	done      chan struct{}
	delivered atomic.Uint64
	bytes     atomic.Uint64
	wakeups   atomic.Uint64
	err       error // the consumer's, read after done
	final     datapath.Stats
}

func (r *XsessiondReceiver) Name() string      { return ImplXsessiond }
func (r *XsessiondReceiver) Delivered() uint64 { return r.delivered.Load() }

// Start builds the engine in env, binds the listener and starts the
// consumer; traffic sent after it returns is steered to the app.
func (r *XsessiondReceiver) Start(env *Env) error {
	x, err := startXsEngine(env, r.opts)
	if err != nil {
		return err
	}
	r.x = x
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go pprof.Do(ctx, pprof.Labels("part", "app"), func(ctx context.Context) {
		defer close(r.done)
		r.err = r.consume(ctx)
	})
	return nil
}

func (r *XsessiondReceiver) consume(ctx context.Context) error {
	rx := r.x.rx
	evs := make([]fifo.Event, 64)
	for {
		n, b, _, err := consumeDgrams(rx)
		switch err {
		case nil:
			r.delivered.Add(n)
			r.bytes.Add(b)
			continue
		case fifo.ErrEmpty:
		default:
			return fmt.Errorf("rx fifo: %w", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		// Empty: clear the flag so the worker signals again, look once
		// more, then sleep on the event queue.
		rx.ClearEvent()
		if rx.MaxDequeue() > 0 {
			continue
		}
		r.wakeups.Add(1)
		r.x.wait(ctx, evs)
	}
}

// Stop ends the consumer, detaches the app and closes the engine.
func (r *XsessiondReceiver) Stop() error {
	if r.x == nil {
		return nil
	}
	r.cancel()
	<-r.done
	r.final = r.x.eng.Stats()
	err := errors.Join(r.err, r.x.close())
	r.x = nil
	return err
}

// StatsLine summarizes the engine's counters (now, or at Stop once
// stopped) and the app's wake-ups: where frames went that the app did not
// get. Call it from one goroutine with Start and Stop.
func (r *XsessiondReceiver) StatsLine() string {
	st := r.final
	if r.x != nil {
		st = r.x.eng.Stats()
	}
	return statsLine(st, r.wakeups.Load())
}

func statsLine(st datapath.Stats, wakeups uint64) string {
	t := st.Totals
	var b strings.Builder
	fmt.Fprintf(&b, "xdp %s: rx %d delivered %d dropped %d %v loops %d sleeps %d kicks %d; app wake-ups %d",
		st.XDPMode, t.Rx, t.Delivered, t.Dropped, t.Drops, t.Loops, t.Sleeps, t.Kicks, wakeups)
	for _, q := range st.Queues {
		if x := q.XSK; x != nil {
			fmt.Fprintf(&b, "; q%d xsk rx-dropped %d rx-ring-full %d fill-ring-empty %d rx-wakeups %d",
				q.Queue, x.RxDropped, x.RxRingFull, x.RxFillRingEmptyDescs, x.RxWakeups)
		}
	}
	for k, v := range st.BPF {
		if v != 0 {
			fmt.Fprintf(&b, "; bpf %s %d", k, v)
		}
	}
	return b.String()
}

// XsessiondEcho is an xsessiond app echoing every datagram of its listener
// back to its sender: rx fifo to tx fifo in batches, kicking the owning
// worker when the tx fifo's event flag was clear.
type XsessiondEcho struct {
	opts   XsessiondOptions
	x      *xsEngine
	cancel context.CancelFunc
	done   chan struct{}
	echoed atomic.Uint64
	err    error
}

func (e *XsessiondEcho) Name() string { return ImplXsessiond }

// Start builds the engine in env, binds the listener and starts echoing.
func (e *XsessiondEcho) Start(env *Env) error {
	x, err := startXsEngine(env, e.opts)
	if err != nil {
		return err
	}
	e.x = x
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	go pprof.Do(ctx, pprof.Labels("part", "app"), func(ctx context.Context) {
		defer close(e.done)
		e.err = e.echo(ctx)
	})
	return nil
}

func (e *XsessiondEcho) echo(ctx context.Context) error {
	const batch = 64
	rx, tx := e.x.rx, e.x.tx
	hs := make([]fifo.DgramHeader, batch)
	bufs, pay := make([][]byte, batch), make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 65536)
	}
	evs := make([]fifo.Event, 64)
	for ctx.Err() == nil {
		n, err := rx.DequeueDgrams(hs, bufs)
		if n == 0 {
			if err != fifo.ErrEmpty {
				return fmt.Errorf("rx fifo: %w", err)
			}
			rx.ClearEvent()
			if rx.MaxDequeue() == 0 {
				e.x.wait(ctx, evs)
			}
			continue
		}
		for i := range n {
			pay[i] = bufs[i][:hs[i].Len]
		}
		// The received header names the sender as remote and our address
		// as local: sent back as is, it is the reply's header.
		for done := 0; done < n; {
			k, err := tx.EnqueueDgrams(hs[done:n], pay[done:n])
			done += k
			if k > 0 && tx.SetEvent() {
				e.x.kick()
			}
			switch {
			case err == nil:
			case errors.Is(err, fifo.ErrNoSpace):
				if ctx.Err() != nil {
					return nil
				}
				time.Sleep(20 * time.Microsecond) // the worker is draining it
			default:
				return fmt.Errorf("tx fifo: %w", err)
			}
		}
		e.echoed.Add(uint64(n))
	}
	return nil
}

// Stop ends the echo app, detaches it and closes the engine.
func (e *XsessiondEcho) Stop() error {
	if e.x == nil {
		return nil
	}
	e.cancel()
	<-e.done
	err := errors.Join(e.err, e.x.close())
	e.x = nil
	return err
}

// XsessiondCutThrough is two local apps of one session layer joined by a
// cut-through session: the server binds a local-scope UDP listener, the
// client connects to it at 127.0.0.1, and the layer gives both ends fifos
// in one shared segment; no engine, no packets. A writer goroutine queues
// payload-sized datagrams into the client's tx fifo in batches, a reader
// consumes them from the server's rx fifo in place (as the receiver does).
// Each sleeps when it cannot go on and is woken by the other through the
// fifo's event flag (data) or dequeue notification (room).
type XsessiondCutThrough struct {
	ns       *nsbind.Namespace
	view     *nsbind.View
	l        *sessions.Layer
	apps     []sessions.AppID
	stop     atomic.Bool
	stopped  chan struct{} // closed by Stop: wakes a sleeping writer
	wrote    chan struct{} // closed when the writer is done
	data     chan struct{} // writer → reader: data queued after the reader cleared the flag
	room     chan struct{} // reader → writer: the dequeue notification asked for
	wg       sync.WaitGroup
	sent     atomic.Uint64
	recv     atomic.Uint64
	errMu    sync.Mutex
	errs     []error // the goroutines' (guarded by errMu)
	started  bool
	ctEvents ctNotes
}

// ctNotes keeps the layer's events for the two apps (their fifo pairs).
type ctNotes struct {
	mu  sync.Mutex
	evs []sessions.Event
}

func (n *ctNotes) Notify(ev sessions.Event) {
	n.mu.Lock()
	n.evs = append(n.evs, ev)
	n.mu.Unlock()
}

func (n *ctNotes) pair(kind sessions.EventKind, app sessions.AppID) (sessions.FifoPair, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ev := range n.evs {
		if ev.Kind == kind && ev.App == app && ev.CutThrough {
			return ev.Pair, true
		}
	}
	return sessions.FifoPair{}, false
}

const (
	ctPort     = 7400
	ctFifoSize = 1 << 20
	ctBatch    = 64
)

func (c *XsessiondCutThrough) Name() string      { return ImplXsessiond }
func (c *XsessiondCutThrough) Sent() uint64      { return c.sent.Load() }
func (c *XsessiondCutThrough) Delivered() uint64 { return c.recv.Load() }

// Start builds the layer (in the current network namespace), attaches the
// two apps, connects them and starts the writer and the reader.
func (c *XsessiondCutThrough) Start(payload int) (err error) {
	if payload < 1 || fifo.DgramRecordSize(payload) > ctFifoSize/2 {
		return fmt.Errorf("cut-through: payload %d", payload)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.close())
		}
	}()
	if c.ns, err = nsbind.OpenCurrent(); err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	if c.view, err = nsbind.NewView(c.ns, nsbind.ViewOptions{}); err != nil {
		return fmt.Errorf("view of netns: %w", err)
	}
	lo, err := c.ns.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	c.l, err = sessions.New(sessions.Config{View: c.view, Memory: sessions.FifoMemory{}, Notifier: &c.ctEvents,
		Default: sessions.NamespaceConfig{IfIndex: lo.Index, FIB4: c.view.FIB(), FIB6: c.view.FIB()}})
	if err != nil {
		return fmt.Errorf("session layer: %w", err)
	}
	var ids [2]sessions.AppID
	for i, name := range []string{"ct-server", "ct-client"} {
		at, err := c.l.Attach(sessions.AttachOptions{ClientID: uint64(i + 1), Name: name, Scope: flow.ScopeLocal,
			RxFifoSize: ctFifoSize, TxFifoSize: ctFifoSize, SegmentSize: 4 << 20})
		if err != nil {
			return fmt.Errorf("attach %s: %w", name, err)
		}
		ids[i] = at.App
		c.apps = append(c.apps, at.App)
	}
	if _, err := c.l.BindURI(ids[0], fmt.Sprintf("udp://0.0.0.0:%d", ctPort)); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	res, err := c.l.ConnectURI(ids[1], fmt.Sprintf("udp://127.0.0.1:%d", ctPort), 1)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if !res.CutThrough {
		return errors.New("connect: not a cut-through session")
	}
	sp, ok1 := c.ctEvents.pair(sessions.EventAccepted, ids[0])
	cp, ok2 := c.ctEvents.pair(sessions.EventConnected, ids[1])
	if !ok1 || !ok2 {
		return errors.New("connect: no accepted/connected events with fifos")
	}
	rx, tx := sp.Rx, cp.Tx
	if rx == nil || tx == nil {
		return errors.New("cut-through pair has no fifos")
	}
	c.stopped, c.wrote = make(chan struct{}), make(chan struct{})
	c.data, c.room = make(chan struct{}, 1), make(chan struct{}, 1)
	c.wg.Add(2)
	c.started = true
	go pprof.Do(context.Background(), pprof.Labels("part", "ct-writer"), func(context.Context) {
		defer c.wg.Done()
		defer close(c.wrote)
		c.fail(c.write(tx, payload))
	})
	go pprof.Do(context.Background(), pprof.Labels("part", "ct-reader"), func(context.Context) {
		defer c.wg.Done()
		c.fail(c.read(rx))
	})
	return nil
}

func (c *XsessiondCutThrough) fail(err error) {
	if err != nil {
		c.errMu.Lock()
		c.errs = append(c.errs, err)
		c.errMu.Unlock()
	}
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (c *XsessiondCutThrough) write(tx *fifo.Fifo, payload int) error {
	hs := make([]fifo.DgramHeader, ctBatch)
	pay := make([][]byte, ctBatch)
	buf := make([]byte, payload)
	for i := range pay {
		pay[i] = buf
	}
	rec := fifo.DgramRecordSize(payload)
	for !c.stop.Load() {
		k, err := tx.EnqueueDgrams(hs, pay)
		if k > 0 {
			c.sent.Add(uint64(k))
			if tx.SetEvent() {
				poke(c.data)
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, fifo.ErrNoSpace):
			// Ask for a notification, look once more, then sleep.
			tx.WantDeqNotify(fifo.DeqNotifyAlways)
			if tx.MaxEnqueue() < rec {
				select {
				case <-c.room:
				case <-c.stopped:
				}
			}
			tx.WantDeqNotify(0)
		default:
			return fmt.Errorf("cut-through tx: %w", err)
		}
	}
	return nil
}

func (c *XsessiondCutThrough) read(rx *fifo.Fifo) error {
	for {
		n, _, released, err := consumeDgrams(rx)
		switch err {
		case nil:
			c.recv.Add(n)
			if rx.DeqNotify(released) {
				poke(c.room)
			}
			continue
		case fifo.ErrEmpty:
		default:
			return fmt.Errorf("cut-through rx: %w", err)
		}
		rx.ClearEvent()
		if rx.MaxDequeue() > 0 {
			continue
		}
		select {
		case <-c.data:
		case <-c.wrote:
			// The writer is done: what it queued is visible now.
			if rx.MaxDequeue() == 0 {
				return nil
			}
		}
	}
}

// Stop ends the writer, lets the reader drain, detaches both apps and
// closes the layer's view.
func (c *XsessiondCutThrough) Stop() error {
	if !c.started {
		return nil
	}
	c.stop.Store(true)
	close(c.stopped)
	c.wg.Wait()
	c.started = false
	c.errMu.Lock()
	err := errors.Join(c.errs...)
	c.errMu.Unlock()
	return errors.Join(err, c.close())
}

func (c *XsessiondCutThrough) close() error {
	var errs []error
	for i := len(c.apps) - 1; i >= 0; i-- {
		errs = append(errs, c.l.Detach(c.apps[i]))
	}
	c.apps = nil
	if c.view != nil {
		errs = append(errs, c.view.Close())
		c.view = nil
	}
	if c.ns != nil {
		errs = append(errs, c.ns.Close())
		c.ns = nil
	}
	return errors.Join(errs...)
}
