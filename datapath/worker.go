package datapath

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath/frame"
	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/datapath/xsk"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/sessions"
)

// Drop reasons a worker counts besides frame.Reason values.
const (
	dropNoSession   = iota // no established session or listener for the 5-tuple
	dropFifoFull           // the app's rx fifo had no room
	dropTooBig             // the datagram can never fit the app's rx fifo
	dropFifoCorrupt        // the app corrupted its rx fifo's indices
	dropNoNeighbour        // tx: no MAC for the next hop in time
	dropNoRoute            // tx: no route, or a route through another interface
	dropTxBadHeader        // tx: the app's datagram header is unusable (family, address, port)
	dropTxTooLong          // tx: the payload does not fit a frame
	dropTxNoFrame          // tx: no free UMEM frame
	dropTxCorrupt          // tx: the app's tx fifo is corrupt
	numDrops
)

var dropNames = [numDrops]string{"no-session", "fifo-full", "too-big", "fifo-corrupt", "no-neighbour", "no-route",
	"tx-bad-header", "tx-too-long", "tx-no-frame", "tx-fifo-corrupt"}

// counters are one worker's counts. The worker updates a private copy
// without atomics and publishes it once per loop.
type counters struct {
	Rx        uint64 // frames received
	Delivered uint64 // datagrams queued in an app's rx fifo
	Tx        uint64 // frames transmitted
	Held      uint64 // tx datagrams held for a neighbour
	Loops     uint64
	Sleeps    uint64
	Kicks     uint64 // kick eventfd wakeups
	Bad       [frame.NumReasons]uint64
	Drops     [numDrops]uint64
}

// published is the copy of counters other goroutines read.
type published struct {
	Rx, Delivered, Tx, Held, Loops, Sleeps, Kicks atomic.Uint64
	Bad                                           [frame.NumReasons]atomic.Uint64
	Drops                                         [numDrops]atomic.Uint64
}

// worker owns one queue: its AF_XDP socket, its shard of the session
// tables and the tx fifos of the Targets assigned to it. Everything but
// stop, pub and the kick eventfd is touched by its goroutine only.
type worker struct {
	e     *Engine
	q     int
	id    uint32 // sessions shard index
	sock  *xsk.Socket
	kick  int // eventfd: apps and the shard bridge wake the worker
	shard *sessions.Shard
	stop  atomic.Bool
	batch int

	descs  []xsk.Desc
	frames [][]byte
	pkt    frame.Packet
	hdr    fifo.DgramHeader
	tuple  sessions.FiveTuple

	cur     *udp.Target // the target whose lock is held during a batch
	curN    uint64      // datagrams delivered into cur in this run
	curB    uint64
	touched []*udp.Target
	queues  []*fifo.EventQueue
	lastLn  *sessions.Listener // last listener looked up, and its Target
	lastLT  *udp.Target

	own   []*udp.Target // Targets whose Tx this worker drains
	preTx []*udp.Target // listeners registered before Start
	conns []*conn       // connected sessions owned
	byIdx []*udp.Target // their Targets by session index (Handle.Index)

	tx txState

	c   counters
	pub published
}

func newWorker(e *Engine, q int, id uint32, s *xsk.Socket, kick int) *worker {
	w := &worker{e: e, q: q, id: id, sock: s, kick: kick, batch: e.cfg.Batch}
	w.descs = make([]xsk.Desc, w.batch)
	w.frames = make([][]byte, w.batch)
	w.touched = make([]*udp.Target, 0, w.batch)
	w.queues = make([]*fifo.EventQueue, 0, w.batch)
	w.tx.init(w)
	return w
}

func (w *worker) closeFDs() error {
	var err error
	if w.sock != nil {
		err = w.sock.Close()
	}
	if w.kick >= 0 {
		unix.Close(w.kick)
		w.kick = -1
	}
	return err
}

// wakeUp writes the kick eventfd.
func (w *worker) wakeUp() {
	var one = [8]byte{1}
	_, _ = unix.Write(w.kick, one[:])
}

// bridge turns the shard's wake channel into a write of the kick eventfd,
// so that the worker sleeps in one poll on its socket and eventfd.
func (w *worker) bridge(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.shard.Wake():
			w.wakeUp()
		}
	}
}

// run is the worker's loop, on a locked OS thread.
func (w *worker) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, t := range w.preTx {
		w.addTx(t)
	}
	w.preTx = nil
	w.sock.Fill()
	for !w.stop.Load() {
		w.c.Loops++
		w.shard.Drain()
		busy := false
		n := w.sock.Receive(w.descs)
		if n > 0 {
			for i := 0; i < n; i++ {
				w.frames[i] = w.sock.Frame(w.descs[i])
			}
			w.c.Rx += uint64(n)
			w.processBatch(w.frames[:n])
			w.sock.FreeDescs(w.descs[:n])
			busy = true
		}
		w.sock.Fill()
		if w.drainTx() {
			busy = true
		}
		w.sock.Complete()
		w.tx.retryHeld()
		w.publish()
		if !busy && !w.e.cfg.BusyPoll {
			w.sleep()
		}
	}
	w.tx.dropHeld()
	w.publish()
}

// sleep waits in poll on the socket and the kick eventfd.
func (w *worker) sleep() {
	timeout := w.e.cfg.IdleTimeout
	if w.tx.pending() {
		timeout = time.Millisecond // frames in flight or held: come back soon
	}
	fds := [2]unix.PollFd{{Fd: int32(w.sock.FD()), Events: unix.POLLIN}, {Fd: int32(w.kick), Events: unix.POLLIN}}
	w.c.Sleeps++
	n, err := unix.Poll(fds[:], int(timeout/time.Millisecond))
	if err != nil || n == 0 {
		return
	}
	if fds[1].Revents&unix.POLLIN != 0 {
		var b [8]byte
		_, _ = unix.Read(w.kick, b[:])
		w.c.Kicks++
	}
}

// processBatch delivers a batch of received frames: decode, look the
// 5-tuple up (the worker's shard, then connected sessions of every worker,
// then listeners), queue the payload in the app's rx fifo, and signal each
// app once. Frames stay owned by the caller. It does not allocate.
func (w *worker) processBatch(frames [][]byte) {
	l := w.e.layer.Load()
	est := *w.e.est.Load()
	for _, f := range frames {
		if r := frame.Decode(f, &w.pkt); r != frame.OK {
			w.c.Bad[r]++
			continue
		}
		w.tuple = w.pkt.FiveTuple()
		t := w.lookup(l, est)
		if t == nil {
			w.c.Drops[dropNoSession]++
			continue
		}
		if t != w.cur {
			w.release()
			if !t.Lock() {
				t.Unlock()
				w.c.Drops[dropNoSession]++
				continue
			}
			w.cur = t
		}
		switch t.Deliver(&w.hdr, &w.pkt, f) {
		case udp.Delivered:
			w.c.Delivered++
			w.curN++
			w.curB += uint64(w.pkt.PayloadLen)
			w.touch(t)
		case udp.FifoFull:
			w.c.Drops[dropFifoFull]++
			t.DropFull.Add(1)
		case udp.TooBig:
			w.c.Drops[dropTooBig]++
			t.DropTooBig.Add(1)
		default:
			w.c.Drops[dropFifoCorrupt]++
			t.DropCorrupt.Add(1)
		}
	}
	w.release()
	w.signal()
}

// lookup finds the Target of w.tuple.
func (w *worker) lookup(l *sessions.Layer, est map[sessions.FiveTuple]*udp.Target) *udp.Target {
	fib := w.e.fib
	if w.shard != nil && w.shard.Len() > 0 {
		if ss, ok := w.shard.Lookup(fib, &w.tuple); ok {
			if t := w.connTarget(ss.Handle); t != nil {
				return t
			}
		}
	}
	if len(est) > 0 {
		if t := est[w.tuple]; t != nil {
			return t
		}
	}
	if l == nil {
		return nil
	}
	ln, ok := l.LookupListener(fib, &w.tuple)
	if !ok {
		return nil
	}
	if ln == w.lastLn {
		return w.lastLT
	}
	t := (*w.e.lis.Load())[ln.Handle]
	w.lastLn, w.lastLT = ln, t
	return t
}

// connTarget returns the Target of a session of the worker's shard.
func (w *worker) connTarget(h sessions.Handle) *udp.Target {
	if i := h.Index(); int(i) < len(w.byIdx) {
		if t := w.byIdx[i]; t != nil && t.Handle == h {
			return t
		}
	}
	return nil
}

// release ends the current run: counts it and drops the target's lock.
func (w *worker) release() {
	t := w.cur
	if t == nil {
		return
	}
	if w.curN > 0 {
		t.Delivered.Add(w.curN)
		t.RxBytes.Add(w.curB)
		w.curN, w.curB = 0, 0
	}
	t.Unlock()
	w.cur = nil
}

func (w *worker) touch(t *udp.Target) {
	for _, x := range w.touched {
		if x == t {
			return
		}
	}
	if len(w.touched) < cap(w.touched) {
		w.touched = append(w.touched, t)
	}
}

// signal sets the rx event flag of every fifo the batch queued into and
// signals each app that needs it once.
func (w *worker) signal() {
	for i, t := range w.touched {
		if t.Signal() {
			q := t.Events
			seen := false
			for _, x := range w.queues {
				if x == q {
					seen = true
					break
				}
			}
			if !seen && len(w.queues) < cap(w.queues) {
				w.queues = append(w.queues, q)
			}
		}
		w.touched[i] = nil
	}
	w.touched = w.touched[:0]
	for i, q := range w.queues {
		_ = q.Signal()
		w.queues[i] = nil
	}
	w.queues = w.queues[:0]
}

// addTx makes the worker drain t's Tx fifo.
func (w *worker) addTx(t *udp.Target) {
	if t.Dead() {
		return
	}
	w.own = append(w.own, t)
}

// delTx stops draining t's Tx fifo.
func (w *worker) delTx(t *udp.Target) {
	for i, x := range w.own {
		if x == t {
			w.own = append(w.own[:i], w.own[i+1:]...)
			break
		}
	}
	if w.lastLT == t {
		w.lastLn, w.lastLT = nil, nil
	}
}

// addConn builds a claimed session's Target from its shard entry (posted
// by the layer just before) and publishes it.
func (w *worker) addConn(sh *sessions.Shard, c *conn) {
	ss := sh.Get(c.h.Index())
	e := w.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if c.closed || ss == nil || ss.Handle != c.h {
		return
	}
	t, err := udp.NewTarget(udp.KindConnected, c.h, ss.App, w.id, ss.Pair, ss.Memory)
	if err != nil {
		e.log.Warn("connected session without usable fifos", "handle", uint64(c.h), "err", err)
		return
	}
	t.Local, t.Remote, t.Family = c.local, c.remote, c.tuple.Family
	c.target = t
	e.publishConnLocked(c)
	w.conns = append(w.conns, c)
	for int(c.h.Index()) >= len(w.byIdx) {
		w.byIdx = append(w.byIdx, nil)
	}
	w.byIdx[c.h.Index()] = t
	w.own = append(w.own, t)
}

func (w *worker) delConn(c *conn) {
	if i := c.h.Index(); int(i) < len(w.byIdx) && w.byIdx[i] == c.target {
		w.byIdx[i] = nil
	}
	for i, x := range w.conns {
		if x == c {
			w.conns = append(w.conns[:i], w.conns[i+1:]...)
			return
		}
	}
}

// publish copies the private counters for Stats.
func (w *worker) publish() {
	p, c := &w.pub, &w.c
	p.Rx.Store(c.Rx)
	p.Delivered.Store(c.Delivered)
	p.Tx.Store(c.Tx)
	p.Held.Store(c.Held)
	p.Loops.Store(c.Loops)
	p.Sleeps.Store(c.Sleeps)
	p.Kicks.Store(c.Kicks)
	for i := range c.Bad {
		p.Bad[i].Store(c.Bad[i])
	}
	for i := range c.Drops {
		p.Drops[i].Store(c.Drops[i])
	}
}
