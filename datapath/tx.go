package datapath

import (
	"net/netip"
	"slices"
	"time"

	"github.com/xsessiond/xsessiond/datapath/frame"
	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/datapath/xsk"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// Tx tuning.
const (
	payOff       = frame.MaxHeaderLen // where a datagram's payload is read into a UMEM frame
	maxHeld      = 256                // datagrams a worker holds while their next hop resolves
	maxHeldBy    = maxHeld / 4        // of which one session or listener may hold, and an app once they are all taken (hold)
	holdFor      = time.Second        // how long one is held before it is dropped
	localTTL     = time.Second        // a worker's own cache entry of a resolved next hop
	localNegTTL  = 20 * time.Millisecond
	maxTemplates = 4096
)

// tplKey names a header template: both ends, the next hop's MAC and
// whether IPv4's DF bit is set.
type tplKey struct {
	src, dst     [16]byte
	sport, dport uint16
	fam          uint8
	df           bool
	mac          [6]byte
}

// nbLocal is a worker's cached view of a resolver result.
type nbLocal struct {
	res   nbResult
	until time.Time
}

// held is a datagram waiting for its next hop, its payload already in a
// UMEM frame at payOff.
type held struct {
	addr uint64
	plen int
	t    *udp.Target
	key  nbKey
	src  netip.Addr
	// srcOwn: src is an address of the interface (destination looked),
	// so the route is looked up from it; one that is not is dropped as
	// tx_bad_source unless it goes to the host itself (send).
	srcOwn bool
	sport  uint16
	dport  uint16
	df     bool // don't fragment (fifo.DgramFlagDontFragment)
	// kernel: held for room in the kernel path's socket of its session
	// (txKernel), or behind a datagram that is; else for a neighbour.
	// refused: the socket refused this one (counted once).
	kernel, refused bool
	since           time.Time
}

// txState is a worker's transmit side. Worker goroutine only.
type txState struct {
	w      *worker
	srcMAC [6]byte
	mtu    int
	free   []uint64 // UMEM frames allocated and not used yet
	descs  []xsk.Desc
	// owners are the datagrams of descs, index by index: their Target
	// (nil for a TCP segment, which gVisor sends again) and payload
	// length, counted sent once on the ring (flush).
	owners    []txOwner
	oob       [64]byte // txKernel's control message
	nb        map[nbKey]nbLocal
	nbGen     uint64 // the resolver's gen when nb was last cleared
	tpls      map[tplKey]*frame.Template
	lastK     tplKey
	lastT     *frame.Template
	held      []held
	heldBy    map[*udp.Target]int    // len(held) by target
	heldByApp map[sessions.AppID]int // len(held) by app
	// kernelTry is when the held datagrams waiting for room in a kernel
	// socket (held.kernel) were last tried.
	kernelTry time.Time
	// waiting are the Targets whose next datagram, larger than a frame,
	// waits in Tx for room in their kernel socket (kernelpath.go), since
	// waitSince.
	waiting   []*udp.Target
	waitSince time.Time
	now       time.Time
	hdr       fifo.DgramHeader

	roomSignals []*fifo.EventQueue // apps told of room in a tx fifo after this drain's flush
}

func (x *txState) init(w *worker) {
	x.w = w
	copy(x.srcMAC[:], w.e.ifc.MAC)
	x.mtu = w.e.ifc.MTU
	if x.mtu <= 0 {
		x.mtu = 1500
	}
	x.free = make([]uint64, 0, w.batch)
	x.descs = make([]xsk.Desc, 0, w.batch)
	x.owners = make([]txOwner, 0, w.batch)
	x.nb = map[nbKey]nbLocal{}
	x.tpls = map[tplKey]*frame.Template{}
	x.held = make([]held, 0, maxHeld)
	x.heldBy = make(map[*udp.Target]int)
	x.heldByApp = make(map[sessions.AppID]int)
}

// pending reports whether frames wait for the kernel or a neighbour.
func (x *txState) pending() bool {
	a := x.w.sock.Accounting()
	return a.Tx > 0 || len(x.held) > 0
}

// drainTx drains the tx fifos of the worker's Targets whose event flag is
// set (or that had more than one drain's worth queued) and reports whether
// it did anything.
func (w *worker) drainTx() bool {
	if len(w.own) == 0 {
		return false
	}
	x := &w.tx
	if len(x.held) > 0 {
		x.retryHeld() // what waited goes before what follows it
	}
	x.now = time.Now()
	x.retryWaiting()
	busy := false
	for _, t := range w.own {
		ev := t.Tx.HasEvent()
		if t.Dead() || (!t.More && !ev) {
			continue
		}
		if ev {
			t.Tx.ClearEvent()
		}
		head := t.Tx.Consumed()
		n, more := x.drain(t, w.batch)
		if ev && n > 0 {
			w.apps.took(t.App)
		}
		t.More = more
		busy = busy || n > 0 || more
		// A writer waiting for room asked to be told of dequeues (the
		// app library asks while its tx fifo is full): wake the app.
		if t.Tx.DeqNotify(int(t.Tx.Consumed()-head)) && t.Events != nil {
			x.roomSignals = append(x.roomSignals, t.Events)
		}
	}
	x.flush()
	for i, q := range x.roomSignals {
		_ = q.Signal()
		x.roomSignals[i] = nil
	}
	x.roomSignals = x.roomSignals[:0]
	return busy
}

// frame takes a free UMEM frame.
func (x *txState) frame() (uint64, bool) {
	if len(x.free) == 0 {
		x.free = x.free[:cap(x.free)]
		n := x.w.sock.AllocFrames(x.free)
		if n == 0 {
			x.w.sock.Complete()
			n = x.w.sock.AllocFrames(x.free)
		}
		x.free = x.free[:n]
		if n == 0 {
			return 0, false
		}
	}
	a := x.free[len(x.free)-1]
	x.free = x.free[:len(x.free)-1]
	return a, true
}

// unframe gives back the frame that a, an address anywhere in it (a queued
// descriptor's starts past the headroom), is in.
func (x *txState) unframe(a uint64) {
	x.free = append(x.free, a&^uint64(x.w.sock.FrameSize()-1))
}

// drain sends up to budget datagrams of t's Tx fifo; more reports that it
// stopped with datagrams left.
func (x *txState) drain(t *udp.Target, budget int) (n int, more bool) {
	w := x.w
	h := &x.hdr
	for n < budget {
		if len(x.held) > 0 && (x.heldBy[t] >= maxHeldBy || len(x.held) == cap(x.held) && x.heldByApp[t.App] >= maxHeldBy) {
			// This target's share of the hold slots, or its app's once
			// every slot is taken, waits for a neighbour or for room in
			// a kernel socket: leave the rest in the fifo (the app sees
			// back-pressure) rather than drop, and look again
			// kernelRetry later rather than spin. An app holding less
			// goes on: a datagram of it that must wait takes the slot of
			// an app holding more (hold).
			x.wait(t, false)
			return n, false
		}
		addr, ok := x.frame()
		if !ok {
			return n, true // no frame free: the datagrams wait in the fifo
		}
		buf := w.sock.Buffer(addr)
		if len(buf) <= payOff {
			x.unframe(addr)
			return n, false
		}
		plen, err := t.Tx.DequeueDgram(h, buf[payOff:])
		switch err {
		case nil:
		case fifo.ErrEmpty:
			x.unframe(addr)
			return n, false
		case fifo.ErrShortBuffer:
			x.unframe(addr)
			switch r := w.txBig(t, h); r {
			case kernelDone:
				n++
				continue
			case kernelFull, kernelBehind:
				x.wait(t, r == kernelFull) // it and what follows it stay in the fifo
				return n, false
			}
			if _, err := t.Tx.DropDgram(); err != nil {
				w.c.Drops[dropTxCorrupt]++
				t.TxCorrupt.Add(1)
				return n, false
			}
			w.c.Drops[dropTxTooLong]++
			t.TxDrops.Add(1)
			n++
			continue
		default:
			x.unframe(addr)
			w.c.Drops[dropTxCorrupt]++
			t.TxCorrupt.Add(1)
			return n, false
		}
		n++
		var hd held
		if !x.destination(t, h, &hd) {
			x.unframe(addr)
			w.c.Drops[dropTxBadHeader]++
			t.TxDrops.Add(1)
			continue
		}
		hd.addr, hd.plen, hd.t = addr, plen, t
		x.send(&hd, true)
	}
	return n, t.Tx.MaxDequeue() > 0
}

// destination fills hd's addresses, ports and flags for a datagram of t
// with header h, and reports whether they are usable. A loopback
// destination is: the resolver finds its route through the loopback
// interface, and send drops it as no-route, as it drops one to an
// address of the host (no kernel socket of the host hears the datapath).
func (x *txState) destination(t *udp.Target, h *fifo.DgramHeader, hd *held) bool {
	hd.df = h.Flags&fifo.DgramFlagDontFragment != 0
	if t.Kind == udp.KindConnected {
		hd.key = nbKey{addr: flow.AddrBytes(t.Remote.Addr()), fam: t.Family}
		x.source(hd, t.Local.Addr())
		hd.sport, hd.dport = t.Local.Port(), t.Remote.Port()
		return true
	}
	if h.Family != t.Family || h.RemotePort == 0 {
		return false
	}
	dst := flow.AddrFrom(h.Remote, h.Family)
	if !dst.IsValid() {
		return false
	}
	hd.key = nbKey{addr: flow.AddrBytes(dst), fam: h.Family}
	hd.dport = h.RemotePort
	hd.sport = t.Local.Port()
	if hd.sport == 0 {
		hd.sport = h.LocalPort
		if hd.sport == 0 {
			return false
		}
	}
	var zero [16]byte
	switch {
	case h.Local != zero:
		x.source(hd, flow.AddrFrom(h.Local, h.Family))
	case !t.Local.Addr().IsUnspecified():
		x.source(hd, t.Local.Addr())
	default:
		x.source(hd, netip.Addr{}) // the route's source
	}
	return true
}

// source sets hd's source address, src (invalid: the route's), and
// whether it is the interface's, from which its route is looked up (the
// kernel routes a packet of a socket bound there by the policy rules of
// its source). A source that is not (loopback, to the host itself; one
// the app made up) keeps the route of the destination alone: send drops
// it as tx_bad_source unless the host itself is its destination.
func (x *txState) source(hd *held, src netip.Addr) {
	hd.src, hd.srcOwn = src, src.IsValid() && x.w.hasAddress(src)
	if hd.srcOwn {
		hd.key = hd.key.withSrc(src)
	} else {
		hd.key = hd.key.withSrc(netip.Addr{})
	}
}

// neighbour returns what the worker knows of k's next hop, asking the
// resolver on a miss.
func (x *txState) neighbour(k nbKey) nbResult {
	if g := x.w.e.res.gen.Load(); g != x.nbGen {
		clear(x.nb) // a next hop moved (resolver.changed)
		x.nbGen = g
	}
	if e, ok := x.nb[k]; ok && x.now.Before(e.until) {
		return e.res
	}
	var r nbResult
	if x.w.knownLocal(k.Addr()) {
		// Answered here, not by the resolver: a datagram to the host
		// itself is never held for a resolution (a Close waits for
		// the tx fifo, not for what the worker holds).
		r = nbResult{ok: true, local: true, at: x.now, nh: k.Addr()}
	} else {
		r = x.w.e.res.get(k, x.now)
	}
	ttl := localTTL
	if !r.ok {
		ttl = localNegTTL
	}
	if len(x.nb) > 65536 {
		clear(x.nb)
	}
	x.nb[k] = nbLocal{res: r, until: x.now.Add(ttl)}
	return r
}

// send builds hd's frame and queues it for transmit, or holds it while the
// next hop resolves or while the kernel path's socket has no room (fresh:
// not held before), or drops it. It reports whether hd is (still) held.
func (x *txState) send(hd *held, fresh bool) bool {
	w := x.w
	nb := x.neighbour(hd.key)
	if nb.ok && fresh {
		if h := x.holder(hd); h != nil {
			// An earlier datagram still waits (holds): queue behind it
			// rather than overtake it, held for what it waits for.
			nb = nbResult{}
			hd.kernel = h.kernel
		}
	}
	if !nb.ok {
		switch {
		case nb.failed && nb.noRoute:
			x.drop(hd, dropNoRoute)
		case fresh:
			return x.hold(hd)
		default:
			return true // retried by retryHeld
		}
		return false
	}
	if nb.local {
		// To an address of this host (one of the namespace's, or
		// loopback): through the kernel, which delivers it to the
		// host's socket of that port, a kernel socket's or another
		// app's reservation, from the listener's port and the source
		// the app gave or the kernel picks, as a kernel socket's
		// datagram to its own host. Out of the link it would reach no
		// one.
		//
		// Only for an app in the interface's namespace, which could
		// reach the host's sockets with a kernel socket of its own
		// (Engine.SetAppNetns, as the Target was made: a datagram
		// written before its app left goes as it would have); else
		// dropped, counted as no-route.
		if hd.t.KernelSocket() == nil || !hd.t.HostReach {
			x.drop(hd, dropNoRoute)
			return false
		}
		return x.sendKernel(hd, fresh)
	}
	src := hd.src
	switch {
	case src.IsValid() && !hd.srcOwn:
		x.drop(hd, dropTxBadSource)
		return false
	case !src.IsValid():
		src = nb.src
		if !src.IsValid() {
			x.drop(hd, dropNoRoute)
			return false
		}
		if !w.hasAddress(src) {
			x.drop(hd, dropTxBadSource)
			return false
		}
	}
	if nb.multicast || nb.broadcast {
		// A datagram to a multicast group goes through the kernel,
		// whatever its size: the kernel sends it with the socket's
		// multicast TTL or hop limit (1 by default) and gives a copy to
		// the host's sockets that joined the group (IP_MULTICAST_LOOP),
		// as an app's kernel socket does. So does a broadcast: the kernel
		// gives the host's sockets of its port a copy of every broadcast
		// it sends, which a frame on the wire would not.
		return x.sendKernel(hd, fresh)
	}
	tpl := x.template(tplKey{src: flow.AddrBytes(src), dst: hd.key.addr, sport: hd.sport, dport: hd.dport, fam: hd.key.fam,
		df: hd.df && hd.key.fam == flow.Family4, mac: nb.mac}, src, hd.key.Addr())
	if tpl == nil {
		x.drop(hd, dropTxBadHeader)
		return false
	}
	hl := tpl.HeaderLen()
	mtu := x.mtu
	if nb.mtu > 0 && nb.mtu < mtu {
		mtu = nb.mtu // the path MTU the kernel learned: the kernel path fragments to it
	}
	if hd.plen > tpl.MaxPayload() || hl-frame.EthHeaderLen+hd.plen > mtu {
		if hd.df {
			// Larger than the path MTU, and the app asked for no
			// fragments: as a kernel socket with IP_PMTUDISC_DO, refuse.
			x.unframe(hd.addr)
			w.tooBig(hd.t)
			return false
		}
		return x.sendKernel(hd, fresh)
	}
	buf := w.sock.Buffer(hd.addr)
	start := payOff - hl
	flen, err := tpl.BuildInPlace(buf[start:], hd.plen)
	if err != nil {
		x.drop(hd, dropTxTooLong)
		return false
	}
	w.cap.tx(w.q, buf[start:start+flen], hd.t)
	x.queue(xsk.Desc{Addr: hd.addr + uint64(start), Len: uint32(flen)}, hd.t, hd.plen)
	if len(x.descs) == cap(x.descs) {
		x.flush()
	}
	return false
}

// sendKernel sends hd through its session's kernel socket (txKernel),
// after the frames queued before it, or holds it (fresh) while that
// socket has no room. It reports whether hd is (still) held.
func (x *txState) sendKernel(hd *held, fresh bool) bool {
	w := x.w
	x.flush() // the frames queued before it leave first
	switch w.txKernel(hd.t, hd, w.sock.Buffer(hd.addr)[payOff:payOff+hd.plen]) {
	case kernelDone:
		x.unframe(hd.addr)
		return false
	case kernelFull:
		hd.kernel = true
		if !hd.refused {
			hd.refused = true
			w.c.TxKernelWaits++ // once per datagram
		}
		if fresh {
			return x.hold(hd)
		}
		return true
	}
	x.drop(hd, dropTxTooLong)
	return false
}

func (x *txState) drop(hd *held, why int) {
	x.w.c.Drops[why]++
	hd.t.TxDrops.Add(1)
	x.unframe(hd.addr)
}

// hasAddress reports whether a is an address of the worker's interface
// (any address when the engine follows none).
func (w *worker) hasAddress(a netip.Addr) bool {
	as := w.e.cfg.Addrs
	return as == nil || as.HasAddress(w.e.ifc.Index, a)
}

// template returns the header template for k, preparing it on a miss.
func (x *txState) template(k tplKey, src, dst netip.Addr) *frame.Template {
	if x.lastT != nil && x.lastK == k {
		return x.lastT
	}
	t := x.tpls[k]
	if t == nil {
		t = new(frame.Template)
		hop := x.w.e.hop[0]
		if k.fam == flow.Family6 {
			hop = x.w.e.hop[1]
		}
		if err := t.Prepare(frame.Spec{DstMAC: k.mac[:], SrcMAC: x.srcMAC[:], Src: src, Dst: dst, SrcPort: k.sport, DstPort: k.dport, DontFragment: k.df,
			HopLimit: hop}); err != nil {
			return nil
		}
		if len(x.tpls) >= maxTemplates {
			clear(x.tpls)
		}
		x.tpls[k] = t
	}
	x.lastK, x.lastT = k, t
	return t
}

// txOwner is the datagram of a queued frame (txState.owners).
type txOwner struct {
	t    *udp.Target
	plen int
}

// queue adds frame d to those flush puts on the ring: a datagram of t's
// (nil: a TCP segment) with plen bytes of payload.
func (x *txState) queue(d xsk.Desc, t *udp.Target, plen int) {
	x.descs = append(x.descs, d)
	x.owners = append(x.owners, txOwner{t, plen})
}

// flush puts the queued frames on the tx ring, and counts each datagram
// sent by its Target as it goes on.
func (x *txState) flush() {
	w := x.w
	for tries := 0; len(x.descs) > 0; tries++ {
		n := w.sock.Transmit(x.descs)
		w.c.Tx += uint64(n)
		for _, o := range x.owners[:n] {
			if o.t != nil {
				o.t.Sent.Add(1)
				o.t.TxBytes.Add(uint64(o.plen))
			}
		}
		x.descs = append(x.descs[:0], x.descs[n:]...)
		x.owners = append(x.owners[:0], x.owners[n:]...)
		if len(x.descs) == 0 {
			return
		}
		if tries == 100 {
			// The ring stays full: give the frames back, each a drop
			// of its datagram's Target, not sent.
			for i, d := range x.descs {
				x.unframe(d.Addr)
				if t := x.owners[i].t; t != nil {
					t.TxDrops.Add(1)
				}
			}
			w.c.Drops[dropTxNoFrame] += uint64(len(x.descs))
			x.descs, x.owners = x.descs[:0], x.owners[:0]
			return
		}
		w.sock.Complete()
	}
}

// holder returns the first held datagram hd must queue behind (holds),
// or nil.
func (x *txState) holder(hd *held) *held {
	for i := range x.held {
		if holds(&x.held[i], hd) {
			return &x.held[i]
		}
	}
	return nil
}

// holds reports whether held datagram h holds hd, which came after it:
// h waits for the neighbour hd goes to as well, or for room in the kernel
// socket of hd's session, through which all its datagrams would pass on a
// kernel socket. Another session's full socket holds nothing of hd's.
func holds(h, hd *held) bool {
	if h.kernel {
		return h.t == hd.t
	}
	return h.key == hd.key
}

// holders are kept held datagrams as retryHeld meets them, each holding
// the ones after it (holds). Only one that no earlier one holds is noted:
// what holds it holds what it would. Past len(h), every datagram counts as
// held.
type holders struct {
	h [8]*held
	n int
}

// hold reports whether a noted datagram holds hd, or the notes are full.
func (s *holders) hold(hd *held) bool {
	if s.n == len(s.h) {
		return true
	}
	for _, h := range s.h[:s.n] {
		if holds(h, hd) {
			return true
		}
	}
	return false
}

// add notes h, kept, unless a noted one holds it already.
func (s *holders) add(h *held) {
	if !s.hold(h) {
		s.h[s.n] = h
		s.n++
	}
}

// dropReason is why hd is dropped if it is still held when its time is up
// or the worker stops: it waited for room in a kernel socket, or for its
// neighbour.
func (hd *held) dropReason() int {
	if hd.kernel {
		return dropTxKernel
	}
	return dropNoNeighbour
}

// hold keeps hd, whose payload is in a UMEM frame, for retryHeld, and
// reports whether it did. When every slot is taken (drain goes on only
// for an app holding less than maxHeldBy), hd takes the slot of the
// oldest datagram of the app holding the most, if that app holds more
// than hd's, which is dropped as the kernel drops the oldest datagram of
// a neighbour's full queue; else hd is dropped. So one app waiting for
// next hops that never answer cannot keep another's datagrams from being
// held, nor, holding every slot, its resolved datagrams in its fifo.
func (x *txState) hold(hd *held) bool {
	if len(x.held) == cap(x.held) && !x.evict(hd.t.App) {
		x.drop(hd, hd.dropReason())
		return false
	}
	hd.since = x.now
	x.held = append(x.held, *hd)
	x.heldBy[hd.t]++
	x.heldByApp[hd.t.App]++
	x.w.c.Held++
	return true
}

// evict drops the oldest held datagram of the app holding the most, if it
// holds more than app, and reports whether it did.
func (x *txState) evict(app sessions.AppID) bool {
	hog, most := app, x.heldByApp[app]
	for a, n := range x.heldByApp {
		if n > most {
			hog, most = a, n
		}
	}
	if hog == app {
		return false
	}
	i := slices.IndexFunc(x.held, func(h held) bool { return h.t.App == hog })
	if i < 0 {
		return false // not reached: heldByApp counts x.held
	}
	hd := x.held[i]
	x.drop(&hd, hd.dropReason())
	x.unhold(hd.t)
	x.held = slices.Delete(x.held, i, i+1)
	return true
}

// retryHeld sends held datagrams whose next hop resolved, or whose kernel
// socket has room again (tried every kernelRetry), and drops those held
// too long. A datagram kept holds the ones after it that it would hold
// when they were fresh (holding), so that none overtakes another.
func (x *txState) retryHeld() {
	if len(x.held) == 0 {
		return
	}
	x.now = time.Now()
	tryKernel := x.now.Sub(x.kernelTry) >= kernelRetry
	if tryKernel {
		x.kernelTry = x.now
	}
	var stuck holders // the datagrams kept so far, as they hold those after them
	// The listeners whose drain stopped at their share of the hold slots.
	var stoppedArr [4]*udp.Target
	stopped := stoppedArr[:0]
	for t, n := range x.heldBy {
		if n >= maxHeldBy && t.Kind == udp.KindListener {
			stopped = append(stopped, t)
		}
	}
	keep := x.held[:0]
	for i := range x.held {
		hd := x.held[i]
		if !stuck.hold(&hd) && (!hd.kernel || tryKernel) {
			nb := x.neighbour(hd.key)
			switch {
			case nb.ok:
				if !x.send(&hd, false) {
					x.unhold(hd.t)
					continue
				}
			case nb.failed && nb.noRoute:
				x.drop(&hd, dropNoRoute) // as send drops a fresh one
				x.unhold(hd.t)
				continue
			case !hd.kernel && slices.Contains(stopped, hd.t) && (nb.probing || nb.failed):
				// A listener at its share of the hold slots, stopped:
				// its datagrams for next hops the kernel is still
				// probing (or failed to resolve) go, so that the others
				// go on. Peers that do not answer ARP (spoofed sources
				// of the subnet) must not stall a server; a kernel
				// socket's datagrams past the neighbour entry's queue
				// are dropped too.
				x.drop(&hd, dropNoNeighbour)
				x.unhold(hd.t)
				continue
			}
		}
		if x.now.Sub(hd.since) > holdFor {
			x.drop(&hd, hd.dropReason())
			x.unhold(hd.t)
			continue
		}
		keep = append(keep, hd)
		stuck.add(&keep[len(keep)-1])
	}
	for i := len(keep); i < len(x.held); i++ {
		x.held[i] = held{}
	}
	x.held = keep
	x.flush()
}

// unhold counts a datagram of t out of the held ones.
func (x *txState) unhold(t *udp.Target) {
	if n := x.heldBy[t] - 1; n > 0 {
		x.heldBy[t] = n
	} else {
		delete(x.heldBy, t)
	}
	if n := x.heldByApp[t.App] - 1; n > 0 {
		x.heldByApp[t.App] = n
	} else {
		delete(x.heldByApp, t.App)
	}
}

// dropHeld drops every held datagram (the worker is stopping).
func (x *txState) dropHeld() {
	for i := range x.held {
		x.drop(&x.held[i], x.held[i].dropReason())
		x.held[i] = held{}
	}
	x.held = x.held[:0]
	clear(x.heldBy)
	clear(x.heldByApp)
	clear(x.waiting)
	x.waiting = x.waiting[:0]
}
