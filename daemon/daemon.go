package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind"
	"github.com/xsessiond/xsessiond/sessions"
)

// DefaultSocket is where the daemon listens for apps and the CLI when
// Config.Socket is empty.
const DefaultSocket = "/run/xsessiond/api.sock"

// ErrNoInterface is what New and Start fail with when the interface to run
// on is not given or does not exist.
var ErrNoInterface = errors.New("interface not found")

// ErrNotEthernet is what Start fails with when the interface to run on
// has another link layer than Ethernet: loopback, or a layer-3 device
// (tun, WireGuard), whose frames the XDP program cannot parse.
var ErrNotEthernet = errors.New("not an Ethernet interface")

// encapName names a link layer for ErrNotEthernet's message.
func encapName(encap string) string {
	switch encap {
	case "loopback":
		return "the loopback interface"
	case "none":
		return "a layer-3 device (no link-layer header)"
	case "":
		return "of an unknown link layer"
	}
	return "of link layer " + encap
}

// shutdownGrace is how long Close waits for apps to hang up after the
// shutdown notice before it closes their connections.
const shutdownGrace = 500 * time.Millisecond

// Config configures a Daemon. The command fills it from flags and the
// config file; the demo, the tests and perf fill it directly.
type Config struct {
	// Datapath is the datapath engine's configuration, and names the
	// interface the daemon runs on: IfName (required; it also is the
	// default namespace's interface) in the named netns NetnsName (""
	// = the daemon's own). The daemon opens that netns and sets Netns
	// itself; a nil Logger is the daemon's, with component=datapath. With
	// NoDatapath only IfName and NetnsName are read.
	Datapath datapath.Config
	// NoDatapath runs the control plane alone: binds and cut-through
	// sessions work, connects to remote peers fail with flow.ErrConnect,
	// and no XDP program is attached.
	NoDatapath bool

	Socket      string // the control socket; "" = DefaultSocket
	SocketGroup string
	SocketMode  os.FileMode
	MetricsAddr string // serve Prometheus metrics at http://ADDR/metrics; "" = off

	// Namespaces and Rules are those of the config file, applied at Start
	// and replaced by Reload.
	Namespaces []NamespaceConfig
	Rules      []RuleConfig

	// Version is the daemon's version in the control protocol's Hello and
	// in show stats; "" = "dev".
	Version string
	Logger  *slog.Logger // nil: discard

	// RunDir holds the instance lock of the interface ("" =
	// DefaultRunDir). A daemon with a datapath takes it before it touches
	// the interface's XDP program, pins or queues.
	RunDir string
	// Control bounds what the control socket gives each client.
	Control ControlLimits
	// Limits bound the apps and their memory; Auth says who may do what.
	Limits Limits
	Auth   Auth
}

// ControlLimits bound what the control socket gives each client; they are
// the api.Server's limits, and a zero field is api's default.
type ControlLimits struct {
	// SendTimeout: a client that leaves a reply or notice unread this long
	// is disconnected and its app detached (api.DefaultSendTimeout, 2 s).
	SendTimeout time.Duration `yaml:"send_timeout"`
	// IdleTimeout: a connection with no app attached (nor a capture
	// started) that sends nothing this long is closed (30 s; negative:
	// never).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// HelloTimeout: a new connection must say Hello within it (5 s).
	HelloTimeout time.Duration `yaml:"hello_timeout"`
	// QueueLen and QueueBytes bound the messages queued for one client
	// (64 messages, 4 MiB; replies to its requests take three quarters at
	// most and wait for room, keeping the rest for notices); a client
	// whose queue overflows is disconnected.
	QueueLen   int `yaml:"queue_len"`
	QueueBytes int `yaml:"queue_bytes"`
	// MaxConns bounds the open connections (1024; negative: no limit),
	// RootReserve of which are kept for uid 0 (8).
	MaxConns    int `yaml:"max_conns"`
	RootReserve int `yaml:"root_reserve"`
	// MaxConnsPerUID bounds the open connections of one uid other than 0
	// (128; negative: no limit), so that one user's clients cannot take
	// all of MaxConns and keep the other users' apps from attaching.
	MaxConnsPerUID int `yaml:"max_conns_per_uid"`
	// MaxShows bounds the show requests served at once (4; negative: no
	// limit): each may hold a document of up to 16 MiB while it is built
	// and sent. A user other than root is served one at a time, and such
	// users together all but one (kept for root); a show that finds none
	// waits up to twice SendTimeout, then fails with "try again: limit
	// reached" (api.Server.MaxShows), counted in
	// xsessiond_control_shows_refused_total.
	MaxShows int `yaml:"max_shows"`
}

// check refuses a bound on the connections that leaves none to users
// other than root: root's reserve is taken out of MaxConns for them.
func (l ControlLimits) check() error {
	maxConns, reserve := l.MaxConns, l.RootReserve
	if maxConns == 0 {
		maxConns = api.DefaultMaxConns
	}
	if reserve == 0 {
		reserve = api.DefaultRootReserve
	}
	if maxConns > 0 && reserve > 0 && maxConns <= reserve {
		return fmt.Errorf("control: max_conns %d leaves no connection to users other than root: root_reserve keeps %d of them for uid 0; "+
			"give max_conns more than root_reserve, or root_reserve -1 for no reserve: %w", maxConns, reserve, flow.ErrInvalidValue)
	}
	return nil
}

// Daemon is xsessiond: the session layer, the datapath engine of one
// interface, the control socket, and the metrics endpoint. Start it, then
// Close it; it runs in-process (demo, tests, perf) as well as under run.
//
// Lock order: Daemon.mu, then the session layer's lock is never taken
// while holding mu (the layer calls Notify without its lock, and Notify
// takes mu).
type Daemon struct {
	cfg   Config
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
	// lost is closed when the interface left its namespace (iface.go);
	// lostErr, written before, says which.
	lost    chan struct{}
	lostErr error
	httpd   *http.Server
	lock    *instanceLock // the interface's, with a datapath
	srv     *api.Server
	// metricsAddr is where the metrics are served, once started.
	metricsAddr string

	closeOnce sync.Once
	// dropped counts the clients the control server dropped, by reason
	// (dropSendTimeout, …).
	dropped [numDrops]atomic.Uint64
	// limits are Config.Limits with the defaults filled in.
	limits Limits
	// secrets rate-limits wrong namespace secrets per peer uid;
	// secretFailures counts them, secretRefused the attaches refused
	// unchecked.
	secrets        *api.AttemptLimiter
	secretFailures atomic.Uint64
	secretRefused  atomic.Uint64
	capWG          sync.WaitGroup // the captures' writers (capture.go)

	statsMu sync.Mutex
	base    *EngineStats // guarded by statsMu: the counters at the last ClearStats; nil: never cleared
	clrBase *clearBase   // guarded by statsMu: the rest of what ClearStats took (show.go)
	cleared time.Time    // guarded by statsMu: when ClearStats ran

	mu        sync.Mutex
	netnss    map[flow.FIBID]*netnsRef                   // guarded by mu: open netns and their views, by FIB
	nsNetns   map[string]flow.FIBID                      // guarded by mu: namespace id -> the FIB whose view it holds a reference on
	clients   map[uint64]*client                         // guarded by mu: live control connections by client id
	byApp     map[sessions.AppID]*client                 // guarded by mu: attached apps' connections
	nextConn  uint64                                     // guarded by mu
	ctPending map[ctKey]*ctMem                           // guarded by mu: cut-through connects waiting for their reply
	fifos     map[sessions.AppID]map[flow.Handle]pairRef // guarded by mu: fifos per app, for metrics
	cfgNs     []string                                   // guarded by mu: namespace ids the config file added
	cfgRules  []uint32                                   // guarded by mu: rule ids the config file added
	cfgApply  sync.Mutex                                 // held while the config file's namespaces and rules are applied (applyConfig, applyForwardsTo)
	nsOps     sync.Mutex                                 // held across a namespace's add or delete in the layer and its nsNetns entry
	closing   bool                                       // guarded by mu
	apps      int                                        // guarded by mu: attached apps
	uids      map[uint32]uidUse                          // guarded by mu: what each uid's apps hold (not uid 0)
	nsAccess  map[string]sessions.AccessList             // guarded by mu: who may attach to each namespace
	// detachLater are the apps whose connection ended while the daemon
	// was stopping, detached together at the end. Guarded by mu.
	detachLater []*client

	// beforeNotify, when set (tests only), is called at the top of
	// Notify, with no lock held: a test widens a window a race needs.
	beforeNotify atomic.Pointer[func(sessions.Event)]
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

// New checks cfg and returns a daemon that is not started; it touches
// nothing.
func New(cfg Config) (*Daemon, error) {
	if cfg.Datapath.IfName == "" {
		return nil, fmt.Errorf("no interface given (--iface): %w", ErrNoInterface)
	}
	switch cfg.Datapath.XDPMode {
	case "":
		cfg.Datapath.XDPMode = "auto"
	case "auto", "native", "generic":
	default:
		return nil, fmt.Errorf("xdp mode %q: want auto, native or generic: %w", cfg.Datapath.XDPMode, flow.ErrInvalidValue)
	}
	if _, err := datapath.ParseChecksum(cfg.Datapath.Checksum); err != nil {
		return nil, fmt.Errorf("%w: %w", flow.ErrInvalidValue, err)
	}
	if cfg.Datapath.Queues < 0 || cfg.Datapath.Batch < 0 {
		return nil, fmt.Errorf("queues %d, batch %d: want 0 or more: %w", cfg.Datapath.Queues, cfg.Datapath.Batch, flow.ErrInvalidValue)
	}
	if err := cfg.Control.check(); err != nil {
		return nil, err
	}
	if cfg.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.MetricsAddr); err != nil {
			return nil, fmt.Errorf("metrics address %q: want host:port: %w", cfg.MetricsAddr, flow.ErrInvalidValue)
		}
	}
	if g := cfg.SocketGroup; g != "" {
		if _, err := strconv.Atoi(g); err != nil {
			if _, err := user.LookupGroup(g); err != nil {
				return nil, fmt.Errorf("socket_group %q: no such group: create it (groupadd --system %s) and add the users whose apps may attach, or leave socket_group out (the socket is then root's alone): %w",
					g, g, flow.ErrInvalidValue)
			}
		}
	}
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if err := cfg.Auth.Validate(); err != nil {
		return nil, err
	}
	lim := cfg.Limits.withDefaults()
	return &Daemon{
		cfg:       cfg,
		log:       cfg.Logger,
		lost:      make(chan struct{}),
		netnss:    map[flow.FIBID]*netnsRef{},
		nsNetns:   map[string]flow.FIBID{},
		clients:   map[uint64]*client{},
		byApp:     map[sessions.AppID]*client{},
		ctPending: map[ctKey]*ctMem{},
		fifos:     map[sessions.AppID]map[flow.Handle]pairRef{},
		nextConn:  1,
		limits:    lim,
		uids:      map[uint32]uidUse{},
		nsAccess:  map[string]sessions.AccessList{},
		secrets:   api.NewAttemptLimiter(lim.SecretFailuresPerSecond, lim.SecretFailureBurst, 4096),
	}, nil
}

// Start opens the interface's netns, takes the control socket, starts the
// datapath and the session layer, applies the configured namespaces and
// rules, and starts serving. On error everything started is undone.
func (d *Daemon) Start() (err error) {
	d.start = time.Now()
	defer func() {
		if err != nil {
			d.teardown()
		}
	}()
	if d.cfg.Datapath.NetnsName != "" {
		d.ns, err = nsbind.OpenNamed(d.cfg.Datapath.NetnsName)
	} else {
		d.ns, err = nsbind.OpenCurrent()
	}
	if err != nil {
		return fmt.Errorf("netns %q: %w", d.cfg.Datapath.NetnsName, err)
	}
	d.iface, err = d.ns.InterfaceByName(d.cfg.Datapath.IfName)
	if err != nil {
		where := "the daemon's netns"
		if d.cfg.Datapath.NetnsName != "" {
			where = fmt.Sprintf("netns %q", d.cfg.Datapath.NetnsName)
		}
		return fmt.Errorf("interface %q does not exist in %s: %w", d.cfg.Datapath.IfName, where, ErrNoInterface)
	}
	// The interface's instance lock first: a second daemon on the same
	// interface must stop here, before it touches the first one's XDP
	// program, pins or queues. The control socket is checked next.
	if !d.cfg.NoDatapath {
		d.lock, err = takeInstanceLock(LockPath(d.cfg.RunDir, d.ns.Inode(), d.iface.Index), lockPatience)
		if err != nil {
			return fmt.Errorf("interface %s: %w", d.cfg.Datapath.IfName, err)
		}
	}
	d.ln, err = api.Listen(d.cfg.Socket, api.ListenOptions{Mode: d.cfg.SocketMode, Group: d.cfg.SocketGroup})
	if err != nil {
		return err
	}
	if !d.cfg.NoDatapath && d.iface.Encap != "ether" {
		return fmt.Errorf("interface %s is %s, not Ethernet: xsessiond serves an Ethernet interface (a NIC, a veth); "+
			"apps of one host reach each other cut-through, with no interface: %w", d.iface.Name, encapName(d.iface.Encap), ErrNotEthernet)
	}
	view, err := nsbind.NewView(d.ns, nsbind.ViewOptions{OnError: func(err error) {
		d.log.Warn("netlink view resynchronised", "netns", d.cfg.Datapath.NetnsName, "err", err)
	}})
	if err != nil {
		return fmt.Errorf("watch netns %q: %w", d.cfg.Datapath.NetnsName, err)
	}
	if err := d.views.Add(view); err != nil {
		view.Close()
		return fmt.Errorf("watch netns %q: %w", d.cfg.Datapath.NetnsName, err)
	}
	d.netnss[d.ns.FIB()] = &netnsRef{name: d.cfg.Datapath.NetnsName, ns: d.ns, view: view, refs: 1}

	if d.cfg.NoDatapath {
		d.eng = noEngine{}
	} else {
		d.watchInterface(view)
		dc := d.cfg.Datapath
		dc.Netns = d.ns
		if dc.Addrs == nil {
			dc.Addrs = view // frames leave only with a source of the interface
		}
		if dc.Logger == nil {
			dc.Logger = d.log.With("component", "datapath")
		}
		d.eng, err = newDatapathEngine(dc)
	}
	if err != nil {
		return fmt.Errorf("datapath on %s: %w", d.cfg.Datapath.IfName, err)
	}
	if n := len(d.eng.KickFDs()); n > api.MaxKickFDs {
		return fmt.Errorf("datapath on %s: %d workers, at most %d supported: use --queues", d.cfg.Datapath.IfName, n, api.MaxKickFDs)
	}
	fib := d.ns.FIB()
	d.layer, err = sessions.New(sessions.Config{
		View:     &d.views,
		Memory:   daemonMemory{sessions.FifoMemory{NoDump: true}},
		Datapath: d.eng.Datapath(),
		Notifier: d,
		Workers:  d.eng.Workers(),
		Default:  sessions.NamespaceConfig{IfIndex: d.iface.Index, FIB4: fib, FIB6: fib},
		// Each cut-through session is a segment: a descriptor and a
		// mapping in the daemon and in both apps.
		MaxCutThrough: d.limits.MaxCutThrough, MaxCutThroughPerApp: d.limits.MaxCutThroughPerApp,
		MaxPortsPerOwner: d.limits.MaxPortsPerUID,
	})
	if err != nil {
		return fmt.Errorf("session layer: %w", err)
	}
	d.cfgApply.Lock()
	err = d.applyConfig(d.cfg.Namespaces, d.cfg.Rules)
	d.cfgApply.Unlock()
	if err != nil {
		return err
	}
	if err := d.eng.Start(d.layer); err != nil {
		return fmt.Errorf("datapath on %s: start: %w", d.cfg.Datapath.IfName, err)
	}
	if d.cfg.MetricsAddr != "" {
		if err := d.startMetrics(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.served = make(chan struct{})
	lim := d.cfg.Control
	srv := &api.Server{
		Handler:      d,
		Name:         "xsessiond " + d.cfg.Version,
		Logf:         func(f string, a ...any) { d.log.Info(fmt.Sprintf(f, a...)) },
		SendTimeout:  lim.SendTimeout,
		IdleTimeout:  lim.IdleTimeout,
		HelloTimeout: lim.HelloTimeout,
		QueueLen:     lim.QueueLen,
		QueueBytes:   lim.QueueBytes,
		MaxConns:     lim.MaxConns,
		RootReserve:  lim.RootReserve,
		// One user's clients cannot keep the other users' apps out.
		MaxConnsPerUID: lim.MaxConnsPerUID,
		MaxShows:       lim.MaxShows,
	}
	d.srv = srv
	ln := d.ln
	go func() {
		defer close(d.served)
		if err := srv.Serve(ctx, ln); err != nil {
			d.log.Error("control socket stopped", "err", err)
		}
	}()
	d.log.Info("xsessiond started", "iface", d.cfg.Datapath.IfName, "netns", d.cfg.Datapath.NetnsName, "ifindex", d.iface.Index,
		"workers", d.eng.Workers(), "datapath", d.eng.Stats().Datapath, "socket", d.cfg.Socket)
	return nil
}

// Socket returns the control socket's path.
func (d *Daemon) Socket() string { return d.cfg.Socket }

// MetricsAddr returns the address the metrics are served at once started
// (the port chosen when Config.MetricsAddr asked for port 0), or "".
func (d *Daemon) MetricsAddr() string { return d.metricsAddr }

// Layer returns the session layer, once started: its views (Apps,
// Sessions, Listeners, Namespaces, Rules) are what ctl show lists.
func (d *Daemon) Layer() *sessions.Layer { return d.layer }

// Engine returns the datapath engine once started, or nil with
// Config.NoDatapath.
func (d *Daemon) Engine() *datapath.Engine {
	if e, ok := d.eng.(dpEngine); ok {
		return e.Engine
	}
	return nil
}

// Workers returns the number of datapath workers (1 without a datapath),
// once started.
func (d *Daemon) Workers() int { return d.eng.Workers() }

// EngineStats returns the datapath's counters, once started.
func (d *Daemon) EngineStats() EngineStats { return d.eng.Stats() }

// Close tells every connected app and CLI that the daemon is going away,
// closes their connections (which detaches the apps), stops the datapath
// and releases everything. It is safe to call more than once.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() {
		// The interface goes back to the kernel before the daemon waits
		// for anything.
		if d.eng != nil {
			if err := d.eng.DetachXDP(); err != nil {
				d.log.Error("xdp detach", "err", err)
			}
		}
		d.mu.Lock()
		d.closing = true
		clients := make([]*client, 0, len(d.clients))
		for _, c := range d.clients {
			clients = append(clients, c)
		}
		d.mu.Unlock()
		// Sends on served connections only queue: none of these waits
		// for a client.
		for _, c := range clients {
			_ = c.c.Send(&api.Shutdown{Reason: "xsessiond is shutting down"})
		}
		// Apps hang up on the notice; the rest are closed by teardown.
		for end := time.Now().Add(shutdownGrace); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			d.mu.Lock()
			n := len(d.clients)
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
func (d *Daemon) teardown() {
	if d.cancel != nil {
		d.cancel()
		<-d.served // every connection is closed
		d.capWG.Wait()
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
	d.lock.release() // the interface is given back
	d.lock = nil
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
func (d *Daemon) Open(c *api.Conn, hello *api.Hello) (api.ConnHandler, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return nil, fmt.Errorf("xsessiond is shutting down: %w", flow.ErrNotSupported)
	}
	h := &client{d: d, c: c, id: d.nextConn, name: hello.Name, minor: hello.Minor, cred: c.Peer(), since: time.Now()}
	d.nextConn++
	d.clients[h.id] = h
	return h, nil
}

// sendNotice queues a notice for an app. A send never waits for the
// app: one that does not read is dropped by the control server (its
// queue overflows or a record waits past SendTimeout), and the
// connection's Close detaches it.
func (d *Daemon) sendNotice(c *client, m api.Message, fds ...int) {
	if err := c.c.Send(m, fds...); err != nil {
		d.log.Debug("notice not queued", "conn", c.id, "pid", c.cred.PID, "notice", m.Type().String(), "err", err)
	}
}

// --- sessions.Notifier ---

// Notify passes to apps over their connections what their event queues
// cannot carry: the descriptors of new segments. It also records cut-through
// sessions for the connect in progress, and fifos for metrics.
func (d *Daemon) Notify(ev sessions.Event) {
	if f := d.beforeNotify.Load(); f != nil {
		(*f)(ev)
	}
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
		// The session is recorded only while its app is attached and its
		// memory lives: the layer may have closed it since it made it (the
		// listening app detached meanwhile, its books emptied already),
		// and the event that ends it may have come through here before
		// this one. Whatever ends it later comes after this.
		if !seg.ct.refs.tryRef() {
			return
		}
		if d.byApp[ev.App] != nil {
			d.trackLocked(ev.App, ev.Handle, pairRef{ct: seg.ct, pair: ev.Pair})
		}
		if ev.Kind == sessions.EventAccepted {
			seg.ct.accepted = ev
			seg.ct.release()
			return
		}
		// The connect in progress takes over the reference.
		seg.ct.connected = ev
		d.ctPending[ctKey{ev.App, ev.Handle}] = seg.ct
	case sessions.EventDisconnected:
		d.mu.Lock()
		d.untrackLocked(ev.App, ev.Handle)
		d.mu.Unlock()
	case sessions.EventReset:
		// A wire session's reset keeps its fifos until the app's
		// Disconnect, which takes them out; a cut-through session is gone
		// for both ends, and its app sends none.
		if ev.CutThrough {
			d.mu.Lock()
			d.untrackLocked(ev.App, ev.Handle)
			d.mu.Unlock()
		}
	}
}

// takeCutThrough returns the cut-through memory of app's new session h,
// with a reference the caller must release.
func (d *Daemon) takeCutThrough(app sessions.AppID, h flow.Handle) *ctMem {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := ctKey{app, h}
	ct := d.ctPending[k]
	delete(d.ctPending, k)
	return ct
}

// dropPendingLocked releases the cut-through connects of app that never got
// their reply.
func (d *Daemon) dropPendingLocked(app sessions.AppID) {
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

func (d *Daemon) trackLocked(app sessions.AppID, h flow.Handle, p pairRef) {
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

func (d *Daemon) untrackLocked(app sessions.AppID, h flow.Handle) {
	if m := d.fifos[app]; m != nil {
		delete(m, h)
		if len(m) == 0 {
			delete(d.fifos, app)
		}
	}
}

// --- HTTP ---

func (d *Daemon) startMetrics() error {
	l, err := net.Listen("tcp", d.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics on %s: %w", d.cfg.MetricsAddr, err)
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
