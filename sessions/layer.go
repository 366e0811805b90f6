package sessions

import (
	"cmp"
	"fmt"
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
	// EphemeralPorts is the range [low, high] Bind picks a port from for
	// port 0 when the Datapath is no PortReserver (or does not serve the
	// transport); zero: DefaultEphemeralLow to DefaultEphemeralHigh.
	EphemeralPorts [2]uint16
	// MaxCutThrough bounds the cut-through sessions of the layer (each a
	// segment of its own: a descriptor and a mapping in the daemon, and
	// one of each in both apps), MaxCutThroughPerApp those one app
	// opened (its connects; the sessions a listener accepts count against
	// their openers). A connect past either fails with ErrLimit. Zero: the
	// defaults below; negative: no bound.
	MaxCutThrough, MaxCutThroughPerApp int
	// MaxPortsPerOwner bounds the ports the apps of one owner
	// (AttachOptions.Owner, a uid; owner 0, root, is not bound) hold in the
	// host's stack through the Datapath: their global listeners and the
	// connects to the wire they have open (half-open or established). A
	// bind or connect past it fails with ErrLimit, so that one user's
	// apps cannot take every ephemeral port of the host. Zero:
	// DefaultMaxPortsPerOwner; negative: no bound.
	MaxPortsPerOwner int
}

// Defaults of Config.MaxCutThrough and MaxCutThroughPerApp.
const (
	DefaultMaxCutThrough       = 16384
	DefaultMaxCutThroughPerApp = 4096
	// DefaultMaxPortsPerOwner is under a third of Linux's default
	// ephemeral range (ip_local_port_range, 28,232 ports).
	DefaultMaxPortsPerOwner = 8192
)

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
	wrClosed bool       // cut-through stream: CloseWrite told the peer
	aborted  bool       // cut-through stream: closed with a reset (StreamAbort)
	opener   bool       // cut-through: this end's app connected (app.ct counts it)
	untold   bool       // cut-through: this end's app never heard of the session (WithdrawConnect)
	charged  uint64     // cut-through opener: the bytes charged to its app's memory (MemoryCharger)
	wire     bool       // the app's connect to the wire (app.ports counts it)
}

// indexPool gives out a worker's handle indices. Its mutex lets a worker
// give one back without the layer's lock (releaseEndedLocked): a worker
// never waits for the control plane.
type indexPool struct {
	mu   sync.Mutex // guards free and next for get and put
	free []uint32
	next uint32
}

func (p *indexPool) get() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.free); n > 0 {
		i := p.free[n-1]
		p.free = p.free[:n-1]
		return i
	}
	p.next++
	return p.next - 1
}

func (p *indexPool) put(i uint32) {
	p.mu.Lock()
	p.free = append(p.free, i)
	p.mu.Unlock()
}

// Layer is the session layer: namespaces, apps, tables, rules and the
// change feed.
//
// All methods are safe for concurrent use. Control-plane methods serialize
// on one lock (mu). Listener tables and rules are published as immutable
// snapshots that the datapath reads without locks (LookupListener,
// MatchRule); established sessions are handed to their worker's shard
// (Shard) through its mailbox. Its locks are in the daemon's one lock
// order, written in package datapath's doc: mu before Shard.mu and the
// apps' memory; reclaimMu never with mu held.
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
	linger   map[hoKey]*session   // closed stream sessions whose 5-tuple stays steered (StreamKeeper.Linger)
	pools    map[uint32]*indexPool
	nextPort uint32 // where the next pick of an ephemeral port starts, as an offset in the range
	ruleList []RuleInfo
	ruleHits map[uint32]*RuleHits // by rule ID: every rule of ruleList has one
	nextRule uint32
	seq      uint64
	pubSeq   atomic.Uint64  // seq, for Seq without the lock
	ct       int            // cut-through sessions (Config.MaxCutThrough)
	owners   map[uint32]int // ports held by owner, 0 (root) not counted (Config.MaxPortsPerOwner)
	feeds    map[*Feed]struct{}
	pending  []Event // events for the Notifier, delivered after unlock

	// sessOrder is sess's handles in order while sessOrderOK (a change
	// to sess clears it): pages of sessions (SessionsPage) are taken from
	// it, sorted once for all the pages of a table that does not change.
	sessOrder   []Handle
	sessOrderOK bool
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
	cfg.MaxCutThrough = cmp.Or(cfg.MaxCutThrough, DefaultMaxCutThrough)
	cfg.MaxCutThroughPerApp = cmp.Or(cfg.MaxCutThroughPerApp, DefaultMaxCutThroughPerApp)
	cfg.MaxPortsPerOwner = cmp.Or(cfg.MaxPortsPerOwner, DefaultMaxPortsPerOwner)
	l := &Layer{
		cfg:      cfg,
		halfOpen: map[hoKey]Handle{},
		owners:   map[uint32]int{},
		nss:      map[string]*namespace{"": {cfg: cfg.Default, local: map[listenKey]*Listener{}}},
		apps:     map[AppID]*app{},
		byClient: map[uint64]*app{},
		nextApp:  1,
		sess:     map[Handle]*session{},
		glisten:  map[Handle]*Listener{},
		pools:    map[uint32]*indexPool{},
		ruleHits: map[uint32]*RuleHits{},
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
	_ = a.mem.Notify(ev) // a full queue: FifoMemory postpones it (advisory events are lost); the Notifier sees it now
	l.pending = append(l.pending, ev)
}

func (l *Layer) pool(w uint32) *indexPool {
	p := l.pools[w]
	if p == nil {
		p = &indexPool{}
		if w == 0 {
			// Handle 0 is never given: the protocol's filters take 0
			// for none (a capture of one session, api.CaptureStart).
			p.next = 1
		}
		l.pools[w] = p
	}
	return p
}

// newHandleLocked gives out a handle of worker w. A datapath worker's
// handle is the lowest free index (its shard is an array). A half-open,
// cut-through or global listener's handle is the next of a counter
// instead: the datapath works on a connect off the layer's lock and names
// it by its half-open handle, an app learns of a cut-through session on its
// control connection but of its end in its event queue, and a listener's
// accepts (the datapath's StreamAccepted, the Accepted events queued for
// its app) name it by its handle; a handle closed and given at once to the
// next connect, session or bind would let a late call or event about the
// first take the second for its own (another app's listener its
// connection). Only 2^32 such handles later can one come back, and never
// while a session or listener has it.
func (l *Layer) newHandleLocked(w uint32) Handle {
	if !serialWorker(w) {
		return MakeHandle(w, l.pool(w).get())
	}
	p := l.pool(w)
	for {
		h := MakeHandle(w, p.next)
		p.next++
		if l.sess[h] == nil && l.glisten[h] == nil {
			return h
		}
	}
}

func (l *Layer) freeHandleLocked(h Handle) {
	if !serialWorker(h.Worker()) {
		l.pool(h.Worker()).put(h.Index())
	}
}

// serialWorker reports whether worker w's handles come from a counter
// (newHandleLocked).
func serialWorker(w uint32) bool {
	return w == HalfOpenWorker || w == CutThroughWorker || w == ListenerWorker
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
