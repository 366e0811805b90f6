package datapath

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath/frame"
	"github.com/xsessiond/xsessiond/datapath/reasm"
	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/datapath/xsk"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/shmsync"
	"github.com/xsessiond/xsessiond/nsbind"
	"github.com/xsessiond/xsessiond/sessions"
)

// Drop reasons a worker counts besides frame.Reason values.
const (
	dropNoSession        = iota // no established session or listener for the 5-tuple
	dropFifoFull                // the app's rx fifo had no room
	dropTooBig                  // the datagram can never fit the app's rx fifo
	dropFifoCorrupt             // the app corrupted its rx fifo's indices
	dropNoNeighbour             // tx: no MAC for the next hop in time, or its hold slot taken by an app holding fewer (txState.hold)
	dropNoRoute                 // tx: no route, or a route through another interface
	dropTxBadHeader             // tx: the app's datagram header is unusable (family, address, port)
	dropTxTooLong               // tx: the payload does not fit a frame
	dropTxNoFrame               // tx: no free UMEM frame, or the tx ring stayed full (txState.flush gave the frames back)
	dropTxCorrupt               // tx: the app's tx fifo is corrupt
	dropTxBadSource             // tx: the source address is not one of the interface's (Config.Addrs)
	dropTxKernel                // tx: the kernel refused a datagram larger than a frame (no route; or its socket buffer stayed full for holdFor) or a TCP packet on the packet socket
	dropRule                    // a global session rule dropped it
	dropTxDontFragment          // tx: a don't-fragment datagram larger than the path MTU (the app is told EMSGSIZE)
	dropReasmDuplicate          // a fragment whose bytes the reassembly already held (ignored, as Linux does)
	dropReasmBadFragment        // an IPv6 fragment with more to follow whose end is not a multiple of 8, or at an offset no header can carry (the fragment is dropped, its datagram kept, as Linux does)
	dropReasmTooLong            // a datagram found to reach past the largest IP packet (dropped), or an IPv6 fragment ending past it (the fragment alone)
	dropReasmCorrupt            // a fragment contradicting its datagram's end, or empty (its datagram is dropped)
	dropReasmOverlap            // a fragment overlapping another of its datagram (its datagram is dropped, RFC 5722)
	dropReasmTooMany            // a datagram of more fragments than the reassembly takes (dropped)
	dropReasmNoBuffer           // a fragment for which every reassembly buffer held a datagram not yet delivered
	dropReasmEvicted            // datagrams being reassembled, dropped to make room for a new one (Config.Reassembly.MaxDatagrams)
	dropReasmTimeout            // datagrams whose fragments did not all come within Config.Reassembly.Timeout (Timeout6 for IPv6)
	dropChainNotTCP             // a multi-buffer packet (chain.go) neither TCP nor a UDP fragment
	dropChainBroken             // a multi-buffer packet whose descriptors did not all come in its batch
	dropOtherHost               // a frame to another host's unicast MAC or tagged for a VLAN (notForUs)
	dropLocalSource             // an IPv4 packet from the wire whose source is an address of the host's (ownSource)
	dropSynBacklog              // a SYN that found the worker's queue of SYNs full (tcp_syn.go)
	numDrops
)

var dropNames = [numDrops]string{"no-session", "fifo-full", "too-big", "fifo-corrupt", "no-neighbour", "no-route",
	"tx-bad-header", "tx-too-long", "tx-no-frame", "tx-fifo-corrupt", "tx-bad-source", "tx-kernel", "rule-drop",
	"tx-dont-fragment", "reasm-duplicate", "reasm-bad-fragment", "reasm-too-long", "reasm-corrupt", "reasm-overlap",
	"reasm-too-many-fragments", "reasm-no-buffer", "reasm-evicted", "reasm-timeout", "chain-not-tcp", "chain-broken",
	"other-host", "local-source", "syn-backlog"}

// counters are one worker's counts: its Counts, the decoder's drop
// reasons and its own. The worker updates a private copy without atomics
// and publishes it every publishEvery loops and before it sleeps.
type counters struct {
	Counts
	Bad   [frame.NumReasons]uint64
	Drops [numDrops]uint64
}

// published is the copy of counters other goroutines read.
type published struct {
	n     [numCounts]atomic.Uint64 // Counts, by index
	Bad   [frame.NumReasons]atomic.Uint64
	Drops [numDrops]atomic.Uint64
}

// worker owns one queue: its AF_XDP socket, its shard of the session
// tables and the tx fifos of the Targets assigned to it. Everything but
// stop, pub and the kick eventfd is touched by its goroutine only.
type worker struct {
	e     *Engine
	q     int
	id    uint32 // sessions shard index
	sock  *xsk.Socket
	kick  int         // eventfd: apps and wakeUp (the shard's posts, gVisor's packets) wake the worker
	woke  atomic.Bool // set by wakeUp; a spin and announceSleep look at it, each loop clears it
	shard *sessions.Shard
	stop  atomic.Bool
	batch int

	// tcpWork: this loop gave gVisor work (segments injected, an app's
	// data pushed, a pump kicked); slept: the loop came right after a
	// sleep in poll. Both together make run yield its thread (run).
	tcpWork, slept bool

	// Rx signals held back while the queue is hot (signal): the Targets
	// and when the first of them was held.
	held   []*udp.Target
	heldAt time.Time

	partialOK bool // deliver frame.PartialUDPCsum (Config.Checksum)

	// The interface's MAC as the engine found it (notForUs); hasMAC is
	// false when it has none of 6 bytes.
	mac    [6]byte
	hasMAC bool

	// The last IPv4 source ownSource looked up in this batch, and whether
	// it is the interface's (srcOK false: none yet).
	src      [4]byte
	srcLocal bool
	srcOK    bool

	// sleepWord is the worker's word of the Engine's sleep flags page,
	// set while it sleeps in poll (sleepflags.go); ownWord when there is
	// no page (a worker made without New).
	sleepWord *atomic.Uint32
	ownWord   atomic.Uint32

	descs  []xsk.Desc
	frames [][]byte
	// With a multi-buffer socket (chain.go): the joiner, and which of
	// the batch's frames it joined. descs and frames then have room for
	// a chain beyond the batch.
	chains  *chainJoiner
	chained []bool
	pkt     frame.Packet
	tuple   flow.FiveTuple

	// The run: datagrams of consecutive frames of a batch bound for the
	// same Target, queued in its Rx with one EnqueueDgrams under one
	// acquisition of its lock.
	cur     *udp.Target        // the target whose lock is held, nil between runs
	hdrs    []fifo.DgramHeader // the run's headers (len batch)
	pays    [][]byte           // and payloads, inside the batch's frames
	runF    [][]byte           // and their frames, while a capture runs (captured as the run is queued)
	marks   []uint8            // what became of each, while a capture runs (udp.Queued, udp.Dropped*)
	runN    int                // datagrams in the run
	touched []*udp.Target
	warm    byte // what frame.Warm read; kept so the loads are not removed
	queues  []*fifo.EventQueue
	lastLn  *sessions.Listener // last listener looked up, and its Target
	lastLT  *udp.Target
	lk      listenerCache // the last listener lookup of the batch

	tcpIn   [][]byte  // the batch's TCP packets (IP header on), inside its frames
	syns    *synQueue // pure SYNs set aside behind the other packets (tcp_syn.go)
	synPace synPacer  // and their pace once they back up

	delivered bool // the batch queued datagrams in an app's rx fifo (signal)

	rules     *sessions.RuleTable // the FIB's global rules, loaded once per batch (rules.go)
	ruleCache ruleCache           // their verdicts for recent 5-tuples
	ruleHits  ruleHitRun

	own   []*udp.Target       // Targets whose Tx this worker drains
	preTx []*udp.Target       // listeners registered before Start
	conns []*connectedSession // connected sessions owned

	tx   txState
	apps appKicks // the apps' kick eventfds (kick.go)

	cap  *Capture  // the capture running, loaded once per loop; nil: none
	big  []byte    // a datagram larger than a frame, on its way to the kernel path (txBig)
	poll pollState // the idle policy (poll.go)
	cpus cpuPin    // the CPU its threads run on (cpus.go)
	// pinnedCPU is the CPU the worker's thread is confined to, -1 for
	// none; the worker stores it, Stats reads it.
	pinnedCPU atomic.Int32

	// The reassembly of fragments (fragment.go): made at the first
	// fragment; its clock, read once per batch that has fragments.
	reasm *reasm.Reassembler
	epoch time.Time
	now   int64

	c   counters
	pub published
}

func newWorker(e *Engine, q int, id uint32, s *xsk.Socket, kick int) *worker {
	w := &worker{e: e, q: q, id: id, sock: s, kick: kick, batch: e.cfg.Batch, partialOK: e.partialOK, epoch: time.Now()}
	w.poll.nap, w.poll.spin, w.poll.spinMax = e.cfg.IdleNap, e.cfg.IdleSpin, e.cfg.IdleSpinMax
	w.cpus.cpu = -1
	if len(e.cfg.CPUs) > 0 {
		w.cpus.cpu = e.cfg.CPUs[q%len(e.cfg.CPUs)]
	}
	w.pinnedCPU.Store(-1)
	if len(e.ifc.MAC) == 6 {
		w.mac, w.hasMAC = [6]byte(e.ifc.MAC), true
	}
	w.poll.spinners, w.poll.maxSpinners = &e.spinners, maxSpinners(baseProcs())
	w.descs = make([]xsk.Desc, w.batch)
	w.frames = make([][]byte, w.batch)
	if s != nil && s.MultiBuffer() {
		w.descs = make([]xsk.Desc, w.batch+maxChainDescs)
		w.frames = make([][]byte, len(w.descs))
		w.chained = make([]bool, len(w.descs))
		w.chains = newChainJoiner(len(w.descs), s.FrameSize())
	}
	w.hdrs = make([]fifo.DgramHeader, w.batch)
	w.pays = make([][]byte, w.batch)
	w.runF = make([][]byte, w.batch)
	w.marks = make([]uint8, w.batch)
	w.touched = make([]*udp.Target, 0, w.batch)
	w.held = make([]*udp.Target, 0, 4*w.batch)
	w.queues = make([]*fifo.EventQueue, 0, w.batch)
	w.tx.init(w)
	w.sleepWord = &w.ownWord
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

// wakeUp tells the worker that it has work: it sets woke, which an awake
// worker looks at before it sleeps (announceSleep), and writes the kick
// eventfd only if the worker's sleep flag says it sleeps in poll, or is
// about to. The store of woke and the load of the flag pair with the
// worker's store of the flag and load of woke (announceSleep): either it
// sees woke or this sees the flag. Work posted to the mailbox and packets
// gVisor queued on a busy worker so cost no system call. Nor does a
// wake-up that finds woke set already: a worker that goes to sleep first
// sees woke clear, so an earlier wakeUp set woke after that, and either
// wrote the eventfd or was seen by announceSleep.
func (w *worker) wakeUp() {
	if w.woke.Swap(true) || w.sleepWord.Load() == 0 {
		return
	}
	var one = [8]byte{1}
	_, _ = unix.Write(w.kick, one[:])
}

// publishEvery is how many loops a busy worker runs between two
// publications of its counters; it also publishes whenever a loop found
// nothing to do, before it naps, spins or sleeps.
const publishEvery = 16

// spinCheckEvery is how many spin iterations pass between two looks at
// the clock, the stop flag and the mailbox (which takes the shard's lock).
const spinCheckEvery = 16

// run is the worker's loop, on a locked OS thread.
//
// The first loop after a sleep in poll that gave gVisor work (segments
// injected, an app's data pushed, a pump kicked) unlocks the thread for a
// runtime.Gosched: the goroutines that work readied (gVisor's segment
// processor, a connection's pump) wait on this thread's P, and run there
// at once instead of waiting for another thread to wake up and take them.
// A request on an idle connection then reaches the app without a thread
// wake-up inside the process. Under load (no sleep between loops) they
// are left to the other threads, running beside the worker: yielding
// after every loop that gave gVisor work, and not locking the thread,
// took bulk receive from 2.0–2.1 to 1.6–1.8 Gbit/s (go run ./perf --tcp
// --quick --only tcprecv-c1/xsessiond, two rounds). Three interleaved
// rounds of --only 'tcp(recv|rr64-c1/)': one connection's requests
// 6,284, 6,761 and 7,002 transactions/s with the yield after a sleep,
// 6,133, 5,877 and 5,822 without; bulk receive 2.56, 2.02, 2.10 against
// 2.41, 2.18, 2.21 Gbit/s.
func (w *worker) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	w.pin()
	defer w.unpin()
	for _, t := range w.preTx {
		w.addTx(t)
	}
	w.preTx = nil
	w.sock.Fill()
	defer w.poll.start()()
	w.sleepWord.Store(0)
	// Apps go on kicking a stopped worker: in vain, but nothing is missed.
	defer w.sleepWord.Store(1)
	got := 0 // frames an idle spin received into w.descs
	for !w.stop.Load() {
		w.c.Loops++
		w.cap = w.e.captureFor(w.q)
		// A wake-up from now on is for work this loop may not see.
		w.woke.Store(false)
		if len(w.held) > 0 && (w.shard.Pending() > 0 || !w.poll.hot || time.Since(w.heldAt) >= signalHold) {
			w.flushSignals() // before the posted functions (flushSignals)
		}
		w.shard.Drain()
		busy, dgram := false, false
		n := got
		got = 0
		if n == 0 {
			n = w.receive()
		}
		if n > 0 {
			nf := n
			if w.chains != nil {
				var joined, broken int
				nf, joined, broken = w.chains.join(w.descs[:n], w.sock.Frame, w.frames, w.chained)
				w.c.Chained += uint64(joined)
				w.c.Drops[dropChainBroken] += uint64(broken)
			} else {
				for i := 0; i < n; i++ {
					w.frames[i] = w.sock.Frame(w.descs[i])
				}
			}
			w.c.Rx += uint64(nf)
			w.warm ^= frame.Warm(w.frames[:nf])
			full := w.c.Drops[dropFifoFull]
			w.processBatch(w.frames[:nf])
			if w.c.Drops[dropFifoFull] != full {
				w.yieldToApp()
			}
			w.sock.FreeDescs(w.descs[:n])
			busy, dgram = true, w.delivered
			w.delivered = false
		}
		if w.synsQueued() > 0 && w.injectSyns(n < w.batch) {
			busy = true
		}
		w.sock.Fill()
		if w.drainTx() {
			busy, dgram = true, true
		}
		if w.e.tcp != nil && w.e.tcp.poll(w) {
			busy = true
		}
		if w.tcpWork && w.slept {
			w.unpin()
			runtime.UnlockOSThread()
			runtime.Gosched()
			runtime.LockOSThread()
			w.pin()
			w.poll.moved() // the thread may be another
		}
		w.tcpWork, w.slept = false, false
		w.sock.Complete()
		w.tx.retryHeld()
		w.expireFragments()
		if busy {
			w.poll.worked(n, dgram)
		}
		if busy || w.e.cfg.BusyPoll {
			if w.c.Loops%publishEvery == 0 {
				w.publish()
			}
			continue
		}
		w.publish()
		act, d := w.poll.idle() // poll.go
		if act != idleNap && len(w.held) > 0 {
			w.flushSignals() // nobody waits on a sleeping worker
		}
		switch act {
		case idleNap:
			w.c.Naps++
			w.poll.onThread()
			ts := unix.NsecToTimespec(int64(d))
			_ = unix.Nanosleep(&ts, nil)
			continue
		case idleSpin:
			w.c.Spins++
			var found bool
			got, found = w.spin(d)
			w.poll.endSpin(!found)
			if found {
				w.c.SpinHits++
				continue
			}
			w.publish()
		}
		if !w.announceSleep() {
			continue // an app queued something meanwhile
		}
		w.poll.sleeping()
		w.sleep()
		w.sleepWord.Store(0)
		w.slept = true
	}
	w.flushSignals()
	w.tx.dropHeld()
	w.publish()
}

// receive takes up to a batch of descriptors off the rx ring into
// w.descs and returns how many. With a multi-buffer socket, a batch that
// ends inside a chain takes the rest of it too (chain.go), one descriptor
// at a time so as not to open another.
func (w *worker) receive() int {
	n := w.sock.Receive(w.descs[:w.batch])
	if w.chains == nil {
		return n
	}
	for n > 0 && n < len(w.descs) && w.descs[n-1].Options&xsk.DescContinued != 0 {
		if w.sock.Receive(w.descs[n:n+1]) == 0 {
			break
		}
		n++
	}
	return n
}

// spin checks for work without a system call for up to budget: frames on
// the rx ring (received into w.descs; their number is returned), a tx
// fifo to drain, a TCP session's app that queued data or made room, a
// wake-up (wakeUp), a posted mailbox function, a stop. It yields the CPU
// every spinCheckEvery checks (poll.go). It reports whether it found any.
func (w *worker) spin(budget time.Duration) (int, bool) {
	start := time.Now()
	for i := 1; ; i++ {
		if n := w.receive(); n > 0 {
			return n, true
		}
		if w.txReady() {
			return 0, true
		}
		if w.woke.Load() {
			w.woke.Store(false) // the loop does what the kick asks; its eventfd count is read in the next sleep
			return 0, true
		}
		if i%spinCheckEvery == 0 {
			if w.stop.Load() || w.shard.Pending() > 0 {
				return 0, true
			}
			// Copy mode sends only when kicked: keep frames moving.
			w.sock.Complete()
			t0 := time.Now()
			yield()
			now := time.Now()
			if now.Sub(t0) >= yieldStolen {
				w.c.SpinsStolen++
				w.poll.stole(now)
				return 0, false
			}
			if now.Sub(start) >= budget {
				return 0, false
			}
		}
	}
}

// announceSleep sets the worker's sleep flag (sleepflags.go) and looks at
// the tx fifos and its wake-up flag once more: an app that set an event
// flag, or a wakeUp that set woke, before it could see the word set did
// not kick. It reports whether the worker may sleep; if not, the flag is
// cleared again. The flag's store comes before those loads
// (shmsync.Store32): the page is shared memory.
func (w *worker) announceSleep() bool {
	shmsync.Store32(w.sleepWord, 1)
	if w.woke.Load() || w.txReady() {
		w.sleepWord.Store(0)
		return false
	}
	return true
}

// txReady reports whether drainTx has something to look at.
func (w *worker) txReady() bool {
	for _, t := range w.own {
		if t.More || t.Tx.HasEvent() {
			return true
		}
	}
	return w.e.tcp != nil && w.e.tcp.ready(w)
}

// sleep waits in poll on the socket and the kick eventfd.
func (w *worker) sleep() {
	timeout := w.e.cfg.IdleTimeout
	switch {
	case w.tx.kernelWaiting():
		timeout = kernelRetry // try the kernel socket again
	case w.tx.pending() || w.synsQueued() > 0:
		timeout = time.Millisecond // frames in flight or held, or SYNs paced: come back soon
	}
	w.sleepPoll(timeout) // kick.go: also the apps' kick eventfds
}

// listenerCache remembers the Target of the last listener lookup of a
// batch by the packet's local end: frames of one batch to one listener
// from many remotes pay one lookup. It lives for one batch, so the result
// is what a snapshot of the tables taken at the batch's start gives.
type listenerCache struct {
	ok     bool
	local  [16]byte
	port   uint16
	proto  flow.Transport
	family uint8
	t      *udp.Target // nil: no listener (or no datagram Target)
}

// processBatch delivers a batch of received frames: decode, look the
// 5-tuple up (the connected sessions of every worker, then listeners),
// queue the payloads in the app's rx fifo run by run, and signal each app
// once. Frames stay owned by the caller. It does not allocate.
func (w *worker) processBatch(frames [][]byte) {
	l := w.e.layer.Load()
	est := w.e.est.Load()
	w.lk.ok = false
	w.srcOK = false
	if l != nil {
		w.rules = l.GlobalRules(w.e.fib)
	}
	w.ruleCache.use(w.rules)
	for i, f := range frames {
		r := frame.Decode(f, &w.pkt)
		if r != frame.TruncatedEth && w.notForUs() {
			w.c.Drops[dropOtherHost]++
			w.capFlush()
			w.cap.rxDrop(w.q, f, nil, dropOtherHost)
			continue
		}
		if w.ownSource() {
			w.c.Drops[dropLocalSource]++
			w.capFlush()
			w.cap.rxDrop(w.q, f, nil, dropLocalSource)
			continue
		}
		if r == frame.NotUDP && w.pkt.Proto == flow.TransportTCP && w.e.tcp != nil {
			if w.rules != nil && w.tcpRuleDrops(l, est, f) {
				continue
			}
			syn := isSyn(f, w.pkt.L4Off)
			var port uint16 // a SYN's destination port
			if syn {
				port = binary.BigEndian.Uint16(f[w.pkt.L4Off+2:])
				if w.synBacklogFull(f, port) {
					continue
				}
			}
			if w.cap != nil {
				w.capFlush()
				w.cap.rx(w.q, f, nil)
			}
			ip := f[w.pkt.L3Off:]
			if w.pkt.Family == flow.Family6 {
				// gVisor's link takes TCP right after the IPv6 header:
				// option headers the decoder let through go, as the
				// kernel skips them.
				ip = frame.StripIPv6Options(ip, w.pkt.L4Off-w.pkt.L3Off)
			}
			if syn && w.setSynAside(ip, port) {
				continue
			}
			w.tcpIn = append(w.tcpIn, ip)
			continue
		}
		if w.chains != nil && w.chained[i] && !w.isUDPFragment(r) {
			w.c.Drops[dropChainNotTCP]++
			w.capFlush()
			w.cap.rxDrop(w.q, f, nil, dropChainNotTCP)
			continue
		}
		var pay []byte
		if w.isUDPFragment(r) {
			// The fragments were captured as they came: the datagram
			// has no frame of its own (f nil).
			w.capFlush()
			dg := w.fragment(f)
			if dg == nil {
				continue
			}
			pay, f = dg[w.pkt.PayloadOff:w.pkt.PayloadOff+w.pkt.PayloadLen], nil
		} else if r != frame.OK && !w.acceptBad(r) {
			w.capFlush()
			w.cap.rxBad(w.q, f, r)
			continue
		}
		w.tuple = w.pkt.FiveTuple()
		t, why := w.lookup(l, est)
		if t == nil {
			w.c.Drops[why]++
			if f != nil {
				w.capFlush()
				w.cap.rxDrop(w.q, f, nil, why)
			}
			continue
		}
		if t != w.cur {
			w.release()
			if !t.Lock() {
				t.Unlock()
				w.c.Drops[dropNoSession]++
				if f != nil {
					w.cap.rxDrop(w.q, f, nil, dropNoSession)
				}
				continue
			}
			w.cur = t
		} else if w.runN == len(w.hdrs) {
			w.flush()
		}
		if w.cap != nil {
			w.runF[w.runN] = f // captured when the run is queued, with what became of it
		}
		p := &w.pkt
		udp.HeaderOf(&w.hdrs[w.runN], p)
		if f != nil {
			pay = f[p.PayloadOff : p.PayloadOff+p.PayloadLen]
		}
		w.pays[w.runN] = pay
		w.runN++
	}
	w.release()
	if w.now != 0 {
		w.reasm.Release() // the batch's reassembled datagrams are queued
		w.now = 0
	}
	w.signal()
	w.ruleHits.flush()
	if len(w.tcpIn) > 0 {
		w.e.tcp.inject(w, w.tcpIn)
		clear(w.tcpIn)
		w.tcpIn = w.tcpIn[:0]
	}
}

// setMAC makes mac the interface's hardware address for what the worker
// receives (notForUs) and sends (the source of its frames and of the TCP
// path's packets it writes). Worker goroutine only (Engine.setMAC posts
// it).
func (w *worker) setMAC(mac [6]byte) {
	w.mac, w.hasMAC = mac, true
	x := &w.tx
	x.srcMAC = mac
	clear(x.tpls)
	x.lastT = nil
	if w.e.tcp != nil {
		tw := w.e.tcp.wq[w.q]
		tw.mu.Lock()
		tw.srcMAC = mac
		tw.mu.Unlock()
	}
}

// notForUs reports whether the frame decoded into w.pkt is one the
// kernel drops as another host's (PACKET_OTHERHOST): to a unicast MAC not
// the interface's, or tagged with a VLAN id (not 0, a priority tag) when
// the interface served is the untagged one. The XDP program passes such
// frames to the kernel (its other_host counter: a bridge, a macvlan or a
// VLAN device of the interface may want them), with the same MAC as the
// worker's, so none should come here; this is the worker's own guard
// (an app must not receive what a kernel socket of the host would not),
// two comparisons a frame, for one that does.
func (w *worker) notForUs() bool {
	p := &w.pkt
	if w.hasMAC && p.DstMAC[0]&1 == 0 && p.DstMAC != w.mac {
		return true
	}
	for _, tci := range p.VLAN[:p.NumVLAN] {
		if tci&0x0fff != 0 {
			return true
		}
	}
	return false
}

// ownSource reports whether the frame decoded into w.pkt is an IPv4
// packet, its header accepted (L4Off set: after the header checksum,
// options and martian checks, as the kernel validates the source after
// them), whose source is an address of the namespace (of any of its
// interfaces, when Config.Addrs knows them all: Engine.local; else of the
// interface served): one the kernel drops as spoofed
// (fib_validate_source, with accept_local off, its default), so that a
// peer cannot pass a datagram to an app as if the host itself had sent
// it. An IPv6 one the kernel takes. One lookup of Config.Addrs per source
// and batch.
func (w *worker) ownSource() bool {
	p := &w.pkt
	if p.Family != flow.Family4 || p.L4Off == 0 || w.e.cfg.Addrs == nil {
		return false
	}
	a := [4]byte(p.Src[:4])
	if !w.srcOK || a != w.src {
		w.src, w.srcOK = a, true
		if l := w.e.local; l != nil {
			w.srcLocal = l.IsLocal(l.FIB(), netip.AddrFrom4(a))
		} else {
			w.srcLocal = w.e.cfg.Addrs.HasAddress(w.e.ifc.Index, netip.AddrFrom4(a))
		}
	}
	return w.srcLocal
}

// localAddrs is what Config.Addrs offers when it knows every address of
// the namespace (nsbind.View). IsLocal must not allocate.
type localAddrs interface {
	FIB() nsbind.FIBID
	IsLocal(fib nsbind.FIBID, a netip.Addr) bool
}

// lookup finds the Target of w.tuple: a connected session (of any
// worker: est holds them all, this worker's own included), else a
// listener, which the global rules may replace or refuse (applyRules).
// With no Target it returns the drop reason.
func (w *worker) lookup(l *sessions.Layer, est *estTable) (*udp.Target, int) {
	if t := est.lookup(&w.tuple); t != nil {
		if !w.stillLocal(t) {
			return nil, dropNoSession
		}
		return t, 0
	}
	if l == nil {
		return nil, dropNoSession
	}
	c := &w.lk
	if c.ok && c.port == w.tuple.LocalPort && c.local == w.tuple.Local && c.proto == w.tuple.Proto && c.family == w.tuple.Family {
		return w.listenerHit(l, c.t)
	}
	var t *udp.Target
	if ln, ok := l.LookupListener(w.e.fib, &w.tuple); ok {
		if ln == w.lastLn {
			t = w.lastLT
		} else {
			t = (*w.e.lis.Load())[ln.Handle]
			w.lastLn, w.lastLT = ln, t
		}
	}
	*c = listenerCache{ok: true, local: w.tuple.Local, port: w.tuple.LocalPort, proto: w.tuple.Proto, family: w.tuple.Family, t: t}
	return w.listenerHit(l, t)
}

// stillLocal reports whether t, a listener bound to an address or a
// connected session, still has an address of the namespace: once its
// address is removed (a service address moved to another host), Linux
// delivers nothing to a socket bound to it, and so does the worker, which
// may still get what peers with a stale neighbour entry send (the XDP
// program checks the wildcard listeners' destinations alone). A check of
// a map once per change of the addresses, an atomic load after.
func (w *worker) stillLocal(t *udp.Target) bool {
	g := w.e.localGen.Load()
	if t.LocalGen.Load() == g {
		return true
	}
	a := t.Local.Addr().Unmap().WithZone("")
	if set := w.e.localSet.Load(); set != nil && a.IsValid() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		if _, ok := (*set)[a]; !ok {
			return false
		}
	}
	t.LocalGen.Store(g)
	return true
}

// flush queues the run's datagrams in cur's Rx (whose lock is held) and
// counts them; while a capture runs it captures their frames, each with
// its drop reason when the fifo refused it.
func (w *worker) flush() {
	t, n := w.cur, w.runN
	if n == 0 {
		return
	}
	var r udp.Run
	if w.cap == nil {
		r = t.DeliverBatch(w.hdrs[:n], w.pays[:n])
	} else {
		r = t.DeliverBatchMarks(w.hdrs[:n], w.pays[:n], w.marks[:n])
		w.captureRun(t, n)
	}
	clear(w.pays[:n])
	w.runN = 0
	if r.Delivered > 0 {
		w.c.Delivered += r.Delivered
		t.Delivered.Add(r.Delivered)
		t.RxBytes.Add(r.Bytes)
		w.touch(t)
	}
	if r.Full > 0 {
		w.c.Drops[dropFifoFull] += r.Full
		t.DropFull.Add(r.Full)
	}
	if r.TooBig > 0 {
		w.c.Drops[dropTooBig] += r.TooBig
		t.DropTooBig.Add(r.TooBig)
	}
	if r.Corrupt > 0 {
		w.c.Drops[dropFifoCorrupt] += r.Corrupt
		t.DropCorrupt.Add(r.Corrupt)
	}
}

// runDrops maps udp.Dropped* to the worker's drop reasons.
var runDrops = [...]int{udp.DroppedFull: dropFifoFull, udp.DroppedTooBig: dropTooBig, udp.DroppedCorrupt: dropFifoCorrupt}

// captureRun captures the n frames of the run just queued in t's Rx: as
// delivered, or with the reason the fifo refused the datagram.
func (w *worker) captureRun(t *udp.Target, n int) {
	for i, f := range w.runF[:n] {
		if f == nil {
			continue // the capture started within the run
		}
		if m := w.marks[i]; m == udp.Queued {
			w.cap.rx(w.q, f, t)
		} else {
			w.cap.rxDrop(w.q, f, t, runDrops[m])
		}
	}
	clear(w.runF[:n])
}

// capFlush queues the run so far before a capture records a frame
// dropped outside it, so that the capture keeps the frames in the order
// they came. A nil test when no capture runs.
func (w *worker) capFlush() {
	if w.cap != nil && w.runN > 0 {
		w.flush()
	}
}

// release ends the current run: queues and counts it and drops the
// target's lock.
func (w *worker) release() {
	t := w.cur
	if t == nil {
		return
	}
	w.flush()
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
	if len(w.touched) > 0 {
		w.delivered = true
	}
	if w.poll.hot && w.poll.nap > 0 {
		w.holdSignals()
		return
	}
	w.signalTouched()
}

// signalTouched signals the Targets in w.touched and empties it.
func (w *worker) signalTouched() {
	for i, t := range w.touched {
		w.signalTarget(t)
		w.touched[i] = nil
	}
	w.touched = w.touched[:0]
	w.signalQueues()
}

// signalTarget sets t's rx event flag and, if the app is to be told,
// notes its event queue for signalQueues (a queue that does not fit in
// w.queues is signalled at once).
func (w *worker) signalTarget(t *udp.Target) {
	if !t.Signal() {
		return
	}
	q := t.Events
	if slices.Contains(w.queues, q) {
		return
	}
	if len(w.queues) < cap(w.queues) {
		w.queues = append(w.queues, q)
		return
	}
	_ = q.Signal()
}

// signalQueues writes the eventfd of each event queue noted, once.
func (w *worker) signalQueues() {
	for i, q := range w.queues {
		_ = q.Signal()
		w.queues[i] = nil
	}
	w.queues = w.queues[:0]
}

// yieldToApp ends a batch that found an app's rx fifo full: the app,
// whose reads would make room, may be waiting for the worker's CPU, and
// the kernel's scheduler gives each of two busy threads on one CPU
// milliseconds at a time, more than a fifo holds at line rate. On the perf
// rig with XDP frames (worker and app share the CPU the generator's
// softirq leaves them; go run ./perf --reps 1 --payloads 1472 --only
// '^udp1472-q1-f1/xsessiond$', four interleaved rounds, 2026-12-04): lost
// 17.7, 26.5, 28.9 and 13.9% without, 10.8, 14.2, 13.1 and 5.9% with,
// delivering 0.77–1.01 Mpps against 0.94–1.22; a 16 MiB fifo instead of
// 4 MiB lost 0.45% without. At 512 bytes the loss moved from the fifo to
// the AF_XDP rx ring (the worker behind), 2.8–3.3% against 0.04–7.9%.
// The yield costs a system call per such batch, which a stalled app's
// traffic pays, and runs nobody when no thread waits.
func (w *worker) yieldToApp() {
	w.c.FullYields++
	yield()
}

// signalHold is how long a hot queue may hold back an app's rx signal.
// While frames arrive fast enough that the worker naps between batches
// (poll.go), an app asleep on an empty fifo is signalled once for up to
// signalHold of datagrams instead of once per batch: each wake-up of an
// app costs an eventfd write, a thread wake-up and the app's reads of its
// eventfd, and at full rate the app woke after nearly every batch (9,200
// times a second at 0.78 Mpps). A fifo a quarter full is signalled at
// once. go run ./perf --quick --only udp64-q1-f1/xsessiond, two sets of
// three interleaved rounds, machine CPU per packet with the hold against
// without: 1,401-1,433 against 1,546-1,679 ns, and 1,500-1,878 against
// 1,761-1,949 ns.
const signalHold = 200 * time.Microsecond

// holdSignals moves the batch's Targets to w.held, signalling at once
// those whose rx fifo is a quarter full, and signals all held ones when
// the first was held signalHold ago or w.held has no room for another
// batch's (it never grows: the path allocates nothing).
func (w *worker) holdSignals() {
	now := time.Now()
	if len(w.held) == 0 {
		w.heldAt = now
	}
	n := 0
	for i, t := range w.touched {
		w.touched[i] = nil
		// The shared indices: this view's consumer state is the one
		// it had when the daemon attached the fifo.
		if t.Rx.QueuedBytes() >= int(t.Rx.Size()/4) {
			w.touched[n] = t
			n++
			continue
		}
		if !slices.Contains(w.held, t) {
			w.held = append(w.held, t)
		}
	}
	w.touched = w.touched[:n]
	if now.Sub(w.heldAt) >= signalHold || len(w.held) > cap(w.held)-cap(w.touched) {
		w.flushSignals()
		return
	}
	w.signalTouched()
}

// flushSignals signals every Target held back (and those in w.touched).
// The worker calls it before it sleeps, spins or leaves the hot regime,
// and before it runs posted functions: the memory of a Target's fifo is
// freed only after every worker ran one (sessions.Layer.reclaimLocked),
// so no held Target outlives it. A Target killed meanwhile is skipped.
func (w *worker) flushSignals() {
	for i, t := range w.held {
		if !t.Dead() {
			w.signalTarget(t)
		}
		w.held[i] = nil
	}
	w.held = w.held[:0]
	w.signalTouched()
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
func (w *worker) addConn(sh *sessions.Shard, c *connectedSession) {
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
	t.HostReach = e.mayReachHost(ss.App)
	c.target = t
	e.openKernelPathLocked(t, c.res)
	e.publishConnLocked(c)
	w.conns = append(w.conns, c)
	w.own = append(w.own, t)
}

func (w *worker) delConn(c *connectedSession) {
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
	c.SynQueued = uint64(w.synsQueued())
	for i, v := range c.Counts.array() {
		p.n[i].Store(v)
	}
	for i := range c.Bad {
		p.Bad[i].Store(c.Bad[i])
	}
	if w.reasm != nil {
		w.reasmStats()
	}
	for i := range c.Drops {
		p.Drops[i].Store(c.Drops[i])
	}
}
