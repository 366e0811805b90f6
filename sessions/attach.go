package sessions

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Attach and detach (seed: vnet_application_attach, vnet_application_detach).

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
	MaxSegmentMemory       uint64 // AppMemoryOptions.MaxSegmentMemory; 0: no limit
	EventQueueSize         int    // 0: DefaultEventQueueSize

	// Proxy makes the app listen on every port of its namespace for each
	// of ProxyTransports (tcp and/or udp).
	Proxy           bool
	ProxyTransports []Transport

	// Owner is the uid of the app's process, as the daemon learnt it from
	// the kernel (not from the app): Config.MaxPortsPerOwner bounds what
	// the apps of one owner hold together. 0 (root) is not bound.
	Owner uint32

	// NewWaitSet creates the epoll set the app waits on
	// (AppMemoryOptions.NewWaitSet); nil: the daemon's own.
	NewWaitSet func() (int, error)
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
	// ended holds the wire stream sessions the transport ended (a reset,
	// a timeout) until the app's Disconnect of the handle: their handles
	// and fifos are not given to another session before the app stopped
	// using them.
	ended map[Handle]*session
	// ct counts the cut-through sessions the app opened
	// (Config.MaxCutThroughPerApp).
	ct int
	// ports counts its global listeners (not a proxy's) and its sessions
	// with wire set: the ports it holds in the host's stack
	// (Config.MaxPortsPerOwner, with its owner's other apps).
	ports int
}

func (a *app) hasLocal() bool { return a.opts.Scope&ScopeLocal != 0 }

func (a *app) hasGlobal() bool { return a.opts.Scope&ScopeGlobal != 0 }

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
		Name:             name,
		SegmentSize:      o.SegmentSize,
		AddSegmentSize:   o.AddSegmentSize,
		MaxSegments:      o.MaxSegments,
		MaxFifoMemory:    o.MaxFifoMemory,
		MaxSegmentMemory: o.MaxSegmentMemory,
		EventQueueSize:   o.EventQueueSize,
		NewWaitSet:       o.NewWaitSet,
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
		ended:  map[Handle]*session{},
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
	k, keeper := l.cfg.Datapath.(StreamKeeper)
	if keeper {
		k.AppGone(a.id)
	}
	for _, s := range a.sess {
		l.closeSessionLocked(s, true)
	}
	for h, s := range a.ended {
		delete(a.ended, h)
		l.releaseEndedLocked(s) // the fifos go with the app's memory
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
	free := func() { _ = mem.Close() }
	if keeper {
		free = k.KeepApp(a.id, free)
	}
	l.reclaimLocked(free)
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
