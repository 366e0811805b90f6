package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind"
	"github.com/xsessiond/xsessiond/sessions"
)

// Errors the daemon refuses to start with.
var (
	errNoInterface = errors.New("interface not found")
)

// shutdownGrace is how long Close waits for apps to hang up after the
// shutdown notice before it closes their connections.
const shutdownGrace = 500 * time.Millisecond

// daemonOptions configure a daemon. run fills them from flags and the
// config file; demo and tests fill them directly.
type daemonOptions struct {
	Iface    string // the interface the datapath runs on; it also is the default namespace's
	Netns    string // the named netns the interface lives in; "" = the daemon's own
	Queues   int
	Batch    int
	BusyPoll bool
	XDPMode  string

	Socket      string
	SocketGroup string
	SocketMode  os.FileMode
	MetricsAddr string

	Namespaces []NamespaceConfig
	Rules      []RuleConfig

	Logger *slog.Logger
	// NewEngine makes the datapath; nil runs the control plane alone
	// (noEngine).
	NewEngine newEngineFunc
	// NoticeTimeout bounds a notice sent to an app (segment added,
	// accepted, shutdown); an app that does not read its socket for that
	// long is disconnected. 0 means 1 s.
	NoticeTimeout time.Duration
}

// daemon is xsessiond: the session layer, the datapath engine of one
// interface, the control socket, and the metrics endpoint. Start it, then
// Close it; it can run in-process (demo, tests) as well as under run.
//
// Lock order: daemon.mu, then the session layer's lock is never taken
// while holding mu (the layer calls Notify without its lock, and Notify
// takes mu).
type daemon struct {
	opts  daemonOptions
	log   *slog.Logger
	start time.Time

	ns     *nsbind.Namespace // the interface's netns
	iface  nsbind.Interface
	views  nsbind.Views
	eng    engine
	layer  *sessions.Layer
	ln     *api.Listener
	cancel context.CancelFunc
	served chan struct{} // closed when Serve returned
	httpd  *http.Server
	// metricsAddr is where the metrics are served, once started.
	metricsAddr string

	closeOnce sync.Once

	mu        sync.Mutex
	netnss    map[flow.FIBID]*netnsRef                   // guarded by mu: open netns and their views, by FIB
	nsNetns   map[string]flow.FIBID                      // guarded by mu: namespace id -> the FIB whose view it holds a reference on
	conns     map[uint64]*conn                           // guarded by mu: live control connections by client id
	byApp     map[sessions.AppID]*conn                   // guarded by mu: attached apps' connections
	nextConn  uint64                                     // guarded by mu
	ctPending map[ctKey]*ctMem                           // guarded by mu: cut-through connects waiting for their reply
	fifos     map[sessions.AppID]map[flow.Handle]pairRef // guarded by mu: fifos per app, for metrics
	cfgNs     []string                                   // guarded by mu: namespace ids the config file added
	cfgRules  []uint32                                   // guarded by mu: rule ids the config file added
	closing   bool                                       // guarded by mu
	// detachLater are the apps whose connection ended while the daemon
	// was stopping, detached together at the end. Guarded by mu.
	detachLater []*conn
}

// netnsRef is an open netns with its view, shared by the namespaces that
// live in it.
type netnsRef struct {
	name string
	ns   *nsbind.Namespace
	view *nsbind.View
	refs int
}

// ctKey names a connect waiting for its reply: the client app and its
// session handle.
type ctKey struct {
	app sessions.AppID
	h   flow.Handle
}

func (o *daemonOptions) fill() {
	if o.Socket == "" {
		o.Socket = DefaultSocket
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.NoticeTimeout <= 0 {
		o.NoticeTimeout = time.Second
	}
	if o.XDPMode == "" {
		o.XDPMode = "auto"
	}
}

// newDaemon returns a daemon that is not started.
func newDaemon(opts daemonOptions) *daemon {
	opts.fill()
	return &daemon{
		opts:      opts,
		log:       opts.Logger,
		netnss:    map[flow.FIBID]*netnsRef{},
		nsNetns:   map[string]flow.FIBID{},
		conns:     map[uint64]*conn{},
		byApp:     map[sessions.AppID]*conn{},
		ctPending: map[ctKey]*ctMem{},
		fifos:     map[sessions.AppID]map[flow.Handle]pairRef{},
		nextConn:  1,
	}
}

// Start opens the interface's netns, takes the control socket, starts the
// datapath and the session layer, applies the configured namespaces and
// rules, and starts serving. On error everything started is undone.
func (d *daemon) Start() (err error) {
	d.start = time.Now()
	defer func() {
		if err != nil {
			d.teardown()
		}
	}()
	if d.opts.Netns != "" {
		d.ns, err = nsbind.OpenNamed(d.opts.Netns)
	} else {
		d.ns, err = nsbind.OpenCurrent()
	}
	if err != nil {
		return fmt.Errorf("netns %q: %w", d.opts.Netns, err)
	}
	if d.opts.Iface == "" {
		return fmt.Errorf("no interface given (--iface): %w", errNoInterface)
	}
	d.iface, err = d.ns.InterfaceByName(d.opts.Iface)
	if err != nil {
		where := "the daemon's netns"
		if d.opts.Netns != "" {
			where = fmt.Sprintf("netns %q", d.opts.Netns)
		}
		return fmt.Errorf("interface %q does not exist in %s: %w", d.opts.Iface, where, errNoInterface)
	}
	// The socket first: a second daemon must stop here, before it touches
	// the first one's XDP program.
	d.ln, err = api.Listen(d.opts.Socket, api.ListenOptions{Mode: d.opts.SocketMode, Group: d.opts.SocketGroup})
	if err != nil {
		return err
	}
	view, err := nsbind.NewView(d.ns, nsbind.ViewOptions{OnError: func(err error) {
		d.log.Warn("netlink view resynchronised", "netns", d.opts.Netns, "err", err)
	}})
	if err != nil {
		return fmt.Errorf("watch netns %q: %w", d.opts.Netns, err)
	}
	if err := d.views.Add(view); err != nil {
		view.Close()
		return fmt.Errorf("watch netns %q: %w", d.opts.Netns, err)
	}
	d.netnss[d.ns.FIB()] = &netnsRef{name: d.opts.Netns, ns: d.ns, view: view, refs: 1}

	newEngine := d.opts.NewEngine
	if newEngine == nil {
		newEngine = newNoEngine
	}
	d.eng, err = newEngine(engineConfig{
		IfName: d.opts.Iface, Netns: d.ns, NetnsName: d.opts.Netns,
		Queues: d.opts.Queues, Batch: d.opts.Batch, BusyPoll: d.opts.BusyPoll, XDPMode: d.opts.XDPMode,
		Logger: d.log.With("component", "datapath"),
	})
	if err != nil {
		return fmt.Errorf("datapath on %s: %w", d.opts.Iface, err)
	}
	if n := len(d.eng.KickFDs()); n > api.MaxKickFDs {
		return fmt.Errorf("datapath on %s: %d workers, at most %d supported: use --queues", d.opts.Iface, n, api.MaxKickFDs)
	}
	fib := d.ns.FIB()
	d.layer, err = sessions.New(sessions.Config{
		View:     &d.views,
		Memory:   daemonMemory{sessions.FifoMemory{NoDump: true}},
		Datapath: d.eng.Datapath(),
		Notifier: d,
		Workers:  d.eng.Workers(),
		Default:  sessions.NamespaceConfig{IfIndex: d.iface.Index, FIB4: fib, FIB6: fib},
	})
	if err != nil {
		return fmt.Errorf("session layer: %w", err)
	}
	if err := d.applyConfig(d.opts.Namespaces, d.opts.Rules); err != nil {
		return err
	}
	if err := d.eng.Start(d.layer); err != nil {
		return fmt.Errorf("datapath on %s: start: %w", d.opts.Iface, err)
	}
	if d.opts.MetricsAddr != "" {
		if err := d.startMetrics(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.served = make(chan struct{})
	srv := &api.Server{
		Handler: d,
		Name:    "xsessiond " + version,
		Logf:    func(f string, a ...any) { d.log.Info(fmt.Sprintf(f, a...)) },
	}
	ln := d.ln
	go func() {
		defer close(d.served)
		if err := srv.Serve(ctx, ln); err != nil {
			d.log.Error("control socket stopped", "err", err)
		}
	}()
	d.log.Info("xsessiond started", "iface", d.opts.Iface, "netns", d.opts.Netns, "ifindex", d.iface.Index,
		"workers", d.eng.Workers(), "datapath", d.eng.Stats().Datapath, "socket", d.opts.Socket)
	return nil
}

// Socket returns the control socket's path.
func (d *daemon) Socket() string { return d.opts.Socket }

// Close tells every connected app and CLI that the daemon is going away,
// closes their connections (which detaches the apps), stops the datapath
// and releases everything. It is safe to call more than once.
func (d *daemon) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closing = true
		conns := make([]*conn, 0, len(d.conns))
		for _, c := range d.conns {
			conns = append(conns, c)
		}
		d.mu.Unlock()
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				defer cancel()
				_ = c.c.SendContext(ctx, 0, &api.Shutdown{Reason: "xsessiond is shutting down"})
			}()
		}
		wg.Wait()
		// Apps hang up on the notice; the rest are closed by teardown.
		for end := time.Now().Add(shutdownGrace); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			d.mu.Lock()
			n := len(d.conns)
			d.mu.Unlock()
			if n == 0 {
				break
			}
		}
		d.teardown()
		d.log.Info("xsessiond stopped")
	})
	return nil
}

// teardown undoes Start, whatever part of it ran.
func (d *daemon) teardown() {
	if d.cancel != nil {
		d.cancel()
		<-d.served // every connection is closed
	} else if d.ln != nil {
		d.ln.Close()
	}
	d.mu.Lock()
	later := d.detachLater
	d.detachLater = nil
	d.mu.Unlock()
	for _, c := range later {
		c.detach()
	}
	if d.httpd != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = d.httpd.Shutdown(ctx)
		cancel()
	}
	if d.eng != nil {
		if err := d.eng.Close(); err != nil {
			d.log.Error("datapath close", "err", err)
		}
	}
	d.mu.Lock()
	for fib, r := range d.netnss {
		d.views.Remove(fib)
		r.view.Close()
		r.ns.Close()
		delete(d.netnss, fib)
	}
	d.mu.Unlock()
	if d.ns != nil && len(d.netnss) == 0 {
		d.ns.Close() // closing twice is harmless
	}
}

// --- api.Handler ---

// Open accepts a connection: it is an app or the CLI until it attaches.
func (d *daemon) Open(c *api.Conn, hello *api.Hello) (api.ConnHandler, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return nil, fmt.Errorf("xsessiond is shutting down: %w", flow.ErrNotSupported)
	}
	h := &conn{d: d, c: c, id: d.nextConn, name: hello.Name, cred: c.Peer(), since: time.Now()}
	d.nextConn++
	d.conns[h.id] = h
	return h, nil
}

// sendNotice sends a notice to an app, bounded by NoticeTimeout; an app
// that does not take it is disconnected.
func (d *daemon) sendNotice(c *conn, m api.Message, fds ...int) {
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.NoticeTimeout)
	defer cancel()
	if err := c.c.SendContext(ctx, 0, m, fds...); err != nil {
		d.log.Warn("notice not delivered: closing the connection", "conn", c.id, "pid", c.cred.PID, "notice", m.Type().String(), "err", err)
		c.c.Close()
	}
}

// --- sessions.Notifier ---

// Notify passes to apps over their connections what their event queues
// cannot carry: the descriptors of new segments. It also records cut-through
// sessions for the connect in progress, and fifos for metrics.
func (d *daemon) Notify(ev sessions.Event) {
	switch ev.Kind {
	case sessions.EventSegmentAdded:
		d.mu.Lock()
		c := d.byApp[ev.App]
		d.mu.Unlock()
		// The segment stays open while this runs: the app's memory is
		// closed by its own connection's goroutine, or, with a datapath,
		// only after every worker drained past the detach.
		if c == nil || ev.Segment == nil {
			return
		}
		idx := uint32(0)
		if s, ok := ev.Segment.(interface{ Index() uint32 }); ok {
			idx = s.Index()
		}
		if fd := ev.Segment.FD(); fd >= 0 {
			d.sendNotice(c, &api.SegmentAdded{Segments: []api.Segment{{Index: idx, Size: uint64(ev.Segment.Size())}}}, fd)
		}
	case sessions.EventAccepted, sessions.EventConnected:
		if !ev.CutThrough {
			d.mu.Lock()
			c := d.byApp[ev.App]
			if c != nil {
				d.trackLocked(ev.App, ev.Handle, pairRef{pair: ev.Pair})
			}
			d.mu.Unlock()
			return
		}
		seg, ok := ev.Pair.Segment.(ctSegment)
		if !ok {
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.trackLocked(ev.App, ev.Handle, pairRef{ct: seg.ct, pair: ev.Pair})
		if ev.Kind == sessions.EventAccepted {
			seg.ct.accepted = ev
			return
		}
		if seg.ct.refs.tryRef() {
			seg.ct.connected = ev
			d.ctPending[ctKey{ev.App, ev.Handle}] = seg.ct
		}
	case sessions.EventDisconnected:
		d.mu.Lock()
		d.untrackLocked(ev.App, ev.Handle)
		d.mu.Unlock()
	}
}

// takeCutThrough returns the cut-through memory of app's new session h,
// with a reference the caller must release.
func (d *daemon) takeCutThrough(app sessions.AppID, h flow.Handle) *ctMem {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := ctKey{app, h}
	ct := d.ctPending[k]
	delete(d.ctPending, k)
	return ct
}

// dropPendingLocked releases the cut-through connects of app that never got
// their reply.
func (d *daemon) dropPendingLocked(app sessions.AppID) {
	for k, ct := range d.ctPending {
		if k.app == app {
			delete(d.ctPending, k)
			ct.release()
		}
	}
}

// --- metrics bookkeeping ---

// pairRef is a fifo pair the daemon knows of. A pair in an app's memory
// is read under daemon.mu (the app is forgotten under it before it is
// detached); a cut-through pair's memory is referenced while read.
type pairRef struct {
	ct   *ctMem
	pair sessions.FifoPair
}

func (d *daemon) trackLocked(app sessions.AppID, h flow.Handle, p pairRef) {
	if p.pair.Rx == nil && p.pair.Tx == nil {
		return
	}
	m := d.fifos[app]
	if m == nil {
		m = map[flow.Handle]pairRef{}
		d.fifos[app] = m
	}
	m[h] = p
}

func (d *daemon) untrackLocked(app sessions.AppID, h flow.Handle) {
	if m := d.fifos[app]; m != nil {
		delete(m, h)
		if len(m) == 0 {
			delete(d.fifos, app)
		}
	}
}

// --- HTTP ---

func (d *daemon) startMetrics() error {
	l, err := net.Listen("tcp", d.opts.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics on %s: %w", d.opts.MetricsAddr, err)
	}
	d.metricsAddr = l.Addr().String()
	d.httpd = &http.Server{Handler: d.metricsHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := d.httpd.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("metrics server stopped", "err", err)
		}
	}()
	d.log.Info("metrics listening", "addr", l.Addr().String())
	return nil
}
