package sessions

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/xsessiond/xsessiond/flow"
)

// AppID names an attached app. IDs are not reused while the Layer lives.
type AppID uint32

// Pseudo-workers in handles of entries no datapath worker owns.
const (
	ListenerWorker   = flow.ListenerWorker
	CutThroughWorker = flow.CutThroughWorker
	HalfOpenWorker   = flow.HalfOpenWorker
)

// Defaults of attach options left zero.
const (
	DefaultFifoSize       = 64 << 10
	DefaultSegmentSize    = 4 << 20
	DefaultEventQueueSize = 1024
	MinFifoSize           = 64
	MaxFifoSize           = 1 << 30
)

// fifoSize rounds n up to a power of two, at least MinFifoSize.
func fifoSize(n uint32) uint32 {
	s := uint32(MinFifoSize)
	for s < n {
		s <<= 1
	}
	return s
}

// Config configures a Layer.
type Config struct {
	View     NetView  // required
	Memory   Memory   // required: FifoMemory{} in the daemon
	Datapath Datapath // opens sessions to remote peers; nil: such connects fail with ErrConnect
	Notifier Notifier // optional observer of app events
	Workers  int      // datapath workers, one shard each; 0 means 1
	// Default is the default namespace's configuration (its ID is "",
	// its secret is not checked).
	Default NamespaceConfig
}

// NamespaceConfig describes an app namespace.
type NamespaceConfig struct {
	ID      string `json:"id"`
	Secret  uint64 `json:"-"`
	IfIndex int    `json:"ifindex"` // the namespace's interface in its Linux netns; 0: none
	FIB4    FIBID  `json:"fib4"`
	FIB6    FIBID  `json:"fib6"`
}

func (c NamespaceConfig) fib(fam uint8) FIBID {
	if fam == Family6 {
		return c.FIB6
	}
	return c.FIB4
}

type namespace struct {
	cfg   NamespaceConfig
	apps  int
	local map[listenKey]*Listener // the local table: zero-address listeners only
}

// AttachOptions are an app's attach request.
type AttachOptions struct {
	ClientID  uint64 // the app's control connection; one attach per client
	Name      string
	Namespace string // "" is the default namespace
	Secret    uint64
	Scope     Scope // 0 means ScopeGlobal

	RxFifoSize, TxFifoSize uint32 // per session; 0: DefaultFifoSize; rounded up to a power of two, at least MinFifoSize
	SegmentSize            uint64 // first segment; 0: DefaultSegmentSize
	AddSegmentSize         uint64 // later segments; 0: SegmentSize
	MaxSegments            int
	MaxFifoMemory          uint64
	EventQueueSize         int // 0: DefaultEventQueueSize

	// Proxy makes the app listen on every port of its namespace for each
	// of ProxyTransports (tcp and/or udp).
	Proxy           bool
	ProxyTransports []Transport
}

// Attached is the result of Attach.
type Attached struct {
	App    AppID
	Memory AppMemory // segments and event queue, for the daemon to pass to the app
}

type app struct {
	id        AppID
	detaching bool // delAppLocked is running: the whole memory goes at once
	opts      AttachOptions
	ns        *namespace
	mem       AppMemory
	global    map[Handle]*Listener    // the app's global listeners
	local     map[listenKey]*Listener // the app's entries of its namespace's local table
	sess      map[Handle]*session
}

func (a *app) hasLocal() bool  { return a.opts.Scope&ScopeLocal != 0 }
func (a *app) hasGlobal() bool { return a.opts.Scope&ScopeGlobal != 0 }

type sessKind uint8

const (
	kindEstablished sessKind = iota + 1
	kindHalfOpen
	kindCutThrough
)

type session struct {
	h        Handle
	app      *app
	kind     sessKind
	tuple    FiveTuple
	fib      FIBID
	ifindex  int
	listener Handle
	opaque   uint32
	pair     FifoPair
	ct       CutThrough // cut-through: shared with peer
	peer     *session   // cut-through: the other end
}

type indexPool struct {
	free []uint32
	next uint32
}

func (p *indexPool) get() uint32 {
	if n := len(p.free); n > 0 {
		i := p.free[n-1]
		p.free = p.free[:n-1]
		return i
	}
	p.next++
	return p.next - 1
}

func (p *indexPool) put(i uint32) { p.free = append(p.free, i) }

// Layer is the session layer: namespaces, apps, tables, rules and the
// change feed.
//
// All methods are safe for concurrent use. Control-plane methods serialize
// on one lock (mu). Listener tables and rules are published as immutable
// snapshots that the datapath reads without locks (LookupListener,
// MatchRule); established sessions are handed to their worker's shard
// (Shard) through its mailbox.
// Lock order: Layer.mu, then Shard.mu.
type Layer struct {
	cfg    Config
	shards []*Shard

	listeners atomic.Pointer[listenerSnap] // global listener tables, by FIB
	rules     atomic.Pointer[ruleSnap]

	wdp       WorkerDatapath // cfg.Datapath when it is one: fifo memory is freed after the shards drain
	reclaimMu sync.Mutex     // serializes deferred frees, so they run in the order they were posted

	mu       sync.Mutex // guards everything below
	nss      map[string]*namespace
	apps     map[AppID]*app
	byClient map[uint64]*app
	nextApp  AppID
	sess     map[Handle]*session
	halfOpen map[hoKey]Handle     // half-open sessions by FIB and tuple, to refuse a second connect of one tuple
	glisten  map[Handle]*Listener // global listeners by handle
	pools    map[uint32]*indexPool
	ruleList []RuleInfo
	nextRule uint32
	seq      uint64
	feeds    map[*Feed]struct{}
	pending  []Event // events for the Notifier, delivered after unlock
}

type hoKey struct {
	fib FIBID
	t   FiveTuple
}

// New returns a Layer with the default namespace made from cfg.Default.
func New(cfg Config) (*Layer, error) {
	if cfg.View == nil {
		return nil, fmt.Errorf("sessions: Config.View is nil: %w", ErrInvalidValue)
	}
	if cfg.Memory == nil {
		return nil, fmt.Errorf("sessions: Config.Memory is nil: %w", ErrInvalidValue)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.Workers >= int(ListenerWorker) {
		return nil, fmt.Errorf("sessions: %d workers: %w", cfg.Workers, ErrInvalidValue)
	}
	cfg.Default.ID = ""
	l := &Layer{
		cfg:      cfg,
		halfOpen: map[hoKey]Handle{},
		nss:      map[string]*namespace{"": {cfg: cfg.Default, local: map[listenKey]*Listener{}}},
		apps:     map[AppID]*app{},
		byClient: map[uint64]*app{},
		nextApp:  1,
		sess:     map[Handle]*session{},
		glisten:  map[Handle]*Listener{},
		pools:    map[uint32]*indexPool{},
		nextRule: 1,
		feeds:    map[*Feed]struct{}{},
	}
	for w := range cfg.Workers {
		l.shards = append(l.shards, NewShard(uint32(w)))
	}
	l.wdp, _ = cfg.Datapath.(WorkerDatapath)
	return l, nil
}

// Shard returns worker w's shard, or nil.
func (l *Layer) Shard(w uint32) *Shard {
	if int(w) >= len(l.shards) {
		return nil
	}
	return l.shards[w]
}

// Workers returns the number of shards.
func (l *Layer) Workers() int { return len(l.shards) }

func (l *Layer) lock() { l.mu.Lock() }

// unlock releases mu and then hands the events queued meanwhile to the
// Notifier.
func (l *Layer) unlock() {
	evs := l.pending
	l.pending = nil
	l.mu.Unlock()
	if l.cfg.Notifier != nil {
		for _, ev := range evs {
			l.cfg.Notifier.Notify(ev)
		}
	}
}

// notifyLocked queues ev in the app's event queue and for the Notifier.
func (l *Layer) notifyLocked(a *app, ev Event) {
	ev.App = a.id
	_ = a.mem.Notify(ev) // a full queue loses the event for the app; the Notifier still sees it
	l.pending = append(l.pending, ev)
}

func (l *Layer) pool(w uint32) *indexPool {
	p := l.pools[w]
	if p == nil {
		p = &indexPool{}
		l.pools[w] = p
	}
	return p
}

func (l *Layer) newHandleLocked(w uint32) Handle { return MakeHandle(w, l.pool(w).get()) }

func (l *Layer) freeHandleLocked(h Handle) { l.pool(h.Worker()).put(h.Index()) }

// --- namespaces ---

// AddNamespace adds an app namespace. The default namespace ("") always
// exists; see SetDefaultNamespace.
func (l *Layer) AddNamespace(c NamespaceConfig) error {
	l.lock()
	defer l.unlock()
	if _, ok := l.nss[c.ID]; ok {
		return fmt.Errorf("namespace %q: %w", c.ID, ErrNamespaceExists)
	}
	l.nss[c.ID] = &namespace{cfg: c, local: map[listenKey]*Listener{}}
	return nil
}

// DelNamespace removes an app namespace with no apps attached, and its
// rules.
func (l *Layer) DelNamespace(id string) error {
	l.lock()
	defer l.unlock()
	ns, ok := l.nss[id]
	if !ok || id == "" {
		if id == "" {
			return fmt.Errorf("the default namespace cannot be deleted: %w", ErrInvalidValue)
		}
		return fmt.Errorf("namespace %q: %w", id, ErrInvalidNamespace)
	}
	if ns.apps > 0 {
		return fmt.Errorf("namespace %q: %d apps: %w", id, ns.apps, ErrNamespaceInUse)
	}
	delete(l.nss, id)
	l.ruleList = slices.DeleteFunc(l.ruleList, func(r RuleInfo) bool { return r.Namespace == id })
	l.publishRulesLocked()
	return nil
}

// SetDefaultNamespace sets the default namespace's interface and FIBs. It
// fails with ErrNamespaceInUse while apps are attached to it.
func (l *Layer) SetDefaultNamespace(c NamespaceConfig) error {
	l.lock()
	defer l.unlock()
	ns := l.nss[""]
	if ns.apps > 0 {
		return fmt.Errorf("default namespace: %d apps: %w", ns.apps, ErrNamespaceInUse)
	}
	c.ID = ""
	ns.cfg = c
	l.publishRulesLocked() // global rule tables follow the namespace's FIBs
	return nil
}

// validateNamespace finds the namespace an app attaches to (seed:
// session_validate_namespace): "" is the default one and needs no secret;
// any other must exist and its secret must match.
func (l *Layer) validateNamespaceLocked(id string, secret uint64) (*namespace, error) {
	ns, ok := l.nss[id]
	if id == "" {
		return ns, nil
	}
	if !ok {
		return nil, fmt.Errorf("namespace %q: %w", id, ErrInvalidNamespace)
	}
	var a, b [8]byte
	binary.BigEndian.PutUint64(a[:], ns.cfg.Secret)
	binary.BigEndian.PutUint64(b[:], secret)
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		return nil, fmt.Errorf("namespace %q: %w", id, ErrWrongSecret)
	}
	return ns, nil
}

// --- attach / detach ---

func (o *AttachOptions) normalize() error {
	if o.Scope == 0 {
		o.Scope = ScopeGlobal
	}
	if o.Scope&^(ScopeGlobal|ScopeLocal) != 0 {
		return fmt.Errorf("scope %#x: %w", uint8(o.Scope), ErrInvalidValue)
	}
	if o.RxFifoSize == 0 {
		o.RxFifoSize = DefaultFifoSize
	}
	if o.TxFifoSize == 0 {
		o.TxFifoSize = DefaultFifoSize
	}
	if o.RxFifoSize > MaxFifoSize || o.TxFifoSize > MaxFifoSize {
		return fmt.Errorf("fifo size %d/%d over %d: %w", o.RxFifoSize, o.TxFifoSize, MaxFifoSize, ErrInvalidValue)
	}
	o.RxFifoSize, o.TxFifoSize = fifoSize(o.RxFifoSize), fifoSize(o.TxFifoSize)
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.AddSegmentSize == 0 {
		o.AddSegmentSize = o.SegmentSize
	}
	if o.EventQueueSize <= 0 {
		o.EventQueueSize = DefaultEventQueueSize
	}
	if o.MaxSegments < 0 {
		return fmt.Errorf("max segments %d: %w", o.MaxSegments, ErrInvalidValue)
	}
	if o.Proxy {
		if len(o.ProxyTransports) == 0 {
			return fmt.Errorf("proxy app with no transports: %w", ErrInvalidValue)
		}
		for _, t := range o.ProxyTransports {
			if err := validEndpoint(Endpoint{Transport: t}); err != nil {
				return fmt.Errorf("proxy: %w", err)
			}
		}
		o.ProxyTransports = slices.Clone(o.ProxyTransports)
		slices.Sort(o.ProxyTransports)
		o.ProxyTransports = slices.Compact(o.ProxyTransports)
	} else {
		o.ProxyTransports = nil
	}
	return nil
}

// Attach attaches an app (seed: vnet_application_attach): one attach per
// client, the namespace validated, a segment manager and an event queue
// made for the app, and, for a proxy app, its every-port listeners added.
func (l *Layer) Attach(o AttachOptions) (Attached, error) {
	l.lock()
	defer l.unlock()
	if _, ok := l.byClient[o.ClientID]; ok {
		return Attached{}, fmt.Errorf("attach: client %d: %w", o.ClientID, ErrAlreadyAttached)
	}
	ns, err := l.validateNamespaceLocked(o.Namespace, o.Secret)
	if err != nil {
		return Attached{}, fmt.Errorf("attach: %w", err)
	}
	if err := o.normalize(); err != nil {
		return Attached{}, fmt.Errorf("attach: %w", err)
	}
	o.Secret = 0
	name := o.Name
	if name == "" {
		name = fmt.Sprintf("app%d", l.nextApp)
	}
	mem, err := l.cfg.Memory.NewApp(AppMemoryOptions{
		Name:           name,
		SegmentSize:    o.SegmentSize,
		AddSegmentSize: o.AddSegmentSize,
		MaxSegments:    o.MaxSegments,
		MaxFifoMemory:  o.MaxFifoMemory,
		EventQueueSize: o.EventQueueSize,
	})
	if err != nil {
		if errors.Is(err, ErrNoMemory) {
			return Attached{}, fmt.Errorf("attach: %w", err)
		}
		return Attached{}, fmt.Errorf("attach: app memory: %w: %w", ErrNoMemory, err)
	}
	a := &app{
		id:     l.nextApp,
		opts:   o,
		ns:     ns,
		mem:    mem,
		global: map[Handle]*Listener{},
		local:  map[listenKey]*Listener{},
		sess:   map[Handle]*session{},
	}
	l.nextApp++
	l.apps[a.id] = a
	l.byClient[o.ClientID] = a
	ns.apps++
	if o.Proxy {
		if err := l.setupProxyLocked(a); err != nil {
			l.delAppLocked(a)
			return Attached{}, fmt.Errorf("attach: proxy: %w", err)
		}
	}
	return Attached{App: a.id, Memory: mem}, nil
}

// setupProxyLocked adds a proxy app's every-port listeners, for each of its
// transports and both families, to the tables of its scope.
func (l *Layer) setupProxyLocked(a *app) error {
	for _, t := range a.opts.ProxyTransports {
		for _, zero := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
			ep := a.endpointFor(Endpoint{Transport: t, Addr: zero})
			k := keyOf(ep)
			if a.hasLocal() {
				if other := a.ns.local[k]; other != nil {
					return fmt.Errorf("%s every port: local table: %w", ep.URI(), ErrAddressInUse)
				}
				ln := &Listener{Handle: LocalListenerHandle(t, ep.Family(), 0), App: a.id, Endpoint: ep, Local: true, Proxy: true}
				a.ns.local[k] = ln
				a.local[k] = ln
			}
			if a.hasGlobal() {
				if l.listeners.Load().set(ep.FIB).get(k) != nil {
					return fmt.Errorf("%s every port: %w", ep.URI(), ErrAddressInUse)
				}
				if _, err := l.startListenLocked(a, ep, true); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Detach detaches an app (seed: vnet_application_detach) and frees
// everything it held: its listeners in both tables, its sessions (peers of
// its cut-through sessions are told), the rules forwarding to it, and its
// memory.
func (l *Layer) Detach(id AppID) error {
	l.lock()
	defer l.unlock()
	a := l.apps[id]
	if a == nil {
		return fmt.Errorf("detach: app %d: %w", id, ErrNotAttached)
	}
	l.delAppLocked(a)
	return nil
}

// DetachClient detaches the app attached by control connection client, if
// any, and reports whether there was one.
func (l *Layer) DetachClient(client uint64) bool {
	l.lock()
	defer l.unlock()
	a := l.byClient[client]
	if a == nil {
		return false
	}
	l.delAppLocked(a)
	return true
}

// AppOf returns the app attached by control connection client.
func (l *Layer) AppOf(client uint64) (AppID, bool) {
	l.lock()
	defer l.unlock()
	a := l.byClient[client]
	if a == nil {
		return 0, false
	}
	return a.id, true
}

func (l *Layer) delAppLocked(a *app) {
	a.detaching = l.wdp != nil
	for _, s := range a.sess {
		l.closeSessionLocked(s, true)
	}
	for _, ln := range a.global {
		l.stopListenLocked(a, ln)
	}
	for k := range a.local {
		delete(a.ns.local, k)
		delete(a.local, k)
	}
	n := len(l.ruleList)
	l.ruleList = slices.DeleteFunc(l.ruleList, func(r RuleInfo) bool { return r.Action == RuleForward && r.App == a.id })
	if len(l.ruleList) != n {
		l.publishRulesLocked()
	}
	mem := a.mem
	l.reclaimLocked(func() { _ = mem.Close() })
	a.ns.apps--
	delete(l.apps, a.id)
	delete(l.byClient, a.opts.ClientID)
}

func (l *Layer) appLocked(id AppID) (*app, error) {
	a := l.apps[id]
	if a == nil {
		return nil, fmt.Errorf("app %d: %w", id, ErrNotAttached)
	}
	return a, nil
}

// endpointFor fills e's interface and FIB from the app's namespace (seed:
// session_endpoint_update_for_app) and normalizes its address.
func (a *app) endpointFor(e Endpoint) Endpoint {
	fam := e.Family()
	e = e.Normalized(fam)
	e.IfIndex = a.ns.cfg.IfIndex
	e.FIB = a.ns.cfg.fib(fam)
	return e
}

// --- bind / unbind ---

// Bind makes app listen on e (seed: vnet_bind_i). The endpoint must belong
// to the app's namespace (ErrNotInNamespace) and be free in the FIB's global
// table (ErrAddressInUse). An app with local scope binding the zero address
// also gets an entry in its namespace's local table, which must be free too;
// an app with local scope only can bind nothing else (ErrScope) and gets the
// local handle back. An app with global scope gets the global listener's
// handle; when the global listen fails, the local entry is removed again.
func (l *Layer) Bind(id AppID, e Endpoint) (Handle, error) {
	l.lock()
	defer l.unlock()
	a, err := l.appLocked(id)
	if err != nil {
		return InvalidHandle, fmt.Errorf("bind: %w", err)
	}
	if err := validEndpoint(e); err != nil {
		return InvalidHandle, fmt.Errorf("bind: %w", err)
	}
	e = a.endpointFor(e)
	if !EndpointInNamespace(l.cfg.View, e) {
		return InvalidHandle, fmt.Errorf("bind %s: %w", e.URI(), ErrNotInNamespace)
	}
	k := keyOf(e)
	if l.listeners.Load().set(e.FIB).get(k) != nil {
		return InvalidHandle, fmt.Errorf("bind %s: %w", e.URI(), ErrAddressInUse)
	}
	h := InvalidHandle
	haveLocal := false
	if a.hasLocal() && e.IsZero() {
		if a.ns.local[k] != nil {
			return InvalidHandle, fmt.Errorf("bind %s: local table: %w", e.URI(), ErrAddressInUse)
		}
		h = LocalListenerHandle(e.Transport, e.Family(), e.Port)
		ln := &Listener{Handle: h, App: a.id, Endpoint: e, Local: true}
		a.ns.local[k] = ln
		a.local[k] = ln
		haveLocal = true
	}
	if !a.hasGlobal() {
		if !haveLocal {
			return InvalidHandle, fmt.Errorf("bind %s: an app with local scope only can bind the zero address only: %w", e.URI(), ErrScope)
		}
		return h, nil
	}
	gh, err := l.startListenLocked(a, e, false)
	if err != nil {
		if haveLocal {
			delete(a.ns.local, k)
			delete(a.local, k)
		}
		return InvalidHandle, fmt.Errorf("bind %s: %w", e.URI(), err)
	}
	return gh, nil
}

// BindURI parses uri and binds it.
func (l *Layer) BindURI(id AppID, uri string) (Handle, error) {
	e, err := ParseURI(uri)
	if err != nil {
		return InvalidHandle, fmt.Errorf("bind: %w", err)
	}
	return l.Bind(id, e)
}

// startListenLocked adds a global listener, tells the datapath and the
// feed.
func (l *Layer) startListenLocked(a *app, e Endpoint, proxy bool) (Handle, error) {
	h := l.newHandleLocked(ListenerWorker)
	ln := &Listener{Handle: h, App: a.id, Endpoint: e, Proxy: proxy}
	ln.Worker = h.Index() % uint32(len(l.shards))
	if l.wdp != nil {
		ln.Worker = l.wdp.ListenerWorker(*ln)
		if int(ln.Worker) >= len(l.shards) {
			l.freeHandleLocked(h)
			return InvalidHandle, fmt.Errorf("listen: datapath chose worker %d of %d: %w", ln.Worker, len(l.shards), ErrInvalidValue)
		}
	}
	if e.Transport == TransportUDP {
		pair, added, err := a.mem.AllocPair(a.opts.RxFifoSize, a.opts.TxFifoSize)
		if err != nil {
			l.freeHandleLocked(h)
			if errors.Is(err, ErrNoMemory) {
				return InvalidHandle, fmt.Errorf("listen: %w", err)
			}
			return InvalidHandle, fmt.Errorf("listen: %w: %w", ErrNoMemory, err)
		}
		if added != nil {
			l.notifyLocked(a, Event{Kind: EventSegmentAdded, Segment: added})
		}
		ln.Pair, ln.Memory = pair, a.mem
	}
	if l.cfg.Datapath != nil {
		if err := l.cfg.Datapath.Listen(*ln); err != nil {
			l.freeHandleLocked(h)
			if ln.Memory != nil {
				a.mem.FreePair(ln.Pair)
			}
			return InvalidHandle, fmt.Errorf("listen: %w", err)
		}
	}
	k := keyOf(e)
	l.listeners.Store(l.listeners.Load().with(e.FIB, k, ln, true))
	l.glisten[h] = ln
	a.global[h] = ln
	l.publishLocked(Change{Op: OpAdd, Kind: KindListener, IfIndex: e.IfIndex, FIB: e.FIB, Tuple: listenTuple(e), Handle: h})
	return h, nil
}

func (l *Layer) stopListenLocked(a *app, ln *Listener) {
	e := ln.Endpoint
	l.listeners.Store(l.listeners.Load().with(e.FIB, keyOf(e), nil, false))
	delete(l.glisten, ln.Handle)
	delete(a.global, ln.Handle)
	l.freeHandleLocked(ln.Handle)
	if l.cfg.Datapath != nil {
		l.cfg.Datapath.Unlisten(*ln)
	}
	if ln.Memory != nil && !a.detaching {
		mem, pair := ln.Memory, ln.Pair
		l.reclaimLocked(func() { mem.FreePair(pair) })
	}
	l.publishLocked(Change{Op: OpDel, Kind: KindListener, IfIndex: e.IfIndex, FIB: e.FIB, Tuple: listenTuple(e), Handle: ln.Handle})
}

// reclaimLocked frees fifo memory with fn. With a WorkerDatapath it runs fn
// only after every shard drained its mailbox past this point, on the
// goroutine of the shard that drains last; deferred frees run one at a
// time, in the order they were posted. Otherwise it runs fn now.
func (l *Layer) reclaimLocked(fn func()) {
	if l.wdp == nil {
		fn()
		return
	}
	left := len(l.shards)
	for _, sh := range l.shards {
		sh.Post(func(*Shard) {
			l.reclaimMu.Lock()
			defer l.reclaimMu.Unlock()
			left--
			if left == 0 {
				fn()
			}
		})
	}
}

// ListenerPair returns the datagram fifo pair of app's global UDP listener
// h and the worker that owns it (drains its Tx fifo; its kick eventfd is
// the one to write). ErrAddressNotInUse when h names no global listener,
// ErrNotOwner when it is another app's, ErrNotSupported when the listener
// has no pair (not UDP).
func (l *Layer) ListenerPair(id AppID, h Handle) (FifoPair, uint32, error) {
	l.lock()
	defer l.unlock()
	if _, err := l.appLocked(id); err != nil {
		return FifoPair{}, 0, fmt.Errorf("listener pair: %w", err)
	}
	ln := l.glisten[h]
	if ln == nil {
		return FifoPair{}, 0, fmt.Errorf("listener pair: handle %#x: %w", uint64(h), ErrAddressNotInUse)
	}
	if ln.App != id {
		return FifoPair{}, 0, fmt.Errorf("listener pair: handle %#x: %w", uint64(h), ErrNotOwner)
	}
	if ln.Memory == nil {
		return FifoPair{}, 0, fmt.Errorf("listener pair: %s has no datagram fifos: %w", ln.Endpoint.URI(), ErrNotSupported)
	}
	return ln.Pair, ln.Worker, nil
}

// Unbind stops a listener of app (seed: vnet_unbind_i). With local scope,
// the local-table entry is found from the global listener the handle names
// or, for a local handle, from the endpoint the handle encodes; with global
// scope, the global listener is removed. A handle naming no listener fails
// with ErrAddressNotInUse, another app's listener with ErrNotOwner; nothing
// is removed then.
func (l *Layer) Unbind(id AppID, h Handle) error {
	l.lock()
	defer l.unlock()
	a, err := l.appLocked(id)
	if err != nil {
		return fmt.Errorf("unbind: %w", err)
	}
	var (
		localKey  listenKey
		haveLocal bool
		gl        *Listener
	)
	if !h.IsLocal() {
		gl = l.glisten[h]
		if gl == nil {
			return fmt.Errorf("unbind: handle %#x: %w", uint64(h), ErrAddressNotInUse)
		}
		if gl.App != a.id {
			return fmt.Errorf("unbind: handle %#x: %w", uint64(h), ErrNotOwner)
		}
		if gl.Proxy {
			return fmt.Errorf("unbind: handle %#x is a proxy's every-port listener (detach instead): %w", uint64(h), ErrInvalidValue)
		}
	}
	if a.hasLocal() {
		var sep Endpoint
		if gl != nil {
			sep = gl.Endpoint
		} else {
			sep, err = ParseLocalListenerHandle(h)
			if err != nil {
				return fmt.Errorf("unbind: %w", err)
			}
			sep = a.endpointFor(sep)
		}
		localKey = keyOf(sep)
		if ln := a.ns.local[localKey]; ln != nil {
			if ln.App != a.id {
				if gl == nil {
					return fmt.Errorf("unbind: handle %#x: %w", uint64(h), ErrNotOwner)
				}
			} else {
				haveLocal = true
			}
		} else if gl == nil {
			return fmt.Errorf("unbind: handle %#x: %w", uint64(h), ErrAddressNotInUse)
		}
	} else if gl == nil {
		return fmt.Errorf("unbind: local handle %#x for an app without local scope: %w", uint64(h), ErrAddressNotInUse)
	}
	if haveLocal {
		delete(a.ns.local, localKey)
		delete(a.local, localKey)
	}
	if a.hasGlobal() && gl != nil {
		l.stopListenLocked(a, gl)
	}
	return nil
}

// UnbindURI unbinds the listener of the default namespace's global table on
// uri (seed: vnet_unbind_uri; ErrAddressNotInUse when there is none).
func (l *Layer) UnbindURI(id AppID, uri string) error {
	e, err := ParseURI(uri)
	if err != nil {
		return fmt.Errorf("unbind: %w", err)
	}
	l.lock()
	a, err := l.appLocked(id)
	if err != nil {
		l.unlock()
		return fmt.Errorf("unbind: %w", err)
	}
	e = a.endpointFor(e)
	ln := l.listeners.Load().set(e.FIB).get(keyOf(e))
	l.unlock()
	if ln == nil {
		return fmt.Errorf("unbind %s: %w", e.URI(), ErrAddressNotInUse)
	}
	return l.Unbind(id, ln.Handle)
}

// --- connect ---

// ConnectResult says how a connect went on.
type ConnectResult struct {
	Handle     Handle // the app's session: cut-through, or half-open
	CutThrough bool
}

// Connect connects app to e (seed: vnet_connect_i). In order:
//   - the zero address is refused (ErrInvalidValue);
//   - an app with local scope looks e up in its namespace's local table:
//     a drop rule fails the connect (ErrFiltered); a rule forwarding to
//     another app, or another app's listener, makes a cut-through session
//     with it; a match naming the connecting app itself (a proxy) is
//     skipped; an allow rule ends the local lookup;
//   - a loopback destination that found nothing fails (ErrLocalConnect);
//   - an app without global scope can go no further (ErrScope);
//   - the FIB's global rules: drop fails (ErrFiltered), forwarding to
//     another app makes a cut-through session;
//   - a destination that is an address of this host with a global listener
//     (other than the app's own proxy entry) makes a cut-through session;
//   - anything else becomes a half-open session handed to the Datapath.
func (l *Layer) Connect(id AppID, e Endpoint, opaque uint32) (ConnectResult, error) {
	l.lock()
	defer l.unlock()
	if e.IsZero() {
		return ConnectResult{}, fmt.Errorf("connect: zero address: %w", ErrInvalidValue)
	}
	a, err := l.appLocked(id)
	if err != nil {
		return ConnectResult{}, fmt.Errorf("connect: %w", err)
	}
	if err := validEndpoint(e); err != nil {
		return ConnectResult{}, fmt.Errorf("connect: %w", err)
	}
	if e.Port == 0 {
		return ConnectResult{}, fmt.Errorf("connect %s: port 0: %w", e.URI(), ErrInvalidValue)
	}
	e = a.endpointFor(e)
	rt := FiveTuple{Remote: AddrBytes(e.Addr), RemotePort: e.Port, Proto: e.Transport, Family: e.Family()}

	if a.hasLocal() {
		target, ln, action := l.localLookupLocked(a, e, &rt)
		switch {
		case action == RuleDrop:
			return ConnectResult{}, fmt.Errorf("connect %s: local rule: %w", e.URI(), ErrFiltered)
		case target != nil && target != a:
			return l.cutThroughLocked(a, target, ln, e, opaque)
		}
	}
	if EndpointIsLocal(e) {
		return ConnectResult{}, fmt.Errorf("connect %s: %w", e.URI(), ErrLocalConnect)
	}
	if !a.hasGlobal() {
		return ConnectResult{}, fmt.Errorf("connect %s: %w", e.URI(), ErrScope)
	}
	if m, ok := l.rules.Load().table(ruleTableID{fib: e.FIB}).match(&rt); ok {
		switch m.Action {
		case RuleDrop:
			return ConnectResult{}, fmt.Errorf("connect %s: rule %d: %w", e.URI(), m.ID, ErrFiltered)
		case RuleForward:
			if t := l.apps[m.App]; t != nil && t != a {
				return l.cutThroughLocked(a, t, l.appListenerLocked(t, e), e, opaque)
			}
		}
	}
	if l.cfg.View.IsLocal(e.FIB, e.Addr) {
		k := listenTuple(e)
		if ln := l.listeners.Load().set(e.FIB).lookup(k.Proto, k.Family, &k.Local, k.LocalPort); ln != nil {
			if t := l.apps[ln.App]; t != nil && !(t == a && ln.Proxy) {
				return l.cutThroughLocked(a, t, ln, e, opaque)
			}
		}
	}
	return l.openLocked(a, e, opaque)
}

// ConnectURI parses uri and connects to it.
func (l *Layer) ConnectURI(id AppID, uri string, opaque uint32) (ConnectResult, error) {
	e, err := ParseURI(uri)
	if err != nil {
		return ConnectResult{}, fmt.Errorf("connect: %w", err)
	}
	return l.Connect(id, e, opaque)
}

// localLookupLocked looks a connect up in the app's local table (seed:
// session_lookup_local_endpoint): rules first, then zero-address listeners
// of the port, then a proxy's every-port entry. It returns the app found and
// its listener (if any), or the rule action that ended the lookup.
func (l *Layer) localLookupLocked(a *app, e Endpoint, rt *FiveTuple) (*app, *Listener, RuleAction) {
	if m, ok := l.rules.Load().table(ruleTableID{local: true, ns: a.ns.cfg.ID}).match(rt); ok {
		switch m.Action {
		case RuleDrop, RuleAllow:
			return nil, nil, m.Action
		case RuleForward:
			t := l.apps[m.App]
			if t == nil {
				return nil, nil, 0
			}
			return t, l.appListenerLocked(t, e), RuleForward
		}
	}
	k := keyOf(Endpoint{Transport: e.Transport, Addr: e.Addr, Port: e.Port})
	k.addr = [16]byte{}
	ln := a.ns.local[k]
	if ln == nil {
		k.port = 0
		ln = a.ns.local[k]
	}
	if ln == nil {
		return nil, nil, 0
	}
	return l.apps[ln.App], ln, 0
}

// appListenerLocked finds t's listener that would serve e, local table
// first, or nil.
func (l *Layer) appListenerLocked(t *app, e Endpoint) *Listener {
	k := keyOf(e)
	for _, kk := range []listenKey{{port: k.port, proto: k.proto, fam: k.fam}, {proto: k.proto, fam: k.fam}} {
		if ln := t.local[kk]; ln != nil {
			return ln
		}
	}
	for _, ln := range t.global {
		le := ln.Endpoint
		if le.Transport == e.Transport && le.Family() == e.Family() && (le.Port == e.Port || le.Port == 0) &&
			(le.IsZero() || le.Addr == e.Addr) {
			return ln
		}
	}
	return nil
}

// cutThroughLocked makes a cut-through session between client a and server
// t: one segment holding a fifo per direction, an accept event for the
// server and a connected event for the client.
func (l *Layer) cutThroughLocked(a, t *app, ln *Listener, e Endpoint, opaque uint32) (ConnectResult, error) {
	name := fmt.Sprintf("ct-%d-%d-%d", a.id, t.id, l.seq)
	ct, err := l.cfg.Memory.NewCutThrough(name, t.opts.RxFifoSize, a.opts.RxFifoSize)
	if err != nil {
		return ConnectResult{}, fmt.Errorf("connect %s: cut-through: %w: %w", e.URI(), ErrNoMemory, err)
	}
	lh := InvalidHandle
	if ln != nil {
		lh = ln.Handle
	}
	ch := l.newHandleLocked(CutThroughWorker)
	sh := l.newHandleLocked(CutThroughWorker)
	cs := &session{h: ch, app: a, kind: kindCutThrough, fib: e.FIB, ifindex: e.IfIndex, opaque: opaque, pair: ct.Client(), ct: ct}
	ss := &session{h: sh, app: t, kind: kindCutThrough, fib: e.FIB, ifindex: e.IfIndex, listener: lh, pair: ct.Server(), ct: ct}
	cs.peer, ss.peer = ss, cs
	cs.tuple = FiveTuple{Remote: AddrBytes(e.Addr), RemotePort: e.Port, Proto: e.Transport, Family: e.Family()}
	ss.tuple = FiveTuple{Local: AddrBytes(e.Addr), LocalPort: e.Port, Proto: e.Transport, Family: e.Family()}
	l.sess[ch], l.sess[sh] = cs, ss
	a.sess[ch], t.sess[sh] = cs, ss
	l.notifyLocked(t, Event{Kind: EventAccepted, Handle: sh, Listener: lh, Transport: e.Transport,
		Local: netip.AddrPortFrom(e.Addr, e.Port), CutThrough: true, Pair: ss.pair})
	l.notifyLocked(a, Event{Kind: EventConnected, Handle: ch, Opaque: opaque, Transport: e.Transport,
		Remote: netip.AddrPortFrom(e.Addr, e.Port), CutThrough: true, Pair: cs.pair})
	return ConnectResult{Handle: ch, CutThrough: true}, nil
}

// openLocked hands a connect to the datapath as a half-open session.
func (l *Layer) openLocked(a *app, e Endpoint, opaque uint32) (ConnectResult, error) {
	if l.cfg.Datapath == nil {
		return ConnectResult{}, fmt.Errorf("connect %s: no datapath: %w", e.URI(), ErrConnect)
	}
	h := l.newHandleLocked(HalfOpenWorker)
	local, err := l.cfg.Datapath.Open(OpenRequest{HalfOpen: h, App: a.id, Remote: e, Opaque: opaque})
	if err != nil {
		l.freeHandleLocked(h)
		return ConnectResult{}, fmt.Errorf("connect %s: %w: %w", e.URI(), ErrConnect, err)
	}
	la := local.Addr().Unmap()
	if la.IsValid() && familyOf(la) != e.Family() {
		l.freeHandleLocked(h)
		l.cfg.Datapath.Close(h, FiveTuple{})
		return ConnectResult{}, fmt.Errorf("connect %s: datapath chose local address %v of another family: %w", e.URI(), la, ErrConnect)
	}
	t := FiveTuple{Local: AddrBytes(la), LocalPort: local.Port(), Remote: AddrBytes(e.Addr), RemotePort: e.Port, Proto: e.Transport, Family: e.Family()}
	key := hoKey{fib: e.FIB, t: t}
	_, dup := l.halfOpen[key]
	if dup {
		l.freeHandleLocked(h)
		l.cfg.Datapath.Close(h, t)
		return ConnectResult{}, fmt.Errorf("connect %s: 5-tuple from %v already connecting: %w", e.URI(), local, ErrAddressInUse)
	}
	s := &session{h: h, app: a, kind: kindHalfOpen, tuple: t, fib: e.FIB, ifindex: e.IfIndex, opaque: opaque}
	l.sess[h] = s
	a.sess[h] = s
	l.halfOpen[key] = h
	l.publishLocked(Change{Op: OpAdd, Kind: KindEstablished, IfIndex: e.IfIndex, FIB: e.FIB, Tuple: t, Handle: h})
	return ConnectResult{Handle: h}, nil
}

// --- datapath-side session life ---

// Connected turns half-open session ho into an established session owned by
// worker, allocates its fifos from the app's segment manager, posts it to
// the worker's shard and tells the app. It returns the session's handle.
func (l *Layer) Connected(worker uint32, ho Handle) (Handle, error) {
	l.lock()
	defer l.unlock()
	if int(worker) >= len(l.shards) {
		return InvalidHandle, fmt.Errorf("connected: worker %d: %w", worker, ErrInvalidValue)
	}
	s := l.sess[ho]
	if s == nil || s.kind != kindHalfOpen {
		return InvalidHandle, fmt.Errorf("connected: half-open %#x: %w", uint64(ho), ErrNoSession)
	}
	a := s.app
	pair, added, err := a.mem.AllocPair(a.opts.RxFifoSize, a.opts.TxFifoSize)
	if err != nil {
		l.failHalfOpenLocked(s, fmt.Errorf("%w: %w", ErrNoMemory, err))
		return InvalidHandle, fmt.Errorf("connected: %w: %w", ErrNoMemory, err)
	}
	l.dropHalfOpenLocked(s)
	if added != nil {
		l.notifyLocked(a, Event{Kind: EventSegmentAdded, Segment: added})
	}
	h := l.newHandleLocked(worker)
	ns := &session{h: h, app: a, kind: kindEstablished, tuple: s.tuple, fib: s.fib, ifindex: s.ifindex, opaque: s.opaque, pair: pair}
	l.addEstablishedLocked(ns)
	l.notifyLocked(a, Event{Kind: EventConnected, Handle: h, Opaque: s.opaque, Transport: s.tuple.Proto,
		Local: tupleLocal(&s.tuple), Remote: tupleRemote(&s.tuple), Pair: pair})
	return h, nil
}

// ConnectFailed ends half-open session ho and tells its app why.
func (l *Layer) ConnectFailed(ho Handle, why error) error {
	l.lock()
	defer l.unlock()
	s := l.sess[ho]
	if s == nil || s.kind != kindHalfOpen {
		return fmt.Errorf("connect failed: half-open %#x: %w", uint64(ho), ErrNoSession)
	}
	l.failHalfOpenLocked(s, why)
	return nil
}

func (l *Layer) failHalfOpenLocked(s *session, why error) {
	l.dropHalfOpenLocked(s)
	l.notifyLocked(s.app, Event{Kind: EventConnectFailed, Handle: s.h, Opaque: s.opaque, Transport: s.tuple.Proto,
		Remote: tupleRemote(&s.tuple), Err: why})
	l.freeHandleLocked(s.h)
}

// dropHalfOpenLocked removes a half-open entry from the tables (not its
// handle from the pool).
func (l *Layer) dropHalfOpenLocked(s *session) {
	delete(l.halfOpen, hoKey{fib: s.fib, t: s.tuple})
	delete(l.sess, s.h)
	delete(s.app.sess, s.h)
	l.publishLocked(Change{Op: OpDel, Kind: KindEstablished, IfIndex: s.ifindex, FIB: s.fib, Tuple: s.tuple, Handle: s.h})
}

func (l *Layer) addEstablishedLocked(s *session) {
	l.sess[s.h] = s
	s.app.sess[s.h] = s
	ss := &ShardSession{Handle: s.h, App: s.app.id, Tuple: s.tuple, FIB: s.fib, IfIndex: s.ifindex, Pair: s.pair, Memory: s.app.mem}
	l.shards[s.h.Worker()].Post(func(sh *Shard) { sh.Add(ss) })
	l.publishLocked(Change{Op: OpAdd, Kind: KindEstablished, IfIndex: s.ifindex, FIB: s.fib, Tuple: s.tuple, Handle: s.h})
}

// Closed ends session h because its peer or transport closed it, and tells
// its app.
func (l *Layer) Closed(h Handle) error {
	l.lock()
	defer l.unlock()
	s := l.sess[h]
	if s == nil {
		return fmt.Errorf("closed: session %#x: %w", uint64(h), ErrNoSession)
	}
	if s.kind == kindHalfOpen {
		l.failHalfOpenLocked(s, ErrConnect)
		return nil
	}
	l.notifyLocked(s.app, Event{Kind: EventDisconnected, Handle: s.h})
	l.closeSessionLocked(s, false)
	return nil
}

func tupleLocal(t *FiveTuple) netip.AddrPort {
	return netip.AddrPortFrom(AddrFrom(t.Local, t.Family), t.LocalPort)
}

func tupleRemote(t *FiveTuple) netip.AddrPort {
	return netip.AddrPortFrom(AddrFrom(t.Remote, t.Family), t.RemotePort)
}

// --- disconnect ---

// Disconnect closes session h of app (seed: vnet_disconnect_session). A
// handle naming no session fails with ErrNoSession; another app's session
// with ErrNotOwner, and that session is left alone. The peer of a
// cut-through session is told; an established session leaves its worker's
// shard through the worker's mailbox.
func (l *Layer) Disconnect(id AppID, h Handle) error {
	l.lock()
	defer l.unlock()
	if _, err := l.appLocked(id); err != nil {
		return fmt.Errorf("disconnect: %w", err)
	}
	s := l.sess[h]
	if s == nil {
		return fmt.Errorf("disconnect: session %#x: %w", uint64(h), ErrNoSession)
	}
	if s.app.id != id {
		return fmt.Errorf("disconnect: session %#x: %w", uint64(h), ErrNotOwner)
	}
	l.closeSessionLocked(s, true)
	return nil
}

// closeSessionLocked removes s from every table and frees what it holds.
// byApp says the app closed it: the datapath is told; a cut-through peer is
// told either way.
func (l *Layer) closeSessionLocked(s *session, byApp bool) {
	delete(l.sess, s.h)
	delete(s.app.sess, s.h)
	switch s.kind {
	case kindHalfOpen:
		l.dropHalfOpenLocked(s)
		l.freeHandleLocked(s.h)
		if byApp && l.cfg.Datapath != nil {
			l.cfg.Datapath.Close(s.h, s.tuple)
		}
	case kindEstablished:
		h := s.h
		l.shards[h.Worker()].Post(func(sh *Shard) { sh.Del(h) })
		l.publishLocked(Change{Op: OpDel, Kind: KindEstablished, IfIndex: s.ifindex, FIB: s.fib, Tuple: s.tuple, Handle: h})
		// The handle's index goes back to the pool only after the
		// worker dropped it, so that a new session cannot take the
		// slot while the old one is still in the shard.
		l.shards[h.Worker()].Post(func(*Shard) {
			l.mu.Lock()
			l.freeHandleLocked(h)
			l.mu.Unlock()
		})
		if byApp && l.cfg.Datapath != nil {
			l.cfg.Datapath.Close(h, s.tuple)
		}
		if !s.app.detaching {
			mem, pair := s.app.mem, s.pair
			l.reclaimLocked(func() { mem.FreePair(pair) })
		}
	case kindCutThrough:
		l.freeHandleLocked(s.h)
		if p := s.peer; p != nil {
			p.peer, s.peer = nil, nil
			delete(l.sess, p.h)
			delete(p.app.sess, p.h)
			l.freeHandleLocked(p.h)
			l.notifyLocked(p.app, Event{Kind: EventDisconnected, Handle: p.h, CutThrough: true})
		}
		_ = s.ct.Close()
	}
}
