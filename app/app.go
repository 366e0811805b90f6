package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/testhook"
)

// DefaultSocket is the daemon's control socket when Options.Socket is
// empty.
const DefaultSocket = "/run/xsessiond/api.sock"

// controlTimeout bounds the control requests made without a context
// (unbind, disconnect and detach on Close).
const controlTimeout = 5 * time.Second

// Options are an app's attach request.
type Options struct {
	Socket    string // the daemon's control socket; "" is DefaultSocket
	Name      string // the app's name in the daemon's tables and logs
	Namespace string // the app namespace; "" is the default namespace
	Secret    uint64 // the namespace's secret (not checked for the default namespace)
	// Scope says where the app's listeners are visible and which tables
	// its connects use; 0 is ScopeGlobal.
	Scope Scope
	// RxFifoSize and TxFifoSize are the data sizes of each session's
	// fifos; 0 is the daemon's default (64 KiB). Rounded up to a power of
	// two. A UDP datagram takes its length and a 48-byte header in a
	// fifo: one that does not fit an empty fifo is refused to a sender
	// of this app (EMSGSIZE) and dropped on the way in (too_big in ctl
	// show): an app that carries datagrams near the 65,507 bytes IPv4
	// allows (65,527 in IPv6) asks for 128 KiB.
	RxFifoSize, TxFifoSize uint32
	// SegmentSize is the size of the app's first segment, AddSegmentSize
	// of those added later; 0 is the daemon's default.
	SegmentSize, AddSegmentSize uint64
	// MaxFifoMemory caps the memory of the app's fifos; 0: no cap beyond
	// the daemon's.
	MaxFifoMemory uint64
	// ReadSpin is how long a read that found nothing may go on yielding
	// its CPU to the producer and looking again before it sleeps (see
	// spin.go: it stops sooner where yielding runs nobody, and reads of
	// TCP sessions over the datapath do not spin); 0 is DefaultReadSpin,
	// negative never spins.
	ReadSpin time.Duration
}

// App is an application attached to xsessiond. Close it.
type App struct {
	opts  Options
	cl    *api.Client
	index uint32
	evq   *fifo.EventQueue
	wake  *os.File // a duplicate of the event queue's eventfd, read through the runtime poller
	kicks []int    // worker kick eventfds, by worker index
	// sleepFlags is the daemon's page of worker sleep flags
	// (api.SleepFlags), mapped read-only; nil: kick after every SetEvent.
	sleepFlags []byte
	readSpin   time.Duration // Options.ReadSpin with its default; <= 0: no spin
	// stolenAt is the yield that counts as stolen (spin.go); 0:
	// spinStolen. Tests of the spin's other rules set it out of reach
	// (testhook.SpinStolenAt for Apps they attach).
	stolenAt   time.Duration
	yieldFloor yieldFloor   // the shortest yield a read's spin timed
	reads      readStats    // ReadStats
	spinning   atomic.Bool  // a read spins now (spin.go)
	spinMiss   atomic.Int32 // spins in a row that found nothing
	spinSkip   atomic.Int32 // reads left to sleep without a spin
	lastStolen atomic.Int64 // the last stolen yield, ns since spinEpoch (0: none)
	// askMTU: the daemon answers api.PathMTU (every daemon of this
	// protocol's major version does), so writes of don't-fragment
	// datagrams check the path MTU (checkPath); tests leave it off.
	askMTU bool

	done        chan struct{} // closed when the app stopped (Close, or the daemon went away)
	reactorDone chan struct{}
	closeOnce   sync.Once

	wmu     sync.Mutex           // guards waiters
	waiters map[*waiter]struct{} // blocked calls to wake after each eventfd wake-up

	// evmu serializes event handling with changes to the sessions known
	// by handle: handles are reused as soon as the daemon frees them, so a
	// session is registered (and unregistered) only after every event
	// queued before it was handled (sync). Lock order: the objects' rd.mu
	// and wr.mu, then evmu, then their mu, then App.mu.
	evmu     sync.Mutex
	evs      []fifo.Event // guarded by evmu: the batch being handled
	released bool         // guarded by evmu: the event queue is gone

	mu        sync.Mutex               // guards the fields below
	err       error                    // why the app stopped
	segs      map[uint32]*fifo.Segment // the app's segments by index
	acceptors map[flow.Handle]acceptor // listeners by handle
	owners    map[flow.Handle]owner    // sessions by handle, for disconnect events
	goneEarly map[flow.Handle]uint8    // events (early*) of sessions before this side learned of them
	// closing holds the wire TCP sessions closed through their tx fifo
	// (Conn.Close) until the handle names another session: a reset or
	// disconnect of one that comes after the close is answered with the
	// Disconnect that frees its fifos, and is not taken for an event of
	// the next session with that handle.
	closing map[flow.Handle]struct{}
	// dropped holds the sessions this side closed without ever owning
	// them (a dial that gave up, an acceptor gone): a reset or FIN of one
	// that comes after is not kept in goneEarly, where the next session
	// with the handle would take it for its own. Bounded (handleSet).
	dropped    handleSet
	localOf    map[flow.Handle]netip.AddrPort // local addresses (fifo.EventLocalAddr) of sessions not yet accepted or connected
	dials      map[uint32]chan connectResult  // connects in progress by opaque
	parked     []fifo.Event                   // events naming a segment not mapped yet, or (accepts) a listener not registered yet
	objects    map[closer]struct{}            // open listeners and connections
	nextOpaque uint32
	// binding counts the Listen and ListenPacket calls between their
	// first bind and the registration of their acceptors: the daemon
	// takes sessions for a listener from its bind on, and an accept
	// that comes meanwhile waits (parked, ctEarly) rather than be
	// refused, as a kernel listener queues a connection from listen(2)
	// on.
	binding int
	ctEarly []ctAccept // cut-through accepts waiting for their listener; guarded by evmu
	// shut is set as Close takes the objects to close: an object made
	// after that is not tracked (track) but closed by the call that made
	// it, which Close waits for (making) before it unmaps the memory.
	shut bool

	making sync.WaitGroup // calls that may make an object (enter, leave)
}

// acceptor receives the sessions accepted on a listener.
type acceptor interface {
	accept(e *end, info *api.SessionInfo) bool
}

// owner is told when the peer of one of its sessions went away.
type owner interface {
	peerClosed(h flow.Handle)
}

// errorOwner is told of a session's asynchronous errors (fifo.EventError).
type errorOwner interface {
	peerError(h flow.Handle, errno syscall.Errno)
}

type closer interface{ Close() error }

// connectResult is how a connect in progress ended.
type connectResult struct {
	h         flow.Handle
	rx, tx    fifo.FifoRef
	localPort uint16         // a datapath session's local port, from its event
	local     netip.AddrPort // its local address, when the daemon sent it (fifo.EventLocalAddr)
	err       error
}

// Attach connects to the daemon and attaches the app. Errors are one line
// for people and wrap the daemon's sentinel (errors.Is(err,
// flow.ErrWrongSecret)), or api.ErrNoDaemon when nothing listens on the
// socket.
func Attach(ctx context.Context, opts Options) (*App, error) {
	if opts.Socket == "" {
		opts.Socket = DefaultSocket
	}
	spin := opts.ReadSpin
	if spin == 0 {
		spin = DefaultReadSpin
	}
	a := &App{
		opts:        opts,
		readSpin:    spin,
		stolenAt:    time.Duration(testhook.SpinStolenAt.Load()),
		done:        make(chan struct{}),
		reactorDone: make(chan struct{}),
		waiters:     map[*waiter]struct{}{},
		segs:        map[uint32]*fifo.Segment{},
		acceptors:   map[flow.Handle]acceptor{},
		owners:      map[flow.Handle]owner{},
		goneEarly:   map[flow.Handle]uint8{},
		closing:     map[flow.Handle]struct{}{},
		localOf:     map[flow.Handle]netip.AddrPort{},
		dials:       map[uint32]chan connectResult{},
		objects:     map[closer]struct{}{},
		nextOpaque:  1,
	}
	name := opts.Name
	if name == "" {
		name = "app"
	}
	// A notice whose descriptors this process had no room for (at its
	// descriptor limit: a peer app opening cut-through sessions to it
	// by the thousand) costs that session or segment, not the app.
	cl, err := api.DialClient(ctx, opts.Socket, api.ClientOptions{Name: name, Notify: a.onNotice, KeepTruncated: true})
	if err != nil {
		return nil, attachError(err, &opts)
	}
	a.cl = cl
	a.askMTU = true // every daemon of this major version answers PathMTU
	reply, fds, err := api.Do[*api.AttachReply](ctx, cl, &api.Attach{
		Name: opts.Name, Namespace: opts.Namespace, Secret: opts.Secret, Scope: opts.Scope,
		RxFifoSize: opts.RxFifoSize, TxFifoSize: opts.TxFifoSize,
		SegmentSize: opts.SegmentSize, AddSegmentSize: opts.AddSegmentSize, MaxFifoMemory: opts.MaxFifoMemory,
	})
	if err != nil {
		cl.Close()
		return nil, attachError(err, &opts)
	}
	if err := a.setup(reply, fds); err != nil {
		a.release()
		cl.Close()
		return nil, &Error{Msg: "attach: " + err.Error(), Err: err}
	}
	if len(a.kicks) > 0 {
		// Without the page (an error, a page that does not check out)
		// the app kicks after every SetEvent.
		a.sleepFlags, _ = mapSleepFlags(ctx, cl)
	}
	go a.reactor()
	go func() {
		select {
		case <-cl.Done():
			a.lost()
		case <-a.done:
		}
	}()
	return a, nil
}

// lost stops the app once its control connection failed (the daemon
// died, or dropped it), saying why; nothing if it stopped already. The
// connection's watch calls it, and so does a control request that found
// the connection gone first: its error is then the app's.
func (a *App) lost() {
	err := a.cl.Err()
	switch {
	case err == nil || errors.Is(err, api.ErrClosed):
		a.fail("the daemon closed the connection")
	case errors.Is(err, io.EOF):
		a.fail("lost the daemon: the control connection closed without a shutdown notice: the daemon died, or dropped this app")
	default:
		a.fail("lost the daemon: " + err.Error())
	}
}

// setup maps what AttachReply passed: segments, the event queue, the
// kick eventfds. It owns fds.
func (a *App) setup(r *api.AttachReply, fds []int) (err error) {
	a.index = r.AppIndex
	nseg := len(r.Segments)
	if len(fds) != r.FDs() {
		api.CloseFDs(fds)
		return fmt.Errorf("%w: %d of the attach's %d descriptors arrived: %w", ErrProtocol, len(fds), r.FDs(), errFDsLost)
	}
	defer func() {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	for i, s := range r.Segments {
		seg, err := fifo.MapSegment(fds[i])
		if err != nil {
			return fmt.Errorf("segment %d: %w: %w", s.Index, ErrProtocol, err)
		}
		fds[i] = -1
		a.segs[s.Index] = seg
	}
	qseg := a.segs[r.EventQueue.Segment]
	if qseg == nil || r.EventQueue.Offset > 1<<32-1 {
		return fmt.Errorf("event queue in segment %d: %w", r.EventQueue.Segment, ErrProtocol)
	}
	q, err := fifo.OpenEventQueue(qseg, uint32(r.EventQueue.Offset), fds[nseg])
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	fds[nseg] = -1
	a.evq = q
	dup, err := unix.FcntlInt(uintptr(q.WaitFD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("dup epoll set: %w", err)
	}
	a.wake = os.NewFile(uintptr(dup), "xsession-events")
	for i := nseg + 1; i < len(fds); i++ {
		a.kicks = append(a.kicks, fds[i])
		fds[i] = -1
	}
	return nil
}

// release frees what setup made; for a failed Attach and for Close after
// every user of the memory stopped.
func (a *App) release() {
	if a.wake != nil {
		a.wake.Close()
	}
	if a.evq != nil {
		a.evq.Close()
	}
	a.mu.Lock()
	for i, s := range a.segs {
		s.Close()
		delete(a.segs, i)
	}
	a.mu.Unlock()
	for _, fd := range a.kicks {
		unix.Close(fd)
	}
	a.kicks = nil
	if a.sleepFlags != nil {
		_ = unix.Munmap(a.sleepFlags)
		a.sleepFlags = nil
	}
}

// Index returns the app's index in the daemon (ctl show apps; the app of
// a forward rule).
func (a *App) Index() uint32 { return a.index }

// Done is closed when the app stopped: Close, or the daemon went away.
func (a *App) Done() <-chan struct{} { return a.done }

// Err returns why the app stopped (wrapping net.ErrClosed), or nil while it
// runs.
func (a *App) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// fail stops the app: every blocked call returns an error wrapping
// net.ErrClosed.
func (a *App) fail(reason string) {
	a.mu.Lock()
	if a.err != nil {
		a.mu.Unlock()
		return
	}
	a.err = closedError(reason)
	dials := a.dials
	a.dials = map[uint32]chan connectResult{}
	a.mu.Unlock()
	close(a.done)
	for _, ch := range dials {
		select {
		case ch <- connectResult{err: a.err}:
		default:
		}
	}
}

// stopped returns the app's error once it stopped, else nil.
func (a *App) stopped() error {
	select {
	case <-a.done:
		return a.Err()
	default:
		return nil
	}
}

// Close closes every listener and connection of the app, detaches, and
// unmaps the shared memory.
func (a *App) Close() error {
	a.closeOnce.Do(func() {
		a.mu.Lock()
		a.shut = true
		objs := make([]closer, 0, len(a.objects))
		for o := range a.objects {
			objs = append(objs, o)
		}
		a.mu.Unlock()
		for _, o := range objs {
			o.Close()
		}
		if a.stopped() == nil {
			ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
			a.cl.Call(ctx, &api.Detach{})
			cancel()
		}
		a.fail("app closed")
		a.cl.Close() // waits for the notice goroutine
		a.wake.Close()
		<-a.reactorDone
		// A Dial, Listen or Accept under way returns now that the app
		// failed, closing what it made after the objects were taken.
		a.making.Wait()
		a.evmu.Lock()
		a.released = true
		for _, c := range a.ctEarly {
			c.e.close()
		}
		a.ctEarly = nil
		a.evmu.Unlock()
		a.release()
	})
	return nil
}

// enter begins a call that may make an object (Dial, Listen, Accept); it
// fails once Close began. leave ends it.
func (a *App) enter() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.shut {
		return closedError("app closed")
	}
	a.making.Add(1)
	return nil
}

func (a *App) leave() { a.making.Done() }

// track adds o to the objects Close closes. It reports false once Close
// took them: the caller, inside enter, closes o and fails.
func (a *App) track(o closer) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.shut {
		return false
	}
	a.objects[o] = struct{}{}
	return true
}

func (a *App) untrack(o closer) {
	a.mu.Lock()
	delete(a.objects, o)
	a.mu.Unlock()
}

// call makes a control request bounded by ctx. A request that lets go of
// something in the daemon (Unbind, Disconnect, Abort: an object's Close)
// succeeds once the daemon went away, as it was under way or before:
// the daemon let go of everything of the app's as its connection ended,
// and a Close then returns nil, as a kernel socket's after its connection
// failed.
func (a *App) call(ctx context.Context, req api.Message) (api.Message, []int, error) {
	if err := a.stopped(); err != nil {
		if lettingGo(req) {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	m, fds, err := a.cl.Call(ctx, req)
	err = a.callErr(err)
	if err != nil && lettingGo(req) && a.stopped() != nil {
		return nil, nil, nil
	}
	return m, fds, err
}

// lettingGo reports whether req only lets go of something of the app's
// in the daemon (call).
func lettingGo(req api.Message) bool {
	switch req.(type) {
	case *api.Unbind, *api.Disconnect, *api.Abort:
		return true
	}
	return false
}

// do is call for a request whose successful reply has type R (api.Do);
// any other reply is an ErrProtocol.
func do[R api.Message](ctx context.Context, a *App, req api.Message) (R, []int, error) {
	return doLate[R](ctx, a, req, nil)
}

// doLate is do with api.CallLate's late.
func doLate[R api.Message](ctx context.Context, a *App, req api.Message, late func(api.Message, []int)) (R, []int, error) {
	var zero R
	if err := a.stopped(); err != nil {
		return zero, nil, err
	}
	r, fds, err := api.DoLate[R](ctx, a.cl, req, late)
	if errors.Is(err, api.ErrUnexpectedReply) {
		return zero, nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return r, fds, a.callErr(err)
}

// callErr is the error of a control request: the app's own error once the
// connection to the daemon is gone.
//
// The client records its failure before it fails the requests in flight,
// and a request made after it fails at once: either finds the App
// stopped here, before the watch of the connection (Attach) has run.
func (a *App) callErr(err error) error {
	if err == nil {
		return nil
	}
	if a.stopped() == nil && a.cl.Err() != nil {
		a.lost()
	}
	if errors.Is(err, api.ErrClosed) || a.stopped() != nil {
		if e := a.Err(); e != nil {
			return e
		}
		return closedError("the daemon closed the connection")
	}
	return err
}

// --- waiting ---

func (a *App) arm(w *waiter) {
	a.wmu.Lock()
	a.waiters[w] = struct{}{}
	a.wmu.Unlock()
}

func (a *App) disarm(w *waiter) {
	a.wmu.Lock()
	delete(a.waiters, w)
	a.wmu.Unlock()
}

// closeEnd releases e (end.close) once no armed waiter looks at its
// fifos. The event goroutine's wakeAll reads the fifos of every armed
// waiter, and a call blocked on e stays armed until it wakes: the waiters
// still armed lose e's fifos here, under the lock wakeAll reads them
// with, and are poked; a call that wakes finds its owner closed (done)
// before it touches a fifo. The owner's lock that serializes e's calls
// is held.
func (a *App) closeEnd(e *end) {
	a.wmu.Lock()
	for w := range a.waiters {
		if w.rx == e.rx || w.tx == e.tx {
			w.rx, w.tx = nil, nil
			w.poke()
		}
	}
	a.wmu.Unlock()
	e.close()
}

func (a *App) wakeAll() {
	a.wmu.Lock()
	for w := range a.waiters {
		if w.due() {
			w.poke()
		}
	}
	a.wmu.Unlock()
}

// kick returns the eventfd of worker w, -1 if there is none.
func (a *App) kick(w uint32) int {
	if int(w) < len(a.kicks) {
		return a.kicks[w]
	}
	return -1
}

// reactor drains the event queue after every wake-up of the app's epoll
// set (the event queue's WaitFD) and wakes the blocked calls that may go on
// (waiter.due).
//
// The set watches, edge-triggered, the daemon's eventfd for this app and
// one eventfd per cut-through peer, and every write to any of them is an
// edge, which the runtime poller keeps for the waiting call: the reactor
// reads nothing, and no system call is made per wake-up. None of those
// eventfds is one another app holds and could fill or make blocking
// (fifo.EventQueue). The poller's preparation of a wait forgets the
// edges that came before it, so the whole loop runs inside one
// RawConn.Read, whose first call drains what came before.
func (a *App) reactor() {
	defer close(a.reactorDone)
	rc, err := a.wake.SyscallConn()
	if err != nil {
		return
	}
	// Returns when Close closed a.wake.
	_ = rc.Read(func(uintptr) bool {
		a.evq.Arm()
		a.evmu.Lock()
		a.drainLocked()
		a.evmu.Unlock()
		a.wakeAll()
		return false
	})
}

// drainLocked handles every event queued. evmu is held.
func (a *App) drainLocked() {
	if a.released {
		return
	}
	if a.evs == nil {
		a.evs = make([]fifo.Event, 64)
	}
	for {
		n, err := a.evq.PopBatch(a.evs)
		for i := range a.evs[:n] {
			a.handleEvent(&a.evs[i])
		}
		if err != nil || n < len(a.evs) {
			return
		}
	}
}

// sync runs fn after every event queued so far was handled, with event
// handling held off: for registering and unregistering sessions.
func (a *App) sync(fn func()) {
	a.evmu.Lock()
	defer a.evmu.Unlock()
	a.drainLocked()
	fn()
}

// parkedFor reports whether an event of session h waits in a.parked for
// its segment. evmu is held.
func (a *App) parkedFor(h flow.Handle) bool {
	for i := range a.parked {
		if flow.Handle(a.parked[i].Handle) == h {
			return true
		}
	}
	return false
}

// replayParked handles the parked events again, in their order, once a
// segment was added; those whose segment is still missing, and the later
// events of their sessions, are parked again. evmu is held.
func (a *App) replayParked() {
	parked := a.parked
	a.parked = nil
	for i := range parked {
		a.handleEvent(&parked[i])
	}
}

// segFifos attaches to the fifos refs name in the app's segments.
func (a *App) segFifos(rx, tx fifo.FifoRef) (*fifo.Fifo, *fifo.Fifo, bool, error) {
	a.mu.Lock()
	rs, ts := a.segs[rx.Segment], a.segs[tx.Segment]
	a.mu.Unlock()
	if rs == nil || ts == nil {
		return nil, nil, false, nil
	}
	rf, err := rs.FifoAt(rx.Offset)
	if err != nil {
		return nil, nil, true, fmt.Errorf("%w: rx fifo: %w", ErrProtocol, err)
	}
	tf, err := ts.FifoAt(tx.Offset)
	if err != nil {
		return nil, nil, true, fmt.Errorf("%w: tx fifo: %w", ErrProtocol, err)
	}
	return rf, tf, true, nil
}

// handleEvent handles one event of the queue. Cut-through sessions come
// with their segment over the control socket (notices and replies), so
// their events are only looked at for disconnects. evmu is held.
func (a *App) handleEvent(ev *fifo.Event) {
	se := fifo.DecodeSessionEvent(ev)
	h := flow.Handle(se.Handle)
	if a.parkedFor(h) {
		// An earlier event of this session (its accept, its connect)
		// waits for its segment: this one is handled after it, as the
		// daemon sent them. A reset handled first would find no owner,
		// and be taken for the end of an earlier session with the handle
		// (dropped, closing), which its app already let go.
		a.parked = append(a.parked, *ev)
		return
	}
	switch se.Type {
	case fifo.EventDisconnected, fifo.EventReset, fifo.EventPeerClosed, fifo.EventResetAhead:
		what := earlyGone
		switch se.Type {
		case fifo.EventReset, fifo.EventResetAhead:
			what |= earlyReset
			if se.Type == fifo.EventResetAhead {
				// Not gone yet: reads take what came before the reset.
				what = earlyResetAhead
			}
			if err, ok := flow.Code(se.Code).Err(); ok {
				switch {
				case errors.Is(err, flow.ErrTimedOut):
					what |= earlyTimedOut
				case errors.Is(err, flow.ErrFifoCorrupt):
					what |= earlyFifoCorrupt
				case errors.Is(err, flow.ErrBrokenPipe):
					what |= earlyBrokenPipe
				}
			}
		case fifo.EventPeerClosed:
			what = earlyFIN
		}
		a.mu.Lock()
		o := a.owners[h]
		_, closed := a.closing[h]
		if o == nil && !closed && !a.dropped.has(h) {
			a.goneEarly[h] |= what
		}
		a.mu.Unlock()
		switch {
		case o != nil:
			a.tell(o, h, what)
		case closed && what&earlyGone != 0:
			// The end of a session this side closed through its tx
			// fifo before the daemon saw the mark: the daemon keeps
			// its fifos until told they are free.
			a.ackEnded(h)
		}
	case fifo.EventLocalAddr:
		if se.Local.IsValid() {
			a.mu.Lock()
			a.localOf[h] = se.Local
			a.mu.Unlock()
		}
	case fifo.EventError:
		a.mu.Lock()
		eo, ok := a.owners[h].(errorOwner)
		if !ok {
			// A listener's own error (a PacketConn's don't-fragment drop).
			eo, ok = a.acceptors[h].(errorOwner)
		}
		a.mu.Unlock()
		if ok && ev.Arg32 != 0 {
			eo.peerError(h, syscall.Errno(ev.Arg32))
		}
	case fifo.EventAccepted:
		if se.CutThrough {
			return
		}
		rx, tx, ok, err := a.segFifos(se.Rx, se.Tx)
		if !ok {
			a.parked = append(a.parked, *ev)
			return
		}
		a.renamed(h)
		ln := flow.Handle(se.Listener)
		a.mu.Lock()
		acc := a.acceptors[ln]
		a.mu.Unlock()
		stream := flow.Transport(se.Transport) == flow.TransportTCP
		if err == nil && acc == nil && a.bindsInFlight() {
			a.parked = append(a.parked, *ev) // its listener's Listen has not registered it yet
			return
		}
		if err != nil || acc == nil {
			a.refuse(h, stream)
			return
		}
		e := &end{h: h, rx: rx, tx: tx, signalFD: a.kick(h.Worker()), sleeping: a.sleepFlag(h.Worker()), datapath: true,
			dgram: !stream}
		info := &api.SessionInfo{Handle: h, Worker: h.Worker()}
		if p := se.Peer; p.IsValid() {
			info.Remote = flow.Endpoint{Transport: flow.Transport(se.Transport), Addr: p.Addr(), Port: p.Port()}
		}
		if l, ok := a.takeLocal(h); ok {
			info.Local = flow.Endpoint{Transport: flow.Transport(se.Transport), Addr: l.Addr(), Port: l.Port()}
		}
		if !acc.accept(e, info) {
			a.refuse(h, stream)
		}
	case fifo.EventConnected, fifo.EventConnectFailed:
		if se.CutThrough {
			return
		}
		var res connectResult
		if se.Type == fifo.EventConnected {
			res.h = h
			res.rx, res.tx = se.Rx, se.Tx
			res.localPort = se.LocalPort
			res.local, _ = a.takeLocal(h)
			a.mu.Lock()
			_, ok1 := a.segs[res.rx.Segment]
			_, ok2 := a.segs[res.tx.Segment]
			a.mu.Unlock()
			if !ok1 || !ok2 {
				a.parked = append(a.parked, *ev)
				return
			}
			a.renamed(h)
		} else {
			code := flow.Code(se.Code)
			if err, ok := code.Err(); ok && err != nil {
				res.err = err
			} else {
				res.err = flow.ErrConnect
			}
		}
		// Handed over under a.mu (ch has room for the one result), so
		// that a dial giving up finds it (DialConn).
		a.mu.Lock()
		ch := a.dials[se.Opaque]
		delete(a.dials, se.Opaque)
		if ch != nil {
			ch <- res
		}
		a.mu.Unlock()
		if ch == nil && se.Type == fifo.EventConnected {
			a.drop(h) // nobody waits for it any more
		}
	}
}

// takeLocal returns and forgets the local address the daemon sent for
// session h.
func (a *App) takeLocal(h flow.Handle) (netip.AddrPort, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.localOf[h]
	delete(a.localOf, h)
	return l, ok
}

// addAcceptor registers acc for the listener h bound on ep; a listener on
// the zero address is also in its namespace's local table (for an app with
// local scope), where cut-through sessions name it by its local handle.
func (a *App) addAcceptor(h flow.Handle, ep flow.Endpoint, acc acceptor) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.acceptors[h] = acc
	if ep.IsZero() {
		fam := flow.Family4
		if ep.Addr.Is6() && !ep.Addr.Is4In6() {
			fam = flow.Family6
		}
		if lh := flow.LocalListenerHandle(ep.Transport, fam, ep.Port); lh != h {
			a.acceptors[lh] = acc
		}
	}
}

// delAcceptor forgets acc under every handle it was registered for.
func (a *App) delAcceptor(acc acceptor) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, v := range a.acceptors {
		if v == acc {
			delete(a.acceptors, k)
		}
	}
}

// drop closes session h, which this side never owned (no Conn has it):
// what was kept of its events (its end, its local address) goes, and later
// ones are not kept (dropped).
func (a *App) drop(h flow.Handle) {
	a.forget(h)
	go a.disconnect(h)
}

// refuse closes session h, accepted on a listener that does not take it
// (closed meanwhile, or gone), as drop does; a stream is reset, as a
// kernel listener's close resets the connections it had not handed over
// (a daemon before protocol 2.1, which has no Abort, closes it in order).
func (a *App) refuse(h flow.Handle, stream bool) {
	a.forget(h)
	go func() {
		if stream && a.canAbort() && a.endSession(&api.Abort{Handle: h}) == nil {
			return
		}
		a.disconnect(h)
	}()
}

// forget drops what was kept of the events of session h, which this side
// never owned, and keeps none of its later ones.
func (a *App) forget(h flow.Handle) {
	a.mu.Lock()
	delete(a.goneEarly, h)
	delete(a.localOf, h)
	a.dropped.add(h)
	a.mu.Unlock()
}

// handleSet is a set of handles that keeps the last 2×handleSetGen added:
// two generations, the older forgotten when the newer fills.
type handleSet struct{ cur, old map[flow.Handle]struct{} }

const handleSetGen = 4096

func (s *handleSet) add(h flow.Handle) {
	if s.cur == nil {
		s.cur = map[flow.Handle]struct{}{}
	}
	if len(s.cur) >= handleSetGen {
		s.old, s.cur = s.cur, map[flow.Handle]struct{}{}
	}
	s.cur[h] = struct{}{}
}

func (s *handleSet) has(h flow.Handle) bool {
	_, a := s.cur[h]
	_, b := s.old[h]
	return a || b
}

func (s *handleSet) del(h flow.Handle) {
	delete(s.cur, h)
	delete(s.old, h)
}

// disconnect closes session h in the daemon, for sessions nobody takes.
func (a *App) disconnect(h flow.Handle) { _ = a.endSession(&api.Disconnect{Handle: h}) }

// endSession sends m (Disconnect or Abort) for a session of the app; a
// session the daemon no longer has is no error.
func (a *App) endSession(m api.Message) error {
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	_, fds, err := a.call(ctx, m)
	api.CloseFDs(fds)
	if err != nil && !errorIsNoSession(err) {
		return err
	}
	return nil
}

// canAbort reports whether the daemon has Abort (protocol 2.1 and later).
func (a *App) canAbort() bool { return a.cl.Server().Minor >= 1 }

// onNotice handles the daemon's notices, on the control connection's
// receiving goroutine; it owns fds.
func (a *App) onNotice(m api.Message, fds []int) {
	switch n := m.(type) {
	case *api.SegmentAdded:
		if len(fds) != len(n.Segments) {
			// Not arrived (errFDsLost): the sessions whose fifos are
			// in them fail as they are mapped.
			api.CloseFDs(fds)
			break
		}
		for i, s := range n.Segments {
			seg, err := fifo.MapSegment(fds[i])
			if err != nil {
				unix.Close(fds[i])
				continue
			}
			a.mu.Lock()
			if a.segs[s.Index] != nil {
				// An index the daemon gave already: its fifos may be in
				// use, so the mapping stays and the new one goes.
				a.mu.Unlock()
				seg.Close()
				continue
			}
			a.segs[s.Index] = seg
			a.mu.Unlock()
		}
		a.evmu.Lock()
		a.replayParked()
		a.evmu.Unlock()
	case *api.Accepted:
		a.onAccepted(n, fds)
	case *api.Shutdown:
		// Stop first, then hang up: the daemon waits for its apps to hang
		// up before it detaches them, so that no call here sees a peer
		// go away before it sees the daemon go.
		reason := n.Reason
		if reason == "" {
			reason = "the daemon is shutting down"
		}
		a.fail(reason)
		go a.cl.Close()
	default:
		api.CloseFDs(fds)
	}
}

// onAccepted takes a cut-through session accepted on one of the app's
// listeners.
func (a *App) onAccepted(n *api.Accepted, fds []int) {
	if !n.CutThrough {
		api.CloseFDs(fds)
		return
	}
	if len(fds) != 2 {
		// Its descriptors did not arrive (errFDsLost): the session ends
		// here, as one the listener cannot take.
		api.CloseFDs(fds)
		a.drop(n.Handle)
		return
	}
	e, err := newCTEnd(&n.SessionInfo, fds[0], fds[1])
	if err != nil {
		a.drop(n.Handle)
		return
	}
	a.evmu.Lock()
	a.drainLocked()
	a.acceptCTLocked(ctAccept{e: e, info: n.SessionInfo, ln: n.Listener})
	a.evmu.Unlock()
}

// ctAccept is a cut-through session accepted on listener ln.
type ctAccept struct {
	e    *end
	info api.SessionInfo
	ln   flow.Handle
}

// acceptCTLocked hands c to its listener, or (while a Listen has not
// registered its listener yet) keeps it for endBind, or refuses it. evmu
// is held.
func (a *App) acceptCTLocked(c ctAccept) {
	a.mu.Lock()
	acc := a.acceptors[c.ln]
	wait := acc == nil && a.binding > 0
	a.mu.Unlock()
	if wait {
		a.ctEarly = append(a.ctEarly, c)
		return
	}
	if acc == nil || !acc.accept(c.e, &c.info) {
		c.e.close()
		a.refuse(c.info.Handle, c.info.Local.Transport == flow.TransportTCP || c.info.Remote.Transport == flow.TransportTCP)
	}
}

// bindsInFlight reports whether a Listen or ListenPacket has bound and not
// yet registered its acceptors.
func (a *App) bindsInFlight() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.binding > 0
}

// beginBind marks a Listen or ListenPacket under way; endBind, once its
// acceptors are registered (or it failed), hands the accepts that came
// meanwhile to their listeners, and refuses those of none once no other
// is under way.
func (a *App) beginBind() {
	a.mu.Lock()
	a.binding++
	a.mu.Unlock()
}

func (a *App) endBind() {
	a.evmu.Lock()
	defer a.evmu.Unlock()
	a.mu.Lock()
	a.binding--
	a.mu.Unlock()
	if a.released {
		return
	}
	a.replayParked()
	early := a.ctEarly
	a.ctEarly = nil
	for _, c := range early {
		a.acceptCTLocked(c)
	}
}

// What happened to a session before its owner registered (goneEarly).
const (
	earlyGone        uint8 = 1 << iota // disconnected or reset
	earlyReset                         // reset
	earlyFIN                           // the peer closed its half of a stream
	earlyTimedOut                      // the reset was a timeout
	earlyFifoCorrupt                   // the daemon reset it for a corrupt fifo
	earlyBrokenPipe                    // the peer reset it after its FIN
	earlyResetAhead                    // reset, with data received before it still to come (fifo.EventResetAhead)
)

// tell hands owner o what happened to its session h.
func (a *App) tell(o owner, h flow.Handle, what uint8) {
	if c, ok := o.(*Conn); ok {
		c.halfClosed(what)
	}
	if what&earlyGone != 0 {
		o.peerClosed(h)
	}
}

// renamed forgets what this side kept of an earlier session with handle h
// (closed through its tx fifo, or dropped, and its owner if that has not
// unregistered yet: a Conn whose Close stored its mark and has yet to
// unregister), as the daemon's accept or connect of a new session with it
// is handled: the new session's later events, which may come before its
// owner registers (a peer's FIN right after the handshake), are its own
// and kept for it (goneEarly), not taken for the earlier session's. The
// daemon reuses a handle only once it is done with the session that had
// it, and its events come in order.
func (a *App) renamed(h flow.Handle) {
	a.mu.Lock()
	delete(a.owners, h)
	delete(a.closing, h)
	a.dropped.del(h)
	a.mu.Unlock()
}

// register records o as the owner of session h, and reports false when
// the peer already went away.
func (a *App) register(h flow.Handle, o owner) bool {
	a.mu.Lock()
	a.owners[h] = o
	delete(a.closing, h) // the handle names a new session
	a.dropped.del(h)
	what, early := a.goneEarly[h]
	delete(a.goneEarly, h)
	a.mu.Unlock()
	if early {
		if c, ok := o.(*Conn); ok {
			c.halfClosed(what)
		}
	}
	return what&earlyGone == 0
}

// closeMarked records that session h was closed through its tx fifo
// (closing); the caller then stores the mark.
func (a *App) closeMarked(h flow.Handle) {
	a.mu.Lock()
	a.closing[h] = struct{}{}
	a.mu.Unlock()
}

// ackEnded sends the Disconnect that frees the fifos of session h, which
// was closed through its tx fifo and whose end (a reset, a timeout) the
// daemon met before the mark, once: from the event handler or from the
// close, whichever learns of the end (closing).
func (a *App) ackEnded(h flow.Handle) {
	a.mu.Lock()
	_, ok := a.closing[h]
	delete(a.closing, h)
	a.mu.Unlock()
	if ok {
		go a.disconnect(h)
	}
}

func (a *App) unregister(h flow.Handle, o owner) {
	a.mu.Lock()
	if a.owners[h] == o {
		delete(a.owners, h)
	}
	a.mu.Unlock()
}
