package nsbind

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ViewOptions tune a View. The zero value is ready to use.
type ViewOptions struct {
	// ReceiveBuffer is the receive buffer (SO_RCVBUFFORCE) of the
	// subscription sockets in bytes; 0 leaves the kernel default. A larger
	// buffer makes overflows (and the resyncs they cause) rarer.
	ReceiveBuffer int
	// RetryDelay is the first pause before retrying a subscription that
	// could not be set up; it doubles up to MaxRetryDelay. Defaults: 50 ms
	// and 5 s.
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration
	// OnError, when set, is told why the view resynchronised or could not
	// subscribe. It runs on the view's goroutine and must not block.
	OnError func(error)

	// beforeApply, when set (tests only), runs on the view's goroutine
	// before each batch of updates is applied.
	beforeApply func()
}

// ViewStats are a View's counters.
type ViewStats struct {
	Gen           uint64 // generation of the current snapshot
	Resyncs       uint64 // times the view re-subscribed and re-read the namespace
	Errors        uint64 // errors the subscriptions reported
	DroppedEvents uint64 // events not delivered because a subscriber's channel was full
}

// View is a live, cached view of one network namespace's interfaces and
// addresses, kept current by rtnetlink subscriptions (links and IPv4/IPv6
// addresses). Reads go to an immutable Snapshot behind an atomic pointer,
// rebuilt on every batch of changes, so HasAddress and IsLocal are cheap,
// allocation-free and safe from any number of goroutines.
//
// When a subscription fails (its socket overflowed with ENOBUFS, or any
// receive error), the view subscribes again, re-reads the namespace with a
// fresh dump, and reports the differences as events after an EventResync.
// Subscribing happens before the dump, so no change falls between them.
//
// A View owns one goroutine (plus two per subscription inside the netlink
// library), a duplicate of the namespace descriptor and a netlink socket;
// Close releases all of them. It does not need its Namespace to stay open.
type View struct {
	fib  FIBID
	desc string
	opts ViewOptions
	nsfd int             // owned by the run goroutine, closed when it ends
	h    *netlink.Handle // for dumps; used by the run goroutine only

	cur atomic.Pointer[Snapshot]

	closing   chan struct{} // closed by Close
	finished  chan struct{} // closed when the run goroutine has released everything
	resync    chan struct{} // capacity 1: a resync was asked for
	closeOnce sync.Once

	subMu      sync.Mutex // guards subs and subsClosed
	subs       map[*subscriber]struct{}
	subsClosed bool

	resyncs, errs, dropped atomic.Uint64
	lastErr                atomic.Pointer[error]
}

type subscriber struct{ ch chan Event }

var (
	errResyncAsked = errors.New("resync asked for")
	errViewClosing = errors.New("view closing")
)

// NewView starts watching ns and returns once the first snapshot is in
// place.
func NewView(ns *Namespace, opts ViewOptions) (*View, error) {
	verb := "watch " + ns.desc
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = 50 * time.Millisecond
	}
	if opts.MaxRetryDelay < opts.RetryDelay {
		opts.MaxRetryDelay = max(5*time.Second, opts.RetryDelay)
	}
	fd, err := ns.dupFD()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	h, err := netlink.NewHandleAt(nsHandle(fd), unix.NETLINK_ROUTE)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: netlink: %w", verb, err)
	}
	if err := h.SetSocketTimeout(requestTimeout); err != nil {
		h.Close()
		unix.Close(fd)
		return nil, fmt.Errorf("%s: netlink timeout: %w", verb, err)
	}
	v := &View{
		fib:      ns.fib,
		desc:     ns.desc,
		opts:     opts,
		nsfd:     fd,
		h:        h,
		closing:  make(chan struct{}),
		finished: make(chan struct{}),
		resync:   make(chan struct{}, 1),
		subs:     map[*subscriber]struct{}{},
	}
	ready := make(chan error, 1)
	go v.run(ready)
	if err := <-ready; err != nil {
		<-v.finished
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	return v, nil
}

// FIB returns the FIB id of the watched namespace.
func (v *View) FIB() FIBID { return v.fib }

// String names the watched namespace.
func (v *View) String() string { return v.desc }

// Snapshot returns the current snapshot. After Close it is the last one.
func (v *View) Snapshot() *Snapshot { return v.cur.Load() }

// HasAddress reports whether a is currently an address of interface
// ifindex of the namespace.
func (v *View) HasAddress(ifindex int, a netip.Addr) bool {
	return v.cur.Load().HasAddress(ifindex, a)
}

// IsLocal reports whether a is currently an address of the namespace of
// fib (any interface, or loopback); false when fib is not this view's.
func (v *View) IsLocal(fib FIBID, a netip.Addr) bool {
	return v.cur.Load().IsLocal(fib, a)
}

// WaitFor waits until cond holds for the current snapshot and returns that
// snapshot. cond is called on each new snapshot, from the caller's
// goroutine. It returns ctx's error when ctx ends first, and ErrClosed when
// the view is closed with cond still false.
func (v *View) WaitFor(ctx context.Context, cond func(*Snapshot) bool) (*Snapshot, error) {
	for {
		s := v.cur.Load()
		if cond(s) {
			return s, nil
		}
		select {
		case <-s.next:
		case <-ctx.Done():
			return s, fmt.Errorf("wait for %s: %w", v.desc, ctx.Err())
		case <-v.finished:
			if s = v.cur.Load(); cond(s) {
				return s, nil
			}
			return s, fmt.Errorf("wait for %s: %w", v.desc, ErrClosed)
		}
	}
}

// Subscribe returns a channel of the view's events and a function that
// ends the subscription and closes the channel. Events are sent without
// blocking: when the channel (of capacity buffer; 0 means 64) is full, the
// event is dropped and counted in Stats. Close closes every channel.
func (v *View) Subscribe(buffer int) (<-chan Event, func()) {
	if buffer <= 0 {
		buffer = 64
	}
	s := &subscriber{ch: make(chan Event, buffer)}
	v.subMu.Lock()
	defer v.subMu.Unlock()
	if v.subsClosed {
		close(s.ch)
		return s.ch, func() {}
	}
	v.subs[s] = struct{}{}
	return s.ch, sync.OnceFunc(func() {
		v.subMu.Lock()
		defer v.subMu.Unlock()
		if _, ok := v.subs[s]; ok {
			delete(v.subs, s)
			close(s.ch)
		}
	})
}

// Resync makes the view drop its subscriptions, subscribe again and re-read
// the namespace, as it does by itself after an overflow. It does not wait.
func (v *View) Resync() {
	select {
	case v.resync <- struct{}{}:
	default:
	}
}

// Stats returns the view's counters.
func (v *View) Stats() ViewStats {
	return ViewStats{
		Gen:           v.cur.Load().gen,
		Resyncs:       v.resyncs.Load(),
		Errors:        v.errs.Load(),
		DroppedEvents: v.dropped.Load(),
	}
}

// LastError returns the last error a subscription reported, or nil.
func (v *View) LastError() error {
	if p := v.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Close stops the view, waits for its goroutines and closes its
// descriptors and subscriber channels. The last snapshot stays readable.
// It is safe to call more than once.
func (v *View) Close() error {
	v.closeOnce.Do(func() { close(v.closing) })
	<-v.finished
	return nil
}

func (v *View) noteError(err error) {
	v.errs.Add(1)
	v.lastErr.Store(&err)
}

func (v *View) tell(err error) {
	if v.opts.OnError != nil {
		v.opts.OnError(err)
	}
}

// run is the view's goroutine. It sends the outcome of the first
// synchronisation on ready.
func (v *View) run(ready chan<- error) {
	defer close(v.finished)
	defer func() {
		v.h.Close()
		unix.Close(v.nsfd)
		v.subMu.Lock()
		v.subsClosed = true
		for s := range v.subs {
			close(s.ch)
		}
		clear(v.subs)
		v.subMu.Unlock()
	}()
	delay := v.opts.RetryDelay
	first := true
	for {
		synced, err := v.session(first, ready)
		if first && !synced {
			ready <- err
			return
		}
		first = false
		if errors.Is(err, errViewClosing) {
			return
		}
		v.resyncs.Add(1)
		if synced {
			delay = v.opts.RetryDelay
		}
		if errors.Is(err, errResyncAsked) {
			continue
		}
		if last := v.LastError(); last != nil {
			err = fmt.Errorf("%w (last subscription error: %w)", err, last)
		}
		v.tell(fmt.Errorf("watch %s: resync: %w", v.desc, err))
		t := time.NewTimer(delay)
		select {
		case <-v.closing:
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, v.opts.MaxRetryDelay)
	}
}

// session subscribes, dumps, publishes (and on the first session reports
// success on ready), and then applies updates until a subscription ends, a
// resync is asked for or the view closes. synced says whether it got as far
// as publishing the dump.
func (v *View) session(first bool, ready chan<- error) (synced bool, err error) {
	var stopping stopFlag
	done := make(chan struct{})
	linkCh := make(chan netlink.LinkUpdate, 64)
	addrCh := make(chan netlink.AddrUpdate, 256)
	var drains []func()
	defer func() {
		stopping.stop()
		close(done)
		for _, d := range drains {
			d()
		}
	}()
	cb := func(err error) {
		if !stopping.stopped() {
			v.noteError(err)
		}
	}
	nsh := nsHandle(v.nsfd)
	force := v.opts.ReceiveBuffer > 0
	err = netlink.LinkSubscribeWithOptions(linkCh, done, netlink.LinkSubscribeOptions{
		Namespace: &nsh, ErrorCallback: cb,
		ReceiveBufferSize: v.opts.ReceiveBuffer, ReceiveBufferForceSize: force,
	})
	if err != nil {
		return false, fmt.Errorf("subscribe to links: %w", err)
	}
	drains = append(drains, func() {
		for range linkCh {
		}
	})
	err = netlink.AddrSubscribeWithOptions(addrCh, done, netlink.AddrSubscribeOptions{
		Namespace: &nsh, ErrorCallback: cb,
		ReceiveBufferSize: v.opts.ReceiveBuffer, ReceiveBufferForceSize: force,
	})
	if err != nil {
		return false, fmt.Errorf("subscribe to addresses: %w", err)
	}
	drains = append(drains, func() {
		for range addrCh {
		}
	})
	st, err := v.dump()
	if err != nil {
		return false, err
	}
	v.publish(st, !first)
	if first {
		ready <- nil
	}

	// ended is set when a subscription's channel closed.
	var ended error
	link := func(u netlink.LinkUpdate, ok bool) bool {
		if !ok {
			ended = errors.New("link subscription ended")
			return false
		}
		st.applyLink(u)
		return true
	}
	addr := func(u netlink.AddrUpdate, ok bool) bool {
		if !ok {
			ended = errors.New("address subscription ended")
			return false
		}
		st.applyAddr(u)
		return true
	}
	for {
		var applied bool
		select {
		case <-v.closing:
			return true, errViewClosing
		case <-v.resync:
			return true, errResyncAsked
		case u, ok := <-linkCh:
			if v.opts.beforeApply != nil {
				v.opts.beforeApply()
			}
			applied = link(u, ok)
		case u, ok := <-addrCh:
			if v.opts.beforeApply != nil {
				v.opts.beforeApply()
			}
			applied = addr(u, ok)
		}
		// Coalesce what is already queued into one snapshot.
		for n := 0; applied && n < 1024; n++ {
			select {
			case u, ok := <-linkCh:
				applied = link(u, ok)
			case u, ok := <-addrCh:
				applied = addr(u, ok)
			default:
				applied = false
			}
		}
		v.publish(st, false)
		if ended != nil {
			return true, ended
		}
	}
}

// dump reads the namespace's links and addresses into a fresh state.
func (v *View) dump() (*viewState, error) {
	st := newViewState()
	ls, err := listLinks(v.h)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range ls {
		if idx := l.Attrs().Index; idx > 0 {
			st.links[idx] = interfaceOf(l)
		}
	}
	as, err := listAddrs(v.h, nil)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range as {
		if p, ok := prefixOf(a.IPNet); ok && a.LinkIndex > 0 {
			st.setAddr(a.LinkIndex, p, uint32(a.Flags), true)
		}
	}
	return st, nil
}

// publish installs a snapshot of st and sends the events that lead to it,
// after an EventResync when resync is set. The snapshot is in place before
// any of its events is sent.
func (v *View) publish(st *viewState, resync bool) {
	old := v.cur.Load()
	var gen uint64 = 1
	if old != nil {
		gen = old.gen + 1
	}
	s := st.snapshot(v.fib, gen)
	evs := diff(old, s)
	v.cur.Store(s)
	if old != nil {
		close(old.next)
	}
	if resync {
		evs = append([]Event{{Kind: EventResync, FIB: v.fib, Gen: gen}}, evs...)
	}
	if len(evs) == 0 {
		return
	}
	v.subMu.Lock()
	defer v.subMu.Unlock()
	for sub := range v.subs {
		for _, e := range evs {
			select {
			case sub.ch <- e:
			default:
				v.dropped.Add(1)
			}
		}
	}
}
