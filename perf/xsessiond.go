package main

// The xsessiond implementations run the daemon through package daemon, as
// xsessiond run does (session layer, datapath engine, XDP program, control
// socket), in a process of its own beside the app's (xsdaemon.go) or with
// --xs-daemon-process=false in the app's process, with its control socket
// in a temporary directory, and apps that attach to it through the app
// library over that socket, as any app does. The cut-through pair runs
// the daemon without a datapath on the loopback interface, in the
// harness's process: two apps joined by a local-scope connect.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/datapath/xsk"
	"github.com/xsessiond/xsessiond/fifo"
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
	// RxFifo is the app's rx fifo size in bytes (its tx fifo keeps the
	// library's default).
	RxFifo uint32
	// Ring is the AF_XDP sockets' ring entries (xsk.Options.RingSize),
	// with twice as many UMEM frames; 0 is the engine's default.
	Ring int
	// IdleNap, IdleSpin and IdleSpinMax are datapath.Config's; 0 is the
	// default.
	IdleNap, IdleSpin, IdleSpinMax time.Duration
	// AppSpin is the apps' app.Options.ReadSpin; 0 is the library's
	// default, negative no spin.
	AppSpin time.Duration
	// TCPBulkFifo is the rx and tx fifo size in bytes of the TCP server
	// app's connections in the bulk rows (0: the daemon's default), as a
	// program that moves bulk data over kernel sockets sizes SO_RCVBUF and
	// SO_SNDBUF (or lets the kernel grow them: up to 4–6 MiB by default).
	TCPBulkFifo uint32
	// Capture, when set, is the pcapng file a capture of every frame is
	// written to while each receive and echo scenario runs (xsCapture).
	Capture string
	// DaemonProcess runs the daemon of the UDP receive, echo and TCP rows
	// in a process of its own beside the app's (xsdaemon.go), as
	// xsessiond run and an app run; false runs it in the app's process.
	DaemonProcess bool
	// SchedPolicy is the daemon's process's scheduling policy
	// (daemon.SetSchedPolicy, xsessiond run --sched-policy), set when it
	// runs in a process of its own; "" is keep, xsessiond run's default.
	SchedPolicy string
}

// xsCaptureNote, when set, is told each finished capture's line.
var xsCaptureNote func(string)

// xsOptions is what the command line chose; the constructors read it.
var xsOptions = XsessiondOptions{RxFifo: 4 << 20, DaemonProcess: true, SchedPolicy: daemon.SchedKeep}

// xsAttachTimeout bounds an app's attach and connect.
const xsAttachTimeout = 10 * time.Second

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

// xsDaemon is a daemon running in this process with its control socket
// in a temporary directory.
type xsDaemon struct {
	dir  string
	d    *daemon.Daemon
	opts XsessiondOptions // what it was started with; its apps' options too
}

// startXsDaemon starts the daemon on ifName in the named netns (""
// = the current one); with noDatapath the control plane runs alone. Its
// goroutines (the engine's workers and mirror, the control socket) carry
// the label part=datapath in CPU profiles.
func startXsDaemon(ifName, netns string, queues int, o XsessiondOptions, noDatapath bool) (_ *xsDaemon, err error) {
	x := &xsDaemon{opts: o}
	defer func() {
		if err != nil {
			err = errors.Join(err, x.close())
		}
	}()
	if x.dir, err = os.MkdirTemp("", "xsessiond-perf-"); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	x.d, err = daemon.New(daemon.Config{
		Datapath: datapath.Config{IfName: ifName, NetnsName: netns, Queues: queues,
			Batch: o.Batch, BusyPoll: o.BusyPoll, XDPMode: o.XDPMode, IdleNap: o.IdleNap, IdleSpin: o.IdleSpin, IdleSpinMax: o.IdleSpinMax,
			XSK: xsk.Options{RingSize: o.Ring, NumFrames: 2 * o.Ring}},
		NoDatapath: noDatapath,
		Socket:     filepath.Join(x.dir, "api.sock"),
	})
	if err != nil {
		return nil, err
	}
	pprof.Do(context.Background(), pprof.Labels("part", "datapath"), func(context.Context) { err = x.d.Start() })
	if err != nil {
		x.d = nil // Start undid what it did
		return nil, fmt.Errorf("start xsessiond on %s: %w", ifName, err)
	}
	return x, nil
}

// xsDaemonRef is a daemon the harness's apps attach to: in this process
// (*xsDaemon) or in a process of its own (*xsDaemonProcess,
// --xs-daemon-process).
type xsDaemonRef interface {
	socket() string            // its control socket
	stats() datapath.Stats     // its engine's counters; zero without an engine
	kicks() datapath.KickStats // its apps' kicks of the workers
	// profile starts a CPU profile of the daemon written to path, where
	// this process's own does not cover it, and returns what stops it.
	profile(path string) (stop func() error, err error)
	close() error // stops it
}

func (x *xsDaemon) socket() string { return x.d.Socket() }

func (x *xsDaemon) stats() datapath.Stats {
	if e := x.d.Engine(); e != nil {
		return e.Stats()
	}
	return datapath.Stats{}
}

// profile does nothing: this process's profile holds the daemon's work.
func (x *xsDaemon) profile(string) (func() error, error) { return func() error { return nil }, nil }

func (x *xsDaemon) kicks() datapath.KickStats {
	if e := x.d.Engine(); e != nil {
		return e.KickStats()
	}
	return datapath.KickStats{}
}

// startXsDaemonRef starts the daemon as o says: in this process, or with
// o.DaemonProcess in a process of its own beside this one (its
// namespaces, its CPUs).
func startXsDaemonRef(ifName, netns string, queues int, o XsessiondOptions) (xsDaemonRef, error) {
	if !o.DaemonProcess {
		x, err := startXsDaemon(ifName, netns, queues, o, false)
		if err != nil {
			return nil, err
		}
		return x, nil
	}
	b, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	return startXsDaemonProcess(ifName, netns, queues, string(b))
}

// attachTo attaches an app to the daemon listening on socket, with the
// read spin the harness chose (XsessiondOptions.AppSpin). Its goroutine
// (the event reactor) carries the label part=app.
func attachTo(socket string, spin time.Duration, o app.Options) (a *app.App, err error) {
	o.Socket = socket
	o.ReadSpin = spin
	ctx, cancel := context.WithTimeout(context.Background(), xsAttachTimeout)
	defer cancel()
	pprof.Do(ctx, pprof.Labels("part", "app"), func(ctx context.Context) { a, err = app.Attach(ctx, o) })
	if err != nil {
		return nil, fmt.Errorf("attach app %s: %w", o.Name, err)
	}
	return a, nil
}

// attach attaches an app to the daemon (attachTo).
func (x *xsDaemon) attach(o app.Options) (*app.App, error) {
	return attachTo(x.d.Socket(), x.opts.AppSpin, o)
}

// close stops the daemon and removes its socket directory. It may be
// called on a partly built xsDaemon.
func (x *xsDaemon) close() error {
	var errs []error
	if x.d != nil {
		errs = append(errs, x.d.Close())
		x.d = nil
	}
	if x.dir != "" {
		errs = append(errs, os.RemoveAll(x.dir))
		x.dir = ""
	}
	return errors.Join(errs...)
}

// xsListener is the daemon on env's interface with one app attached and
// bound to udp://env.Addr:env.Port: what xsessiond run and an app hold.
// The bind returns once the XDP program's maps steer the listener's
// traffic.
type xsListener struct {
	x   xsDaemonRef
	a   *app.App
	pc  *app.PacketConn
	cap *xsCapture // --xs-capture
}

func startXsListener(env *Env, o XsessiondOptions) (_ *xsListener, err error) {
	l := &xsListener{}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.close())
		}
	}()
	x, err := startXsDaemonRef(env.IfName, env.NetNS, env.Queues, o)
	if err != nil {
		return nil, err
	}
	l.x = x
	rxSize := max(o.RxFifo, fifo.MinFifoSize)
	if l.a, err = attachTo(l.x.socket(), o.AppSpin, app.Options{Name: "perf", RxFifoSize: rxSize, SegmentSize: uint64(rxSize) + 8<<20}); err != nil {
		return nil, err
	}
	uri := "udp://" + netip.AddrPortFrom(env.Addr, env.Port).String()
	if l.pc, err = l.a.ListenPacketConn(uri); err != nil {
		return nil, fmt.Errorf("listen %s: %w", uri, err)
	}
	if o.Capture != "" {
		if l.cap, err = startCapture(l.x.socket(), o.Capture); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// stats returns the engine's counters.
func (l *xsListener) stats() datapath.Stats { return l.x.stats() }

// close closes the app (which unbinds and detaches it), then the daemon.
// It may be called on a partly built xsListener.
func (l *xsListener) close() error {
	var errs []error
	if l.cap != nil {
		line, err := l.cap.stop()
		errs = append(errs, err)
		if xsCaptureNote != nil {
			xsCaptureNote(line)
		}
		l.cap = nil
	}
	if l.a != nil {
		errs = append(errs, l.a.Close())
		l.a, l.pc = nil, nil
	}
	if l.x != nil {
		errs = append(errs, l.x.close())
		l.x = nil
	}
	return errors.Join(errs...)
}

// stopped reports whether err is how a read ends once the harness set a
// past deadline or closed the app.
func stopped(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed)
}

// XsessiondReceiver is xsessiond delivering UDP into an app: the daemon on
// the receiving interface, a listener on the generator's port, and a
// consumer goroutine that reads it with ReadBatch (the datagrams in place
// in the fifo, handed back by the next call), as a line-rate app
// (examples/udpsink) does.
type XsessiondReceiver struct {
	opts      XsessiondOptions
	l         *xsListener
	stop      atomic.Bool
	done      chan struct{}
	delivered atomic.Uint64
	bytes     atomic.Uint64
	batches   atomic.Uint64
	err       error // the consumer's, read after done
	final     datapath.Stats
}

func (r *XsessiondReceiver) Name() string      { return ImplXsessiond }
func (r *XsessiondReceiver) Delivered() uint64 { return r.delivered.Load() }

// Start runs the daemon in env, binds the listener and starts the
// consumer; traffic sent after it returns is steered to the app.
func (r *XsessiondReceiver) Start(env *Env) error {
	l, err := startXsListener(env, r.opts)
	if err != nil {
		return err
	}
	r.l = l
	r.stop.Store(false)
	r.done = make(chan struct{})
	go pprof.Do(context.Background(), pprof.Labels("part", "app"), func(context.Context) {
		defer close(r.done)
		r.err = r.consume(l.pc)
	})
	return nil
}

func (r *XsessiondReceiver) consume(pc *app.PacketConn) error {
	msgs := make([]app.Message, 64)
	for {
		n, err := pc.ReadBatch(msgs)
		if err != nil {
			if r.stop.Load() && stopped(err) {
				return nil
			}
			return fmt.Errorf("read batch: %w", err)
		}
		var b uint64
		for i := range msgs[:n] {
			b += uint64(msgs[i].Len())
		}
		r.delivered.Add(uint64(n))
		r.bytes.Add(b)
		r.batches.Add(1)
	}
}

// Stop ends the consumer, closes the app and stops the daemon.
func (r *XsessiondReceiver) Stop() error {
	if r.l == nil {
		return nil
	}
	r.stop.Store(true)
	r.l.pc.SetReadDeadline(time.Now())
	<-r.done
	r.final = r.l.stats()
	err := errors.Join(r.err, r.l.close())
	r.l = nil
	return err
}

// Drops are the drops the daemon's workers counted, by reason, since
// Start (the engine is new at each Start): frames the AF_XDP sockets
// handed over that no app got.
func (r *XsessiondReceiver) Drops() Drops { return r.l.drops() }

// Breakdown is the AF_XDP sockets' kernel counters (xsListener.breakdown).
func (r *XsessiondReceiver) Breakdown() Drops { return r.l.breakdown() }

// drops are the daemon's per-queue drop reasons, summed over the queues:
// received frames no app got, and datagrams apps wrote that no frame
// carried; and the kernel path's receive drops.
func (l *xsListener) drops() Drops {
	d := Drops{}
	if l == nil {
		return d
	}
	st := l.stats()
	for k, v := range st.Totals.Drops {
		d["xsessiond-"+k] = v
	}
	// In generic mode a redirect the socket refused (no fill ring entry,
	// or the rx ring full) is freed without a device counter: only the
	// socket counts it. In native mode veth counts it in B's rx_dropped
	// (breakdown).
	if st.XDPMode == "generic" {
		for _, q := range st.Queues {
			if x := q.XSK; x != nil {
				d["xsk-rx-dropped"] += x.RxDropped
				d["xsk-rx-ring-full"] += x.RxRingFull
			}
		}
	}
	// Datagrams the kernel reassembled for the app that its rx fifo could
	// not take (the kernel path).
	d["xsessiond-kernel-rx-drops"] = st.KernelRxDrops
	return d
}

// breakdown is the AF_XDP sockets' kernel counters summed over the
// queues: the frames B's rx_dropped counted as failed redirects to a
// socket (rx-dropped, which in copy mode includes the times the fill ring
// was empty, and rx-ring-full).
func (l *xsListener) breakdown() Drops {
	d := Drops{}
	if l == nil {
		return d
	}
	for _, q := range l.stats().Queues {
		if x := q.XSK; x != nil {
			d["xsk-rx-dropped"] += x.RxDropped
			d["xsk-rx-ring-full"] += x.RxRingFull
			d["xsk-fill-ring-empty"] += x.RxFillRingEmptyDescs
			d["xsk-rx-invalid-descs"] += x.RxInvalidDescs
			d["xsk-tx-invalid-descs"] += x.TxInvalidDescs
		}
	}
	return d
}

// StatsLine summarizes the engine's counters (now, or at Stop once
// stopped) and the app's batches: where frames went that the app did not
// get. Call it from one goroutine with Start and Stop.
func (r *XsessiondReceiver) StatsLine() string {
	st := r.final
	if r.l != nil {
		st = r.l.stats()
	}
	return statsLine(st, r.batches.Load())
}

func statsLine(st datapath.Stats, batches uint64) string {
	t := st.Totals
	var b strings.Builder
	fmt.Fprintf(&b, "xdp %s: rx %d delivered %d dropped %d %v loops %d sleeps %d kicks %d; app batches %d",
		st.XDPMode, t.Rx, t.Delivered, t.Dropped, t.Drops, t.Loops, t.Sleeps, t.Kicks, batches)
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
// back to its sender with ReadFromUDPAddrPort and WriteToUDPAddrPort, the
// calls the kernel baseline's echo makes on its net.UDPConn: neither
// allocates.
type XsessiondEcho struct {
	opts   XsessiondOptions
	l      *xsListener
	stop   atomic.Bool
	done   chan struct{}
	echoed atomic.Uint64
	err    error
}

func (e *XsessiondEcho) Name() string { return ImplXsessiond }

// Start runs the daemon in env, binds the listener and starts echoing.
func (e *XsessiondEcho) Start(env *Env) error {
	l, err := startXsListener(env, e.opts)
	if err != nil {
		return err
	}
	e.l = l
	e.stop.Store(false)
	e.done = make(chan struct{})
	go pprof.Do(context.Background(), pprof.Labels("part", "app"), func(context.Context) {
		defer close(e.done)
		e.err = e.echo(l.pc)
	})
	return nil
}

func (e *XsessiondEcho) echo(pc *app.PacketConn) error {
	buf := make([]byte, 65536)
	for {
		n, addr, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if e.stop.Load() && stopped(err) {
				return nil
			}
			return fmt.Errorf("read: %w", err)
		}
		if _, err := pc.WriteToUDPAddrPort(buf[:n], addr); err != nil {
			if e.stop.Load() && stopped(err) {
				return nil
			}
			return fmt.Errorf("write: %w", err)
		}
		e.echoed.Add(1)
	}
}

// StatsLine summarizes the engine's counters, the idle policy's and the
// app kicks' included, and the echo app's reads (app.ReadStats). Call it
// before Stop.
func (e *XsessiondEcho) StatsLine() string {
	if e.l == nil {
		return ""
	}
	st := e.l.stats()
	t := st.Totals
	line := statsLine(st, e.echoed.Load())
	line += fmt.Sprintf("; spins %d spin-hits %d stolen %d naps %d full-yields %d", t.Spins, t.SpinHits, t.SpinsStolen, t.Naps, t.FullYields)
	if t.TxKernel > 0 {
		line += fmt.Sprintf("; kernel path tx %d waits %d", t.TxKernel, t.TxKernelWaits)
	}
	k := e.l.x.kicks()
	line += fmt.Sprintf("; app kicks %d spurious %d muted %d", k.Wakes, k.Spurious, k.Muted)
	r := e.l.a.ReadStats()
	line += fmt.Sprintf("; app read spins %d spin-hits %d stolen %d sleeps %d", r.Spins, r.SpinHits, r.SpinsStolen, r.Sleeps)
	return line
}

// Drops are the daemon's drop reasons since Start (xsListener.drops).
func (e *XsessiondEcho) Drops() Drops { return e.l.drops() }

// Breakdown is the AF_XDP sockets' kernel counters (xsListener.breakdown).
func (e *XsessiondEcho) Breakdown() Drops { return e.l.breakdown() }

// Stop ends the echo app, closes it and stops the daemon.
func (e *XsessiondEcho) Stop() error {
	if e.l == nil {
		return nil
	}
	e.stop.Store(true)
	e.l.pc.SetDeadline(time.Now())
	<-e.done
	err := errors.Join(e.err, e.l.close())
	e.l = nil
	return err
}

// XsessiondCutThrough is two local apps of one daemon joined by a
// cut-through session: the server listens on a local-scope UDP listener,
// the client dials it at 127.0.0.1, and the daemon gives both ends fifos
// in one shared segment; no datapath, no packets. A writer goroutine
// writes payload-sized datagrams on the client's connection, a reader
// takes them from the server's listener with ReadBatch; the app library
// puts each to sleep when it cannot go on and wakes it when the other made
// room or queued data.
type XsessiondCutThrough struct {
	x       *xsDaemon
	apps    []*app.App
	pc      *app.PacketConn
	conn    *app.Conn
	stop    atomic.Bool
	wrote   chan struct{} // closed when the writer is done
	wg      sync.WaitGroup
	sent    atomic.Uint64
	recv    atomic.Uint64
	errMu   sync.Mutex
	errs    []error // the goroutines' (guarded by errMu)
	started bool
}

const (
	ctPort     = 7400
	ctFifoSize = 1 << 20
	ctBatch    = 64
	// ctDrain bounds how long Stop waits for the reader to take what the
	// writer queued.
	ctDrain = 5 * time.Second
)

func (c *XsessiondCutThrough) Name() string      { return ImplXsessiond }
func (c *XsessiondCutThrough) Sent() uint64      { return c.sent.Load() }
func (c *XsessiondCutThrough) Delivered() uint64 { return c.recv.Load() }

// Start runs the daemon without a datapath on the loopback interface of
// the current network namespace, attaches the two apps, connects them and
// starts the writer and the reader.
func (c *XsessiondCutThrough) Start(payload int) (err error) {
	if payload < 1 || fifo.DgramRecordSize(payload) > ctFifoSize/2 {
		return fmt.Errorf("cut-through: payload %d", payload)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.close())
		}
	}()
	if c.x, err = startXsDaemon("lo", "", 0, XsessiondOptions{}, true); err != nil {
		return err
	}
	for _, name := range []string{"ct-server", "ct-client"} {
		a, err := c.x.attach(app.Options{Name: name, Scope: app.ScopeLocal,
			RxFifoSize: ctFifoSize, TxFifoSize: ctFifoSize, SegmentSize: 4 << 20})
		if err != nil {
			return err
		}
		c.apps = append(c.apps, a)
	}
	if c.pc, err = c.apps[0].ListenPacketConn(fmt.Sprintf("udp://0.0.0.0:%d", ctPort)); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), xsAttachTimeout)
	defer cancel()
	if c.conn, err = c.apps[1].DialConn(ctx, fmt.Sprintf("udp://127.0.0.1:%d", ctPort)); err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	if _, ok := c.conn.LocalAddr().(*app.CutThroughAddr); !ok {
		return fmt.Errorf("dial: not a cut-through session (local %v)", c.conn.LocalAddr())
	}
	c.stop.Store(false)
	c.wrote = make(chan struct{})
	c.wg.Add(2)
	c.started = true
	go pprof.Do(context.Background(), pprof.Labels("part", "ct-writer"), func(context.Context) {
		defer c.wg.Done()
		defer close(c.wrote)
		c.fail(c.write(payload))
	})
	go pprof.Do(context.Background(), pprof.Labels("part", "ct-reader"), func(context.Context) {
		defer c.wg.Done()
		c.fail(c.read())
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

func (c *XsessiondCutThrough) write(payload int) error {
	buf := make([]byte, payload)
	for !c.stop.Load() {
		if _, err := c.conn.Write(buf); err != nil {
			if c.stop.Load() && stopped(err) {
				return nil
			}
			return fmt.Errorf("cut-through write: %w", err)
		}
		c.sent.Add(1)
	}
	return nil
}

func (c *XsessiondCutThrough) read() error {
	msgs := make([]app.Message, ctBatch)
	for {
		n, err := c.pc.ReadBatch(msgs)
		if err != nil {
			if c.stop.Load() && stopped(err) {
				return nil
			}
			return fmt.Errorf("cut-through read: %w", err)
		}
		c.recv.Add(uint64(n))
	}
}

// Stop ends the writer, lets the reader take what it queued, closes both
// apps and stops the daemon.
func (c *XsessiondCutThrough) Stop() error {
	if !c.started {
		return nil
	}
	c.stop.Store(true)
	c.conn.SetWriteDeadline(time.Now().Add(ctDrain)) // in case the reader failed
	<-c.wrote
	for end := time.Now().Add(ctDrain); c.recv.Load() < c.sent.Load() && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	c.pc.SetReadDeadline(time.Now())
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
		errs = append(errs, c.apps[i].Close())
	}
	c.apps, c.pc, c.conn = nil, nil, nil
	if c.x != nil {
		errs = append(errs, c.x.close())
		c.x = nil
	}
	return errors.Join(errs...)
}
