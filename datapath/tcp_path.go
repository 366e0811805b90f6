package datapath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/xsessiond/xsessiond/datapath/frame"
	"github.com/xsessiond/xsessiond/datapath/tcp"
	"github.com/xsessiond/xsessiond/datapath/xsk"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// TCP on the wire: the Engine runs one tcp.Stack for its FIB with the
// interface's addresses. Workers inject the TCP frames the XDP program
// steered to them (listeners, and the 5-tuples of active opens); the
// Stack's packets go to a bounded queue per worker, which the worker drains
// into its AF_XDP tx ring, framed with the resolver's next-hop MAC. A
// listener's or active open's port is reserved in the kernel by a bound,
// non-listening TCP socket (tcpReservation).
//
// A connection's fifos are the app's; the Conn may use them after the
// layer forgot the session (a FIN after what the app queued, a reset), so
// the Engine is the layer's sessions.StreamKeeper: fifo memory is freed
// once the Conn's Handler.Closed ran.

// TCPConfig shapes the Engine's TCP.
type TCPConfig struct {
	// Stack options; MaxConnsPerOwner bounds the connections of one app
	// (owner = app), MaxBacklog a listener's backlog. Zero fields take
	// package tcp's defaults.
	Stack tcp.Options
	// Backlog is each listener's backlog of handshakes completed and not
	// yet accepted, in gVisor's accept queue and, once its app marks what
	// its Accept takes, again among the sessions handed to the app
	// (tcpListener.Backlogged); 0 = DefaultTCPBacklog (at most
	// Stack.MaxBacklog).
	Backlog int
	// TxQueue is the number of packets the Stack may queue per worker
	// before it drops (TCP retransmits after a timeout); 0 =
	// DefaultTCPTxQueue. A queued packet shares its bytes with the
	// Stack's retransmit queue, so the bound is on headers and control
	// segments, not on payload copies.
	TxQueue int
	// NoGSO sends every TCP packet through the workers' AF_XDP tx rings,
	// one frame of at most the MTU each, checksums computed in software.
	// Unset, TCP packets of up to 64 KiB go out through a packet socket
	// that lets the kernel segment and checksum them (tcp_gso.go); when
	// that socket cannot be opened, the Engine logs why and sends as with
	// NoGSO.
	NoGSO bool
	// MaxTimeWait bounds the connections held after their close while
	// gVisor finishes them (TIME-WAIT, FIN-WAIT-2, ...), each with its
	// steering and, for an active open, its port. Past it the oldest one
	// that has nothing left to deliver is ended early (an RST ends a
	// TIME-WAIT), as Linux's net.ipv4.tcp_max_tw_buckets does, and
	// counted in TCPStats.TimeWaitOverflow. 0 = DefaultTCPMaxTimeWait.
	MaxTimeWait int
	// SynRate paces the SYNs a worker hands to the Stack once more than
	// synPressure of them wait in its queue (tcp_syn.go), as in a SYN
	// flood: at most SynRate a second, past a burst of synBurst. Below
	// that they go as they come. 0 = DefaultTCPSynRate; negative: never
	// paced.
	SynRate int
}

// Defaults of TCPConfig.
const (
	DefaultTCPBacklog = 1024
	DefaultTCPTxQueue = 65536
	// DefaultTCPMaxTimeWait is TCPConfig.MaxTimeWait's default: a
	// connection held after its close takes about 7 KiB of the daemon's
	// heap (gVisor's endpoint and the session), so 16384 of them about
	// 110 MiB.
	DefaultTCPMaxTimeWait = 16384
	// DefaultTCPSynRate is TCPConfig.SynRate's default: about a tenth of
	// a CPU of gVisor's handshakes on the machines measured (several
	// microseconds a SYN), so that a SYN flood leaves a worker's CPU to
	// its established connections.
	DefaultTCPSynRate = 10000
	tcpTxQueueMin     = 1024        // a worker's queue starts this long and doubles as needed
	tcpHold           = time.Second // a packet waits at most this long for its next hop
	// tcpParkedMax bounds the packets a worker sets aside while their
	// next hops resolve; more are dropped (counted no_neighbour) and
	// their connections retransmit.
	tcpParkedMax = 256
)

// tcpPath is the Engine's TCP: the Stack, its listeners and sessions.
type tcpPath struct {
	e  *Engine
	st *tcp.Stack
	wq []*tcpWorker // by worker position (Engine.work)
	// gso: the packet socket TCP packets go out through; nil: the AF_XDP
	// tx rings (TCPConfig.NoGSO).
	gso *gsoTx
	// icmp reads the routers' ICMP errors about the Stack's connections
	// (tcp_icmp.go); nil if its sockets could not be opened.
	icmp *icmpWatch
	// nbUnreachable counts the connects failed because the kernel's
	// neighbour entry of their next hop failed (tcpWorker.unreachable).
	nbUnreachable atomic.Uint64
	// corruptLog limits the warnings about connections reset for a
	// corrupt fifo to one a second (an app can break its fifos as fast
	// as it opens connections); the metrics count every one.
	corruptLog logLimit

	mu    sync.Mutex // guards the maps below and the sessions' mutable fields
	lis   map[flow.Handle]*tcpListener
	conns map[flow.Handle]*tcpSess // by half-open, then established handle
	apps  map[sessions.AppID]*tcpApp
	users map[sessions.AppID]uint32 // the uid of each app's process (Engine.SetAppUser)
	// unlistened are the listeners unlisten took out of lis whose gVisor
	// listener has not closed yet (ListenerClosed): their counts are
	// read live until they join their namespace's, so that the
	// namespace's refusals never go down between the two.
	unlistened map[*tcpListener]struct{}
	// marking are the apps whose library marks what its Accept takes
	// (Engine.SetAppMarksAccepts).
	marking map[sessions.AppID]bool
	addrs   map[netip.Addr]bool // the addresses given to the Stack
	// picked are the ports the kernel picked for listeners of port 0
	// (pickListenPort), held until their listen takes them over.
	picked map[netip.AddrPort]*tcpReservation

	// Ports of active opens that ended in order, held in the kernel while
	// gVisor may keep them in TIME-WAIT (the kernel knows nothing of it
	// and would hand them out again), oldest first.
	coolMu sync.Mutex // guards cool, coolBy and the sessions' kept; may be taken under mu, never mu under it
	cool   []cooling
	// coolBy counts by uid (0 not counted) the ports of active opens kept
	// after the layer let their sessions go: from the app's close while
	// the connection drains, and in cool. They count against the uid's
	// bound on ports (sessions.PortKeeper).
	coolBy map[uint32]int

	refused atomic.Uint64 // accepts refused (limits, no memory, app gone)
	// twOverflow counts the connections holdPort ended early, past
	// TCPConfig.MaxTimeWait.
	twOverflow atomic.Uint64
	closeOnce  sync.Once

	// nsDone are the counts of finished connections and closed listeners
	// by namespace id, of the namespaces the layer has; guarded by mu. A
	// connection or listener adds its counts to the entry of its
	// namespace that it took when it was made (tcpSess.nsDone,
	// tcpListener.nsDone): one that ends after its namespace was deleted
	// (forgetNamespace) adds them to an entry no longer in the map, and
	// does not bring the namespace back.
	nsDone map[string]*TCPNamespaceStats
}

// cooling is a port reservation (nil: none) and a 5-tuple's steering
// (unsteer, nil: none) held until until.
type cooling struct {
	s       *tcpSess // the connection, shown while it lingers (nil: none)
	res     *tcpReservation
	unsteer func()
	until   time.Time
}

// maxCool is TCPConfig.MaxTimeWait or its default.
func (p *tcpPath) maxCool() int {
	if n := p.e.cfg.TCP.MaxTimeWait; n > 0 {
		return n
	}
	return DefaultTCPMaxTimeWait
}

// timeWait is how long a port stays held after its connection's Closed:
// gVisor's TIME-WAIT, which starts once the FINs are exchanged (a Conn's
// Closed comes when ours is queued), plus a margin for that exchange.
func (p *tcpPath) timeWait() time.Duration {
	tw := p.e.cfg.TCP.Stack.TimeWait
	if tw <= 0 {
		tw = 60 * time.Second
	}
	return tw + 3*time.Second
}

// holdPort keeps res and the steering of a 5-tuple until gVisor's
// TIME-WAIT on it is over, or until gVisor closes a connection that has
// none (releasePorts). With maxCool held already, the oldest one that has
// nothing left to deliver (TIME-WAIT, FIN-WAIT-2) goes early; an orphan
// still delivering is bounded by the buffers and the close timeout
// instead. No lock of the Engine may be held.
func (p *tcpPath) holdPort(s *tcpSess, res *tcpReservation, unsteer func()) {
	var early cooling
	p.coolMu.Lock()
	if len(p.cool) >= p.maxCool() {
		if i := p.oldestIdleLocked(); i >= 0 {
			early = p.cool[i]
			if i == 0 {
				p.cool[0] = cooling{}
				p.cool = p.cool[1:]
			} else {
				p.cool = slices.Delete(p.cool, i, i+1)
			}
			p.unkeepLocked(early.s)
			if early.s != nil && early.s.conn != nil && !early.s.conn.Finished() {
				p.twOverflow.Add(1)
			}
		}
	}
	p.cool = append(p.cool, cooling{s: s, res: res, unsteer: unsteer, until: time.Now().Add(p.timeWait())})
	p.keepLocked(s)
	p.coolMu.Unlock()
	early.release(p.e)
}

// oldestIdleLocked returns the index in cool of the oldest connection that
// gVisor has nothing left to deliver for (-1: none). The oldest is almost
// always one: an orphan delivering for longer than the close timeout is
// reset. coolMu must be held.
func (p *tcpPath) oldestIdleLocked() int {
	for i, c := range p.cool {
		if c.s == nil || c.s.conn == nil || !c.s.conn.Delivering() {
			return i
		}
	}
	return -1
}

// dropPort releases s's port and the steering of its 5-tuple (unsteer,
// nil: none) at once: a connection reset, or never established. No lock
// of the Engine may be held.
func (p *tcpPath) dropPort(s *tcpSess, unsteer func()) {
	p.coolMu.Lock()
	p.unkeepLocked(s)
	p.coolMu.Unlock()
	if unsteer != nil {
		unsteer()
	}
	p.e.handBackTCP(s.res)
}

// keepWhileHeld counts s's port against its uid before the layer, told
// that its transport ended the session, stops counting it: from then until
// finish holds it for TIME-WAIT or drops it, on the worker's turn, it is
// the datapath's to count, so that the uid's bound has no gap between the
// two counts.
func (p *tcpPath) keepWhileHeld(s *tcpSess) {
	p.coolMu.Lock()
	p.keepLocked(s)
	p.coolMu.Unlock()
}

// keepLocked counts the port of active open s in coolBy, once (coolMu
// held).
func (p *tcpPath) keepLocked(s *tcpSess) {
	if s == nil || s.res == nil || s.uid == 0 || s.kept {
		return
	}
	s.kept = true
	if p.coolBy == nil {
		p.coolBy = make(map[uint32]int)
	}
	p.coolBy[s.uid]++
}

// unkeepLocked takes s's port out of coolBy (coolMu held).
func (p *tcpPath) unkeepLocked(s *tcpSess) {
	if s == nil || !s.kept {
		return
	}
	s.kept = false
	if p.coolBy[s.uid]--; p.coolBy[s.uid] <= 0 {
		delete(p.coolBy, s.uid)
	}
}

// shedKept releases early at least n (if it has them), and up to
// shedBatch, of the ports held in cool for uid's connections that gVisor
// is done delivering for (TIME-WAIT, or closed), oldest first, as the list
// does when it is full, and returns how many: a batch spares the scan of
// the list to the connects that follow. The releases run on a goroutine
// of their own: the layer, whose lock the caller holds, takes back the
// steering.
func (p *tcpPath) shedKept(uid uint32, n int) int {
	n = max(n, shedBatch)
	var shed []cooling
	p.coolMu.Lock()
	keep := p.cool[:0]
	for _, c := range p.cool {
		if len(shed) < n && c.s != nil && c.s.kept && c.s.uid == uid && (c.s.conn == nil || !c.s.conn.Delivering()) {
			p.unkeepLocked(c.s)
			shed = append(shed, c)
		} else {
			keep = append(keep, c)
		}
	}
	clear(p.cool[len(keep):])
	p.cool = keep
	p.coolMu.Unlock()
	if len(shed) > 0 {
		go func() {
			for _, c := range shed {
				c.release(p.e)
			}
		}()
	}
	return len(shed)
}

// shedBatch is the fewest ports shedKept releases when it has them.
const shedBatch = 32

// keptPorts returns how many ports are held after the layer let go of the
// connections of uid's apps: draining, delivering, in TIME-WAIT
// (sessions.PortKeeper).
func (p *tcpPath) keptPorts(uid uint32) int {
	p.coolMu.Lock()
	defer p.coolMu.Unlock()
	return p.coolBy[uid]
}

// release stops the steering first: once the port is free the kernel may
// give it to a new connection, whose 5-tuple may be this one. Released
// before its time (shedKept, maxCooling, releasePorts at close), the
// connection may still be in gVisor's TIME-WAIT, which holds the port too:
// it is ended before the kernel's reservation goes (at its time it is
// CLOSED, and EndTimeWait does nothing). The reservation goes once the
// program no longer steers the 5-tuple (handback.go).
func (c cooling) release(e *Engine) {
	if c.unsteer != nil {
		c.unsteer()
	}
	if c.s != nil && c.s.conn != nil {
		c.s.conn.EndTimeWait()
	}
	e.handBackTCP(c.res)
}

// releasePorts releases what is held (all with all set) whose connection
// gVisor has closed, at once: its TIME-WAIT is over, or it had none (the
// peer closed first: LAST-ACK, then CLOSED, after which Linux frees the
// port too); what is held with no connection once its time is over; and
// the steering of a connection accepted by a listener since closed, once
// it has nothing left to deliver (TIME-WAIT, FIN-WAIT-2): the listener's
// port is the kernel's again (unlisten), and a kernel socket of it may
// get a new connection of the same 5-tuple. An orphan still delivering
// what its app sent before it closed (tcp.Stats.Orphans) keeps its port
// and steering past TIME-WAIT's time. No lock of the Engine may be held.
func (p *tcpPath) releasePorts(all bool) {
	p.coolMu.Lock()
	now := time.Now()
	var done []cooling
	keep := p.cool[:0]
	for _, c := range p.cool {
		noConn := c.s == nil || c.s.conn == nil
		unlistened := !noConn && c.s.from != nil && c.s.from.unlistened.Load() && !c.s.conn.Delivering()
		if all || (noConn && now.After(c.until)) || (!noConn && c.s.conn.Finished()) || unlistened {
			done = append(done, c)
			p.unkeepLocked(c.s)
		} else {
			keep = append(keep, c)
		}
	}
	clear(p.cool[len(keep):])
	p.cool = keep
	p.coolMu.Unlock()
	for _, c := range done {
		c.release(p.e)
	}
}

// tcpApp counts an app's live connections, so that its memory is closed
// only after the last one's Handler.Closed.
type tcpApp struct {
	live int
	gone bool
	free func() // the app's memory close, waiting for live == 0
}

// tcpListener is a global TCP listener of an app.
type tcpListener struct {
	p   *tcpPath
	h   flow.Handle
	app sessions.AppID
	ns  string // the app's namespace id
	// nsDone: the counts of its namespace it adds its own to when it
	// closes, and its connections theirs (tcpPath.nsDone); guarded by
	// p.mu. nil: none kept.
	nsDone *TCPNamespaceStats

	refusedGone, refusedMem atomic.Uint64 // accepts refused: app or listener gone, no fifo memory
	ln                      *tcp.Listener
	res                     *tcpReservation
	// unlistened is set once the listener is closed and its port given
	// back to the kernel (unlisten): the connections it accepted keep
	// their 5-tuples steered only while they deliver (releasePorts).
	unlistened atomic.Bool

	// The sessions handed to apps that their Accept has not taken yet
	// (fifo.Fifo.Taken), oldest first, held to backlog once the app
	// marked one or said it marks (marks; SetAppMarksAccepts): an app of
	// an earlier version may never mark.
	backlog int
	pendMu  sync.Mutex // after nothing: taken before p.mu, never under it
	pending []*tcpSess
	marks   bool
}

// Backlogged reports whether backlog sessions wait for the app's Accept
// (tcp.Backlogger): the Listener then leaves further connections in
// gVisor's accept queue, which drops SYNs once full, as a kernel
// listener's full accept queue does.
func (tl *tcpListener) Backlogged() bool {
	tl.pendMu.Lock()
	defer tl.pendMu.Unlock()
	if !tl.marks || len(tl.pending) < tl.backlog {
		// Not held back: room, or an app that has not marked (handed
		// keeps its list at backlog and learns when it marks).
		return false
	}
	return tl.pruneLocked() >= tl.backlog
}

// untaken counts the sessions handed to the app that it has not taken
// (nor were they ended or closed since), or -1 if the app has not marked
// any.
func (tl *tcpListener) untaken() int {
	tl.pendMu.Lock()
	defer tl.pendMu.Unlock()
	if !tl.marks {
		return -1
	}
	return tl.pruneLocked()
}

// pruneLocked drops from pending the sessions their app took, ended or
// closed, and returns how many are left (pendMu held).
func (tl *tcpListener) pruneLocked() int {
	p := tl.p
	keep := tl.pending[:0]
	p.mu.Lock()
	for _, s := range tl.pending {
		if s.untakenLocked() {
			keep = append(keep, s)
		}
	}
	p.mu.Unlock()
	clear(tl.pending[len(keep):])
	tl.pending = keep
	return len(keep)
}

// untakenLocked reports whether s, handed to its app by a listener, still
// waits for the app's Accept: open (openLocked) and not taken (p.mu held).
func (s *tcpSess) untakenLocked() bool {
	return s.openLocked() && !s.pair.Tx.Taken()
}

// openLocked reports whether s is neither ended nor closed, by its app or
// the datapath (p.mu held): only then may its fifos be read, as a finished
// session's app may be gone, its memory unmapped (finish marks it done
// under p.mu before it frees).
func (s *tcpSess) openLocked() bool { return !s.done && !s.ended && !s.byApp }

// handed records s, handed to its app, until its app takes it. Those
// taken at the front go at once, so that an app that keeps up holds no
// list (and keeps no ended session alive through it).
func (tl *tcpListener) handed(s *tcpSess) {
	tl.pendMu.Lock()
	defer tl.pendMu.Unlock()
	p := tl.p
	p.mu.Lock()
	for len(tl.pending) > 0 && !tl.pending[0].untakenLocked() {
		if tl.pending[0].openLocked() {
			tl.marks = true // taken
		}
		tl.pending[0] = nil
		tl.pending = tl.pending[1:]
	}
	p.mu.Unlock()
	if len(tl.pending) >= tl.backlog && !tl.marks {
		// An app that does not mark: forget the oldest (nothing holds
		// its listener back).
		tl.pending[0] = nil
		tl.pending = tl.pending[1:]
	}
	tl.pending = append(tl.pending, s)
}

// tcpSess is one connection: the Conn, the app's fifos, its owner worker.
type tcpSess struct {
	p    *tcpPath
	conn *tcp.Conn
	app  sessions.AppID
	ns   string // the app's namespace id
	// nsDone: the counts of its namespace it adds its own to when it
	// finishes (tcpPath.nsDone); guarded by p.mu. nil: none kept.
	nsDone *TCPNamespaceStats
	mem    sessions.AppMemory
	events *fifo.EventQueue
	pair   sessions.FifoPair
	w      *tcpWorker
	res    *tcpReservation // active opens: the local port
	uid    uint32          // active opens: the uid of the app's process (0: root or unknown)
	mtu    uint32          // active opens: the MTU of the route to the peer when it has one (0: the link's)
	kept   bool            // its port is in tcpPath.coolBy; guarded by coolMu
	from   *tcpListener    // accepted connections: the listener whose port it is

	// Guarded by p.mu.
	ho, h       flow.Handle // half-open handle (active opens), established handle
	established bool        // the layer has the session (its fifos are the session's)
	byApp       bool        // the app closed it
	reset       bool        // the app's close resets it (ResetOnClose)
	ended       bool        // the layer was told it ended (reset, connect failed)
	wasReset    bool        // it ended with a reset (no TIME-WAIT)
	unsteer     func()      // the layer's release of the 5-tuple (sessions.StreamKeeper.Linger)
	done        bool        // Handler.Closed ran: the fifos are free of the Conn
	free        func()      // the layer's free of the fifos, waiting for done
}

// tcpQueued is a packet of the Stack waiting in a worker's queue.
type tcpQueued struct {
	pkt tcp.Packet // retained
	at  time.Time  // when it was queued
}

// tcpParked is a parked packet and its destination.
type tcpParked struct {
	q tcpQueued
	k nbKey
}

// tcpWorker is a worker's part of TCP: the queue of packets the Stack sent
// through it and the sessions whose fifos it watches.
type tcpWorker struct {
	w *worker

	mu   sync.Mutex  // guards the ring
	ring []tcpQueued // retained packets, head first; grows to max
	head int
	n    int
	max  int

	// parked: packets set aside, in their order, while their next hops
	// resolve, so that they hold up no packet to another next hop (a
	// dial to an address nobody answers must not stall the other
	// connections). A packet whose next hop has parked packets is parked
	// behind them. parkedBy counts them by destination. Guarded by mu;
	// only the worker changes them.
	parked   []tcpParked
	parkedBy map[nbKey]int

	drops   atomic.Uint64
	waiting bool       // worker only: packets wait for their next hops or the socket
	own     []*tcpSess // worker only: sessions it kicks
	gso     *gsoTx     // the path's packet socket, or nil
	gb      gsoBatch   // worker only

	// Writes to the packet socket outside the worker (direct), guarded
	// by mu: when the last packet was queued or written, the next hops
	// the worker confirmed, by destination, and the scratch; counted
	// apart from the worker's counters.
	last         time.Time
	srcMAC       [6]byte
	hops         map[nbKey]nextHopEntry
	ds           gsoScratch
	directSent   atomic.Uint64
	directFailed atomic.Uint64
}

func newTCPPath(e *Engine) (*tcpPath, error) {
	p := &tcpPath{e: e, lis: map[flow.Handle]*tcpListener{}, unlistened: map[*tcpListener]struct{}{}, conns: map[flow.Handle]*tcpSess{},
		apps: map[sessions.AppID]*tcpApp{}, users: map[sessions.AppID]uint32{}, marking: map[sessions.AppID]bool{}, addrs: map[netip.Addr]bool{},
		picked: map[netip.AddrPort]*tcpReservation{}, nsDone: map[string]*TCPNamespaceStats{}}
	mtu := e.ifc.MTU
	if mtu <= 0 {
		mtu = 1500
	}
	qn := e.cfg.TCP.TxQueue
	if qn <= 0 {
		qn = DefaultTCPTxQueue
	}
	for _, w := range e.work {
		p.wq = append(p.wq, &tcpWorker{w: w, ring: make([]tcpQueued, min(qn, tcpTxQueueMin)), max: qn})
	}
	opts := e.cfg.TCP.Stack
	opts.MTU = uint32(mtu)
	opts.BufferGroup = bufferGroup
	// A link whose peer is on this host (the checksum mode accepts partial
	// checksums) hands TCP segments over with the checksum left to
	// offload, as it does UDP: trust them there, as the kernel trusts a
	// CHECKSUM_PARTIAL segment; verify them in software elsewhere.
	opts.RXChecksumOffload = opts.RXChecksumOffload || e.partialOK
	if !e.cfg.TCP.NoGSO {
		g, err := openGSOTx(e.nsh, e.ifc.Index)
		if err != nil {
			e.log.Warn("tcp: sending one frame per segment through AF_XDP", "err", err)
		} else {
			p.gso = g
			for _, tw := range p.wq {
				tw.gso = g
				tw.hops = map[nbKey]nextHopEntry{}
				copy(tw.srcMAC[:], e.ifc.MAC)
			}
		}
	}
	opts.HostGSO = p.gso != nil
	opts.TTL, opts.HopLimit = e.hop[0], e.hop[1]
	st, err := tcp.NewStack(tcp.WriterFunc(p.write), opts)
	if err != nil {
		if p.gso != nil {
			p.gso.close()
		}
		return nil, fmt.Errorf("tcp: %w", err)
	}
	p.st = st
	p.syncAddrs(e.ifc.Addrs)
	if p.icmp, err = openICMPWatch(e.nsh); err != nil {
		e.log.Warn("tcp: routers' ICMP errors not read: connections keep their MSS on a smaller path and connects to an unreachable peer wait for their timeout", "err", err)
	}
	return p, nil
}

// syncAddrs gives the Stack exactly the addresses in as.
func (p *tcpPath) syncAddrs(as []netip.Prefix) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := map[netip.Addr]netip.Prefix{}
	for _, pr := range as {
		want[pr.Addr().Unmap()] = pr
	}
	for a := range p.addrs {
		if _, ok := want[a]; !ok {
			_ = p.st.RemoveAddress(a)
			delete(p.addrs, a)
		}
	}
	for a, pr := range want {
		if !p.addrs[a] {
			if err := p.st.AddAddress(netip.PrefixFrom(a, pr.Bits())); err == nil {
				p.addrs[a] = true
			} else {
				p.e.log.Warn("tcp: address not added", "addr", a, "err", err)
			}
		}
	}
}

// releaseIdlePorts releases, each second, the ports held for connections
// gVisor has closed and those whose time is over (releasePorts).
func (p *tcpPath) releaseIdlePorts(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.releasePorts(false)
		}
	}
}

// tcpCloseDrain bounds how long a closing Engine waits for its workers to
// send the resets of its TCP connections (tcpPath.resetAll).
const tcpCloseDrain = 250 * time.Millisecond

// resetAll ends every connection with a reset to its peer, as a kernel
// does for the connections of a process that exits: it closes the Stack,
// whose aborts queue the resets, and waits up to drain for the workers,
// which must still run, to send what is queued. A peer that only waits to
// read learns at once that the connection is gone instead of never.
func (p *tcpPath) resetAll(drain time.Duration) {
	_ = p.st.Close()
	for end := time.Now().Add(drain); time.Now().Before(end); time.Sleep(time.Millisecond) {
		queued := 0
		for _, tw := range p.wq {
			tw.mu.Lock()
			queued += tw.n + len(tw.parked)
			tw.mu.Unlock()
		}
		if queued == 0 {
			return
		}
	}
}

// close aborts every connection and listener and stops the Stack. The
// workers must be stopped: what the Stack sent and they did not is
// released unsent. It is idempotent.
func (p *tcpPath) close() error {
	var err error
	p.closeOnce.Do(func() {
		err = p.st.Close()
		for _, tw := range p.wq {
			tw.discard()
		}
		if p.gso != nil {
			err = errors.Join(err, p.gso.close())
		}
		if p.icmp != nil {
			p.icmp.close()
		}
	})
	p.releasePorts(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for h, l := range p.lis {
		l.res.close()
		delete(p.lis, h)
	}
	for k, res := range p.picked {
		res.close()
		delete(p.picked, k)
	}
	return err
}

// --- outbound: Stack → worker tx queue → AF_XDP tx ring ---

// write queues one packet of the Stack on a worker's queue (by destination,
// so that one peer's packets keep their order), or writes a lone one to
// the packet socket at once (tcpWorker.direct). Called by gVisor's
// goroutines, the pumps, and a worker moving an app's tx fifo into gVisor
// (tcp.Conn.PushTx from poll), which drains its queue after.
func (p *tcpPath) write(pkt tcp.Packet) bool {
	dst := pkt.Dst()
	var hsh uint32
	if dst.IsValid() {
		b := dst.As16()
		hsh = binary.LittleEndian.Uint32(b[12:]) ^ binary.LittleEndian.Uint32(b[8:])
	}
	tw := p.wq[int(hsh%uint32(len(p.wq)))]
	now := time.Now()
	tw.mu.Lock()
	quiet := now.Sub(tw.last) > gsoDirectGap
	tw.last = now
	if quiet && tw.n == 0 && len(tw.parked) == 0 && tw.gso != nil && pkt.HasPayload() && tw.direct(pkt, now) {
		tw.mu.Unlock()
		return true
	}
	if tw.n == len(tw.ring) && !tw.grow() {
		tw.mu.Unlock()
		tw.drops.Add(1)
		return false
	}
	tw.ring[(tw.head+tw.n)%len(tw.ring)] = tcpQueued{pkt: pkt.Retain(), at: now}
	tw.n++
	first := tw.n == 1
	tw.mu.Unlock()
	if first {
		tw.w.wakeUp()
	}
	return true
}

// direct writes pkt to the packet socket from the caller's goroutine when
// the worker confirmed its next hop within gsoNextHopFresh, and reports
// whether it did (sent, or refused and counted). It saves the packet the
// hand-over to the worker and the worker's wake-up, which is most of a
// request's or a reply's time on a quiet queue. Called with tw.mu held
// and nothing queued, so that the packet cannot overtake one the worker
// holds; a full socket buffer or an unknown next hop leaves the packet to
// the queue.
func (tw *tcpWorker) direct(pkt tcp.Packet, now time.Time) bool {
	k, ok := pktDst(pkt)
	if !ok {
		return false
	}
	e, ok := tw.hops[k]
	if !ok || now.Sub(e.at) > gsoNextHopFresh || e.gen != tw.w.e.res.gen.Load() {
		return false
	}
	if tw.w.e.capture.Load() != nil {
		return false // the worker captures what it sends
	}
	r, _ := tw.gso.send(&tw.ds, pkt, tw.srcMAC, e.mac, nil, 0)
	switch r {
	case gsoSent:
		tw.directSent.Add(1)
		return true
	case gsoFailed:
		tw.directFailed.Add(1)
		return true
	}
	return false
}

const (
	// gsoDirectGap: a packet with data that follows the queue's previous
	// packet by more than this is written by its own goroutine
	// (tcpWorker.direct); closer packets, and packets without data, go
	// through the worker. A write to the packet socket runs the link's
	// transmit, and on a veth the peer's receive, in the writer's system
	// call: in gVisor's goroutines that holds up a stream (a bulk
	// receive's acknowledgements written there: 1.1-1.4 instead of 1.8
	// Gbit/s in perf --tcp), while the worker writes them beside gVisor's
	// work. For a lone request or reply it saves the worker's wake-up
	// (request/response over one connection: 2,850-4,100 instead of
	// 2,136-2,523 transactions/s).
	gsoDirectGap = 100 * time.Microsecond
	// gsoNextHopFresh is how long after the worker last resolved a next
	// hop the TCP path writes packets to it without the worker. The
	// worker's resolver follows neighbour changes within its own
	// lifetimes; a packet of a next hop not confirmed for this long goes
	// through the worker, which confirms it again.
	gsoNextHopFresh = time.Second
)

// nextHopEntry is a next hop the worker resolved, when, and the
// resolver's gen then: a next hop that moved since is not used.
type nextHopEntry struct {
	mac [6]byte
	at  time.Time
	gen uint64
}

// grow doubles the ring, up to max; false when it is at max.
func (tw *tcpWorker) grow() bool {
	if len(tw.ring) >= tw.max {
		return false
	}
	r := make([]tcpQueued, min(2*len(tw.ring), tw.max))
	for i := range tw.n {
		r[i] = tw.ring[(tw.head+i)%len(tw.ring)]
	}
	tw.ring, tw.head = r, 0
	return true
}

// discard releases every queued packet (the Stack is closing).
func (tw *tcpWorker) discard() {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	for tw.n > 0 {
		tw.pop()
	}
	for i := range tw.parked {
		tw.parked[i].q.pkt.Release()
	}
	clear(tw.parked)
	tw.parked = tw.parked[:0]
	clear(tw.parkedBy)
}

// poll is the worker's TCP work of one loop: send what the Stack queued,
// kick the Conns whose fifos the app touched. It reports whether anything
// was done or waits (a next hop resolving).
func (p *tcpPath) poll(w *worker) bool {
	tw := p.wq[w.q]
	busy := false
	for _, s := range tw.own {
		if s.pair.Tx.HasEvent() {
			// Cleared here, not only by the Conn's pump: until the pump
			// ran, every loop would see it again and keep the worker
			// from ever sleeping. The app sets it again (and kicks) when
			// it queues more.
			s.pair.Tx.ClearEvent()
			if s.pair.Tx.Queued() {
				w.apps.took(s.app)
			}
			// The worker moves the data into gVisor itself unless the
			// pump has the Conn; what gVisor sends for it is drained
			// below, in this loop.
			if !s.conn.PushTx() {
				s.conn.Kick()
			}
			w.tcpWork = true
			busy = true
		}
		if s.pair.Rx.TakeDeqNotify() {
			s.conn.Kick() // the app made room in a full rx fifo
			w.tcpWork = true
			busy = true
		}
	}
	if tw.drain() {
		busy = true
	}
	return busy || tw.waiting
}

// ready reports whether poll has something to do for worker w's TCP
// sessions: an app queued data (the event flag of a tx fifo) or made room
// in a full rx fifo. A spinning worker looks here without a system call;
// packets gVisor queued for it come with a wake-up (worker.woke). Worker
// goroutine only.
func (p *tcpPath) ready(w *worker) bool {
	for _, s := range p.wq[w.q].own {
		if s.pair.Tx.HasEvent() || s.pair.Rx.DeqNotified() {
			return true
		}
	}
	return false
}

// appActive reports whether a session of app that worker w kicks has
// something for the worker: data or a close mark behind the event flag of
// its tx fifo, or a dequeue notification of its rx fifo that made room the
// Conn waits for (WantsRoom). The flag and the notification are the app's
// to write: neither alone, nor data without the flag, is work. Worker
// goroutine only.
func (p *tcpPath) appActive(w *worker, app sessions.AppID) bool {
	for _, s := range p.wq[w.q].own {
		if s.app != app {
			continue
		}
		if s.pair.Tx.HasEvent() && (s.pair.Tx.Queued() || s.pair.Tx.CloseRequested()) ||
			s.pair.Rx.DeqNotified() && s.pair.Rx.HasRoom() && s.conn.WantsRoom() {
			return true
		}
	}
	return false
}

// drain moves queued packets into the tx ring, framed for their next hop,
// or (with the packet socket) writes them in sendmmsg(2) calls of up to
// gsoBatchMax in queue order. One call for a loop's packets instead of a
// writev(2) each: request/response over 32 connections (go run ./perf
// --tcp --quick --only tcprr64-c32/xsessiond, six interleaved rounds)
// did 29,321–32,727 transactions/s at 29.6–32.8 µs of the server's CPU
// each with writev, 33,903–40,390 at 22.6–28.4 µs with sendmmsg, about 8
// packets a call.
func (tw *tcpWorker) drain() bool {
	w := tw.w
	x := &w.tx
	tw.waiting = false
	tw.mu.Lock()
	if tw.n == 0 && len(tw.parked) == 0 {
		tw.mu.Unlock()
		return false
	}
	x.now = time.Now()
	if len(tw.parked) > 0 {
		tw.unpark()
	}
	sent := 0
	for tw.n > 0 {
		q := &tw.ring[tw.head]
		k, ok := pktDst(q.pkt)
		if !ok {
			tw.pop()
			continue
		}
		nb := x.neighbour(k)
		if !nb.ok {
			if (nb.failed && nb.noRoute) || nb.failedHop(x.now) || x.now.Sub(q.at) > tcpHold {
				if nb.failed && nb.noRoute {
					w.c.Drops[dropNoRoute]++
				} else {
					w.c.Drops[dropNoNeighbour]++
				}
				// A failed next hop, at once, or after tcpHold when the
				// kernel probes it again meanwhile (and did not answer):
				// a handshake's SYN fails its connect.
				if nb.unreachable {
					tw.unreachable(q.pkt)
				}
				tw.pop()
				continue
			}
			// Resolving: set aside, so that the packets behind it to
			// other next hops go on.
			tw.park(k)
			continue
		}
		if tw.parkedBy[k] > 0 {
			// Its next hop's earlier packets are set aside (the
			// resolver answered since): it goes after them.
			tw.park(k)
			continue
		}
		if nb.mtu > 0 {
			// A SYN-ACK to a peer behind a route of smaller MTU says
			// an MSS that fits it, as the kernel's says.
			q.pkt.ClampMSS(nb.mtu)
		}
		if tw.gso != nil {
			// The head packet and those behind it whose next hop is
			// known go in one sendmmsg. They stay queued while they are
			// written, outside the lock: producers only append, and only
			// this worker pops.
			b := &tw.gb
			b.add(q.pkt, x.srcMAC, nb.mac, k)
			for b.n < gsoBatchMax && b.n < tw.n {
				p := tw.ring[(tw.head+b.n)%len(tw.ring)].pkt
				pk, ok := pktDst(p)
				if !ok {
					break
				}
				pn := x.neighbour(pk)
				if !pn.ok || tw.parkedBy[pk] > 0 {
					break
				}
				if pn.mtu > 0 {
					p.ClampMSS(pn.mtu)
				}
				b.add(p, x.srcMAC, pn.mac, pk)
			}
			tw.mu.Unlock()
			n, r, err := tw.gso.sendBatch(b)
			tw.mu.Lock()
			for i := range n {
				b.sent(i, w.cap, w.q)
				w.c.TxGSO++
				sent++
				// One map write per run of packets to one next hop.
				if i+1 == n || b.keys[i+1] != b.keys[i] || b.macs[i+1] != b.macs[i] {
					if len(tw.hops) >= maxTemplates {
						clear(tw.hops)
					}
					tw.hops[b.keys[i]] = nextHopEntry{mac: b.macs[i], at: x.now, gen: x.nbGen}
				}
				tw.pop()
			}
			b.reset()
			if r == gsoAgain {
				tw.waiting = true
				break
			}
			if r == gsoFailed {
				w.c.Drops[dropTxKernel]++
				w.e.log.Debug("tcp: packet socket", "err", err)
				tw.pop()
			}
			continue
		}
		addr, ok := x.frame()
		if !ok {
			// No frame free until the kernel completes some: the rest
			// waits (nothing is dropped, so nothing is counted).
			tw.waiting = true
			break
		}
		buf := w.sock.Buffer(addr)
		plen := q.pkt.Len()
		if len(buf) < frame.EthHeaderLen+plen {
			x.unframe(addr)
			w.c.Drops[dropTxTooLong]++
			tw.pop()
			continue
		}
		copy(buf[0:6], nb.mac[:])
		copy(buf[6:12], x.srcMAC[:])
		et := uint16(frame.EtherTypeIPv4)
		if k.fam == flow.Family6 {
			et = frame.EtherTypeIPv6
		}
		binary.BigEndian.PutUint16(buf[12:14], et)
		q.pkt.CopyTo(buf[frame.EthHeaderLen:])
		w.cap.tx(w.q, buf[:frame.EthHeaderLen+plen], nil)
		x.queue(xsk.Desc{Addr: addr, Len: uint32(frame.EthHeaderLen + plen)}, nil, 0)
		tw.pop()
		sent++
		if len(x.descs) == cap(x.descs) {
			tw.mu.Unlock()
			x.flush()
			tw.mu.Lock()
		}
	}
	if len(tw.parked) > 0 {
		tw.waiting = true
	}
	tw.mu.Unlock()
	x.flush()
	return sent > 0
}

// park moves the head packet, to k, to the parked ones, or drops it when
// tcpParkedMax are parked. Worker only, with mu held.
func (tw *tcpWorker) park(k nbKey) {
	if len(tw.parked) >= tcpParkedMax {
		tw.w.c.Drops[dropNoNeighbour]++
		tw.pop()
		return
	}
	q := &tw.ring[tw.head]
	tw.parked = append(tw.parked, tcpParked{q: *q, k: k})
	if tw.parkedBy == nil {
		tw.parkedBy = map[nbKey]int{}
	}
	tw.parkedBy[k]++
	*q = tcpQueued{}
	tw.head = (tw.head + 1) % len(tw.ring)
	tw.n--
}

// unpark puts back at the head of the ring, in their order and ahead of
// everything queued since, the parked packets whose next hop the
// resolver answered (usable, failed or unreachable) or that waited
// longer than tcpHold; drain then sends or drops them. The others stay
// parked. Packets to one next hop share its answer, so their order holds.
// Worker only, with mu held and x.now set.
func (tw *tcpWorker) unpark() {
	x := &tw.w.tx
	j := len(tw.parked) // tw.parked[j:] are kept, in their order
	for i := len(tw.parked) - 1; i >= 0; i-- {
		p := tw.parked[i]
		nb := x.neighbour(p.k)
		wait := !nb.ok && !(nb.failed && nb.noRoute) && !nb.failedHop(x.now) && x.now.Sub(p.q.at) <= tcpHold
		if wait || (tw.n == len(tw.ring) && !tw.grow()) {
			// Still resolving, or no room: it stays parked, and so do
			// those behind it to p.k.
			j--
			tw.parked[j] = p
			continue
		}
		tw.head = (tw.head - 1 + len(tw.ring)) % len(tw.ring)
		tw.ring[tw.head] = p.q
		tw.n++
		if tw.parkedBy[p.k]--; tw.parkedBy[p.k] == 0 {
			delete(tw.parkedBy, p.k)
		}
	}
	n := copy(tw.parked, tw.parked[j:])
	clear(tw.parked[n:])
	tw.parked = tw.parked[:n]
}

// unreachable tells the Stack that the peer of pkt, a handshake's SYN
// whose next hop the kernel failed to resolve, is unreachable: the
// connect fails with EHOSTUNREACH, as a kernel socket's does when its
// neighbour entry fails. The Stack is told on a goroutine of its own,
// its endpoint locks being none of the worker's to wait for.
func (tw *tcpWorker) unreachable(pkt tcp.Packet) {
	local, remote, syn, ok := pkt.Conn()
	if !ok || !syn {
		return
	}
	if p := tw.w.e.tcp; p != nil {
		go func() {
			if p.st.Unreachable(local, remote, tcp.HostUnreachable) {
				p.nbUnreachable.Add(1)
			}
		}()
	}
}

// pop releases the head packet.
func (tw *tcpWorker) pop() {
	q := &tw.ring[tw.head]
	q.pkt.Release()
	*q = tcpQueued{}
	tw.head = (tw.head + 1) % len(tw.ring)
	tw.n--
}

// pktDst returns the destination of a packet of the Stack as a resolver
// key.
func pktDst(p tcp.Packet) (nbKey, bool) {
	src, dst := p.Addrs()
	k, ok := addrKey(dst)
	return k.withSrc(src), ok
}

// addrKey is the resolver's key of a.
func addrKey(a netip.Addr) (nbKey, bool) {
	if !a.IsValid() {
		return nbKey{}, false
	}
	fam := flow.Family6
	if a.Unmap().Is4() {
		fam = flow.Family4
	}
	return nbKey{addr: flow.AddrBytes(a), fam: fam}, true
}

// inject hands the TCP packets of a received batch to the Stack at once,
// so that the link coalesces each connection's run of segments (Ethernet
// header stripped; the Stack copies them).
func (p *tcpPath) inject(w *worker, pkts [][]byte) {
	w.c.Delivered += uint64(p.st.Link().InjectBatch(pkts))
	w.tcpWork = true
}

// adopt makes worker tw kick s's Conn. Worker goroutine (a posted call).
func (tw *tcpWorker) adopt(s *tcpSess) {
	s.p.mu.Lock()
	done := s.done
	s.p.mu.Unlock()
	if !done {
		tw.own = append(tw.own, s)
	}
}

// disown stops kicking s. Worker goroutine.
func (tw *tcpWorker) disown(s *tcpSess) {
	if i := slices.Index(tw.own, s); i >= 0 {
		tw.own = slices.Delete(tw.own, i, i+1)
	}
}

// pickWorker spreads connections over the workers, round robin.
func (p *tcpPath) pickWorker() *tcpWorker {
	e := p.e
	e.mu.Lock()
	defer e.mu.Unlock()
	i := int(e.nextLW) % len(e.work)
	e.nextLW++
	return p.wq[i]
}

// --- listeners ---

// listen opens a global TCP listener: the port reserved in the kernel, a
// Stack listener whose connections become the app's sessions.
func (p *tcpPath) listen(l sessions.Listener) error {
	addr := kernelKey(l.Endpoint)
	p.mu.Lock()
	res := p.picked[addr]
	delete(p.picked, addr)
	p.mu.Unlock()
	if res == nil {
		p.e.flushHandbacks(flow.TransportTCP, addr)
		var err error
		if res, err = p.reserve(addr); err != nil {
			return fmt.Errorf("listen %s: %w", l.Endpoint.URI(), err)
		}
	}
	p.mu.Lock()
	tl := &tcpListener{p: p, h: l.Handle, app: l.App, ns: l.Namespace, nsDone: p.nsDoneLocked(l.Namespace), res: res, marks: p.marking[l.App]}
	p.mu.Unlock()
	backlog := p.e.cfg.TCP.Backlog
	if backlog <= 0 {
		backlog = DefaultTCPBacklog
	}
	tl.backlog = p.st.ListenBacklog(backlog) // gVisor's, and the app's bound
	if !addr.Addr().IsLoopback() {
		// A loopback listener has no Stack listener: no frame from the
		// link may carry a loopback address (and the Stack has none, so
		// an IPv6 one would not even bind); the layer's cut-through
		// serves it, the kernel's hold keeps its port.
		ln, err := p.st.Listen(addr, tl.backlog, p.owner(l.App), tl)
		if err != nil {
			res.close()
			return err // the Stack's names the listen and its address
		}
		tl.ln = ln
	}
	p.mu.Lock()
	p.lis[l.Handle] = tl
	p.mu.Unlock()
	return nil
}

// reserve holds local in the kernel (reserveTCP) from a socket of the
// interface's namespace.
func (p *tcpPath) reserve(local netip.AddrPort) (*tcpReservation, error) {
	var res *tcpReservation
	err := doIn(p.e.nsh, func() error {
		var err error
		res, err = reserveTCP(netip.AddrPortFrom(p.e.scoped(local.Addr()), local.Port()))
		return err
	})
	return res, err
}

// pickListenPort has the kernel pick the port of a listener of port 0
// and holds it for the listen (enginePath.ReservePort).
func (p *tcpPath) pickListenPort(ep sessions.Endpoint) (uint16, error) {
	res, err := p.reserve(kernelKey(ep))
	if err != nil {
		return 0, fmt.Errorf("reserve %s in the kernel: %w", ep.URI(), err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if old := p.picked[res.addr]; old != nil { // cannot happen: the kernel refuses a second bind
		old.close()
	}
	p.picked[res.addr] = res
	return res.addr.Port(), nil
}

// dropListenPort releases the port the kernel picked for a listener of
// port 0 whose listen never took it (the bind failed after it). A
// listener's own port is released by unlisten.
func (p *tcpPath) dropListenPort(k netip.AddrPort) {
	p.mu.Lock()
	res := p.picked[k]
	delete(p.picked, k)
	p.mu.Unlock()
	res.close()
}

func (p *tcpPath) unlisten(l sessions.Listener) {
	p.mu.Lock()
	tl := p.lis[l.Handle]
	delete(p.lis, l.Handle)
	if tl != nil && tl.ln != nil {
		p.unlistened[tl] = struct{}{}
	}
	p.mu.Unlock()
	if tl != nil {
		// The gVisor listener, and the kernel's hold of the port once
		// the program no longer steers it (handback.go): a listener of
		// the daemon's that takes the port meanwhile ends the hold.
		if tl.ln != nil {
			tl.ln.Close()
		}
		p.e.handBackTCP(tl.res)
		// The port is the kernel's again, and so are the 5-tuples of
		// the connections the listener accepted that wait in
		// TIME-WAIT: a kernel listener of the port must get a new
		// connection of one of them, as the kernel's own TIME-WAIT
		// lets it. Released on a goroutine of its own: the layer,
		// whose lock the caller holds, takes back the steering.
		tl.unlistened.Store(true)
		go p.releasePorts(false)
	}
}

// Accept makes the connection a session of the listening app.
func (tl *tcpListener) Accept(c *tcp.Conn) (rx, tx *fifo.Fifo, h tcp.Handler, err error) {
	p := tl.p
	l := p.e.layer.Load()
	if l == nil {
		return nil, nil, nil, ErrNotStarted
	}
	local, remote := c.LocalAddr(), c.RemoteAddr()
	fam := flow.Family4
	if remote.Addr().Is6() {
		fam = flow.Family6
	}
	t := flow.FiveTuple{Local: flow.AddrBytes(local.Addr()), LocalPort: local.Port(), Remote: flow.AddrBytes(remote.Addr()),
		RemotePort: remote.Port(), Proto: flow.TransportTCP, Family: fam}
	// The global rules once more (the worker dropped the first segment if
	// a rule said so then): a forward rule hands the connection to the
	// named app's listener; a drop rule added since refuses it.
	lh, app := tl.h, tl.app
	if rt := l.GlobalRules(p.e.fib); rt != nil {
		m, ok := rt.Match(&t)
		switch v, ln, _ := checkRules(m, ok, l, p.e.fib, &t); v {
		case ruleDrop:
			p.refused.Add(1)
			return nil, nil, nil, fmt.Errorf("accept: rule %d: %w", m.ID, flow.ErrFiltered)
		case ruleForward:
			lh, app = ln.Handle, ln.App
		}
	}
	tw := p.pickWorker()
	s := &tcpSess{p: p, conn: c, app: app, ns: tl.ns, nsDone: tl.nsDone, w: tw, established: true, from: tl}
	if !p.addLive(app) {
		p.refused.Add(1)
		tl.refusedGone.Add(1)
		return nil, nil, nil, fmt.Errorf("accept: app %d: %w", app, flow.ErrNotAttached)
	}
	if mtu := p.routeMTU(local, remote, 0); mtu > 0 {
		// Before the app hears of the connection, so that none of its
		// segments leaves larger than the route takes: this runs on
		// the listener's pump, which holds none of gVisor's locks.
		p.st.LowerPathMTU(local, remote, mtu)
	}
	ss, err := l.StreamAccepted(tw.w.id, lh, t, func(ss sessions.StreamSession) {
		s.h, s.pair, s.mem = ss.Handle, ss.Pair, ss.Memory
		s.bindLocked()
	})
	if err != nil {
		if errors.Is(err, flow.ErrNoMemory) {
			tl.refusedMem.Add(1)
		} else {
			tl.refusedGone.Add(1)
		}
		if p.refused.Add(1)%1000 == 1 {
			p.e.log.Warn("tcp: connection refused", "listener", uint64(tl.h), "remote", remote, "err", err)
		}
		p.endLive(app) // counted against the app a rule may have forwarded it to
		return nil, nil, nil, fmt.Errorf("accept: %w", err)
	}
	if lh == tl.h {
		// One a rule forwarded to another app's listener is that app's
		// to take, which may not mark (an earlier version): it does not
		// count against this listener's backlog.
		tl.handed(s)
	}
	return ss.Pair.Rx, ss.Pair.Tx, s, nil
}

// routeMTU returns the MTU of the namespace's route to remote when it is
// smaller than the interface's (an mtu metric, or a path MTU the kernel
// learned) and than sized, the route MTU the connection was opened with
// (DialMTU; 0: none), and 0 otherwise: the MTU to lower the connection's
// MSS to, as Linux's TCP sizes its segments by the route. The resolver
// knows it from the next hop it resolved for the handshake.
func (p *tcpPath) routeMTU(local, remote netip.AddrPort, sized uint32) uint32 {
	k, ok := addrKey(remote.Addr())
	if !ok {
		return 0
	}
	k = k.withSrc(local.Addr())
	r := p.e.res.get(k, time.Now())
	if !r.ok || r.mtu <= 0 || uint32(r.mtu) >= p.st.Link().MTU() || (sized > 0 && uint32(r.mtu) >= sized) {
		return 0
	}
	return uint32(r.mtu)
}

// ListenerClosed keeps the listener's counts. Its port was released by
// unlisten, or by close.
func (tl *tcpListener) ListenerClosed(ln *tcp.Listener) {
	p := tl.p
	p.mu.Lock()
	if tl.nsDone != nil {
		tl.nsDone.addListener(tl, ln)
	}
	delete(p.unlistened, tl)
	p.mu.Unlock()
}

// --- sessions ---

// bindLocked registers s under s.h (the layer's lock held) and has its
// worker watch its fifos.
func (s *tcpSess) bindLocked() {
	p := s.p
	if m, ok := sessions.FifoManager(s.mem); ok {
		s.events = m.EventQueue()
	}
	p.mu.Lock()
	p.conns[s.h] = s
	p.mu.Unlock()
	tw := s.w
	if sh := tw.w.shard; sh != nil {
		sh.Post(func(*sessions.Shard) { tw.adopt(s) })
	}
}

// refLocked names s to the layer (p.mu held): the check of its rx fifo
// keeps a late report of this connection off a new session that got its
// handle after the app closed it.
func (s *tcpSess) refLocked() sessions.StreamRef {
	return sessions.StreamRef{Handle: s.h, Rx: s.pair.Rx}
}

// addLive counts a new connection of app; false when the app is gone.
func (p *tcpPath) addLive(app sessions.AppID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.apps[app]
	if a == nil {
		a = &tcpApp{}
		p.apps[app] = a
	}
	if a.gone {
		return false
	}
	a.live++
	return true
}

// endLive counts a connection of app out; the last one of a gone app
// frees its memory.
func (p *tcpPath) endLive(app sessions.AppID) {
	p.mu.Lock()
	a := p.apps[app]
	var free func()
	if a != nil {
		a.live--
		if a.live <= 0 {
			if a.gone {
				free = a.free
				delete(p.apps, app)
			} else if a.free == nil {
				delete(p.apps, app)
			}
		}
	}
	p.mu.Unlock()
	if free != nil {
		free()
	}
}

// open starts an active open for the layer's half-open session: the
// local port reserved in the kernel, then (off the layer's lock) the fifos
// and the Stack's Dial.
func (p *tcpPath) open(req sessions.OpenRequest) (netip.AddrPort, error) {
	e := p.e
	r := req.Remote
	dst := r.Addr.Unmap()
	rt, err := e.connectRoute(dst)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if rt.Broadcast || rt.Multicast {
		// As the kernel's TCP refuses it.
		return netip.AddrPort{}, fmt.Errorf("connect %v: a broadcast or multicast address, and a TCP connection goes to one host: %w", dst, flow.ErrNetUnreachable)
	}
	if !p.addLive(req.App) {
		return netip.AddrPort{}, fmt.Errorf("app %d: %w", req.App, flow.ErrNotAttached)
	}
	res, err := p.reserve(netip.AddrPortFrom(rt.Src.Unmap(), 0))
	if err != nil {
		p.endLive(req.App)
		return netip.AddrPort{}, err
	}
	s := &tcpSess{p: p, app: req.App, ns: req.Namespace, res: res, ho: req.HalfOpen, mtu: uint32(rt.MTU)}
	p.mu.Lock()
	s.uid = p.users[req.App]
	s.nsDone = p.nsDoneLocked(req.Namespace)
	p.conns[req.HalfOpen] = s
	p.mu.Unlock()
	go p.dial(s, netip.AddrPortFrom(dst, r.Port))
	return res.addr, nil
}

// dial allocates the half-open session's fifos, waits until the program's
// maps steer its 5-tuple (else the peer's answer would reach the kernel,
// which resets it) and dials.
func (p *tcpPath) dial(s *tcpSess, remote netip.AddrPort) {
	l := p.e.layer.Load()
	fail := func(err error) {
		p.e.log.Debug("tcp: connect failed", "remote", remote, "err", err)
		p.mu.Lock()
		if p.conns[s.ho] == s {
			delete(p.conns, s.ho)
		}
		s.done = true
		p.mu.Unlock()
		// The port's count against the uid if the app closed the
		// half-open meanwhile (closeByApp), and the port once the
		// layer's removal of the half-open is applied (handback.go).
		p.coolMu.Lock()
		p.unkeepLocked(s)
		p.coolMu.Unlock()
		_ = l.ConnectFailed(s.ho, err)
		p.e.handBackTCP(s.res)
		p.endLive(s.app)
	}
	ss, err := l.StreamFifos(s.ho)
	if err != nil {
		fail(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = p.e.progress.wait(ctx, func() bool { return p.e.mirror.Stats().LastSeq >= ss.Seq || p.e.mirror.NeedsResync() })
	cancel()
	s.pair, s.mem = ss.Pair, ss.Memory
	if m, ok := sessions.FifoManager(s.mem); ok {
		s.events = m.EventQueue()
	}
	s.w = p.pickWorker()
	p.mu.Lock()
	closed := s.byApp || p.conns[s.ho] != s
	p.mu.Unlock()
	if closed {
		l.StreamFreeFifos(s.app, s.mem, s.pair)
		fail(flow.ErrConnect)
		return
	}
	if p.e.SteerRefused(s.ho) {
		// The program's established map is full: the peer's answer
		// would reach the kernel, which resets it.
		l.StreamFreeFifos(s.app, s.mem, s.pair)
		fail(ErrSessionTableFull)
		return
	}
	c, err := p.st.DialMTU(s.res.addr, remote, s.mtu, p.owner(s.app), s.pair.Rx, s.pair.Tx, s)
	if err != nil {
		l.StreamFreeFifos(s.app, s.mem, s.pair)
		fail(connectErr(err))
		return
	}
	p.mu.Lock()
	if s.conn == nil {
		// Connected did not run yet. Once it has, the worker reads
		// s.conn (it adopts s after Connected set it): no second write.
		s.conn = c
	}
	abort := s.byApp
	p.mu.Unlock()
	if abort {
		c.Abort()
	}
}

// connectErr maps a Conn's error to the sentinel the app gets.
func connectErr(err error) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: %w", flow.ErrRefused, err)
	case errors.Is(err, syscall.ETIMEDOUT):
		return fmt.Errorf("%w: %w", flow.ErrTimedOut, err)
	case errors.Is(err, syscall.ENETUNREACH):
		return fmt.Errorf("%w: %w", flow.ErrNetUnreachable, err)
	case errors.Is(err, syscall.EHOSTUNREACH):
		return fmt.Errorf("%w: %w", flow.ErrUnreachable, err)
	case errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("%w: %w", flow.ErrReset, err)
	case errors.Is(err, tcp.ErrTooManyConns):
		return fmt.Errorf("%w: %w", flow.ErrNoMemory, err)
	}
	return fmt.Errorf("%w: %w", flow.ErrConnect, err)
}

// closeByApp closes the connection of session h (established or
// half-open) as its app asked: in order (FIN after what is queued), or
// reset when the app is gone or asked for it (ResetOnClose).
func (p *tcpPath) closeByApp(h flow.Handle) bool {
	p.mu.Lock()
	s := p.conns[h]
	if s == nil {
		p.mu.Unlock()
		return false
	}
	s.byApp = true
	c := s.conn
	gone := p.apps[s.app] != nil && p.apps[s.app].gone
	half := !s.established
	reset := s.reset
	// The layer no longer counts the session; its port stays held while
	// the connection drains, and counts against its uid from now on.
	// Counted under mu, so that it comes before the release of a session
	// that ends meanwhile (finish, dial's failure: both take it out of
	// conns under mu first, then drop what is counted).
	p.keepWhileHeld(s)
	p.mu.Unlock()
	if c != nil {
		if gone || half || reset {
			c.Abort()
		} else {
			c.Close()
		}
	}
	return true
}

// KeepFifos: see sessions.StreamKeeper.
func (p *tcpPath) KeepFifos(h flow.Handle, free func()) func() {
	p.mu.Lock()
	s := p.conns[h]
	p.mu.Unlock()
	if s == nil {
		return free
	}
	return func() {
		p.mu.Lock()
		if !s.done {
			s.free = free
			free = nil
		}
		p.mu.Unlock()
		if free != nil {
			free()
		}
	}
}

// owner is app's owner number in the Stack: the app in its low 32 bits
// (the Stack's MaxConnsPerOwner counts per app), its user's uid above them
// (0 for root's apps; bufferGroup).
func (p *tcpPath) owner(app sessions.AppID) uint64 {
	p.mu.Lock()
	uid, ok := p.users[app]
	p.mu.Unlock()
	if !ok || uid == 0 {
		return uint64(app)
	}
	return uint64(uid)<<32 | uint64(app)
}

// bufferGroup is the group of the Stack's owner o for the bound on its
// connections' buffers (tcp.Options.GroupBufferBytes): the apps of one
// user share one, as they share the user's segment memory; each of root's
// apps has its own, as root's apps are not bounded together elsewhere.
func bufferGroup(o uint64) uint64 {
	if o>>32 == 0 {
		return o
	}
	return o &^ (1<<32 - 1)
}

// setUser records the uid of app's process (Engine.SetAppUser).
func (p *tcpPath) setUser(app sessions.AppID, uid uint32) {
	p.mu.Lock()
	p.users[app] = uid
	p.mu.Unlock()
}

// AppGone resets every connection of app.
func (p *tcpPath) AppGone(app sessions.AppID) {
	p.mu.Lock()
	delete(p.users, app)
	delete(p.marking, app)
	if a := p.apps[app]; a != nil {
		a.gone = true
	}
	var cs []*tcp.Conn
	for _, s := range p.conns {
		if s.app == app {
			s.byApp = true
			if s.conn != nil {
				cs = append(cs, s.conn)
			}
		}
	}
	p.mu.Unlock()
	for _, c := range cs {
		c.Abort()
	}
}

// KeepApp: see sessions.StreamKeeper.
func (p *tcpPath) KeepApp(app sessions.AppID, free func()) func() {
	return func() {
		p.mu.Lock()
		a := p.apps[app]
		if a != nil && a.live > 0 {
			a.free = free
			a.gone = true
			free = nil
		} else {
			delete(p.apps, app)
		}
		p.mu.Unlock()
		if free != nil {
			free()
		}
	}
}

// --- tcp.Handler ---

// Connected hands the connection to the layer as an established session.
func (s *tcpSess) Connected(c *tcp.Conn) {
	p := s.p
	l := p.e.layer.Load()
	_, err := l.StreamConnected(s.w.w.id, s.ho, s.pair, func(h flow.Handle) {
		p.mu.Lock()
		s.conn = c // Dial may not have returned yet
		s.h, s.established = h, true
		if p.conns[s.ho] == s {
			delete(p.conns, s.ho)
		}
		p.conns[h] = s
		p.mu.Unlock()
		tw := s.w
		if sh := tw.w.shard; sh != nil {
			sh.Post(func(*sessions.Shard) { tw.adopt(s) })
		}
	})
	if err != nil {
		c.Abort() // the app closed it meanwhile
		return
	}
	if mtu := p.routeMTU(c.LocalAddr(), c.RemoteAddr(), s.mtu); mtu > 0 {
		// A smaller route MTU learned since the dial: told on a
		// goroutine of its own, this handler being gVisor's to call.
		go p.st.LowerPathMTU(c.LocalAddr(), c.RemoteAddr(), mtu)
	}
}

// ConnectFailed tells the app why its connect failed.
func (s *tcpSess) ConnectFailed(c *tcp.Conn, err error) {
	p := s.p
	p.e.log.Debug("tcp: connect failed", "remote", c.RemoteAddr(), "err", err)
	p.mu.Lock()
	s.ended = true
	p.mu.Unlock()
	_ = p.e.layer.Load().ConnectFailed(s.ho, connectErr(err))
}

// Readable signals the app.
func (s *tcpSess) Readable(*tcp.Conn) { s.signal() }

// Writable signals the app.
func (s *tcpSess) Writable(*tcp.Conn) { s.signal() }

func (s *tcpSess) signal() {
	if s.events != nil {
		_ = s.events.Signal()
	}
}

// PeerClosed tells the app of the peer's FIN.
func (s *tcpSess) PeerClosed(*tcp.Conn) {
	p := s.p
	p.mu.Lock()
	ref, ok := s.refLocked(), s.established && !s.byApp
	p.mu.Unlock()
	if ok {
		_ = p.e.layer.Load().StreamPeerClosed(ref)
	}
	s.signal()
}

// ResetAhead tells the app that its connection was reset while gVisor
// holds data received before: its writes fail now (the session goes on
// until Reset, once the data is in the rx fifo).
func (s *tcpSess) ResetAhead(_ *tcp.Conn, err error) {
	p := s.p
	p.mu.Lock()
	ref, ok := s.refLocked(), s.established && !s.byApp && !s.ended
	p.mu.Unlock()
	if ok {
		_ = p.e.layer.Load().StreamResetAhead(ref, resetWhy(err))
	}
}

// resetWhy is the session layer's word for the error a Conn was reset
// with: a timeout (retransmissions or keepalive probes unanswered), a fifo
// the app corrupted, a reset after the peer's FIN (a broken pipe); nil
// for a plain reset.
func resetWhy(err error) error {
	switch {
	case errors.Is(err, syscall.ETIMEDOUT):
		return fmt.Errorf("%w: %w", flow.ErrTimedOut, err)
	case errors.Is(err, tcp.ErrFifoCorrupt):
		return fmt.Errorf("%w: %w", flow.ErrFifoCorrupt, err)
	case errors.Is(err, syscall.EPIPE):
		return flow.ErrBrokenPipe // the peer reset after its FIN
	}
	return nil
}

// Reset ends the session with a reset event, which tells the app a
// timeout (retransmissions or keepalive probes unanswered), a fifo the
// app corrupted and a reset after the peer's FIN (a broken pipe) apart
// from a reset.
func (s *tcpSess) Reset(_ *tcp.Conn, err error) {
	p := s.p
	p.mu.Lock()
	ref, ok := s.refLocked(), s.established && !s.byApp && !s.ended
	s.ended, s.wasReset = true, true
	p.mu.Unlock()
	if ok {
		p.keepWhileHeld(s) // until finish drops it
	}
	if errors.Is(err, tcp.ErrFifoCorrupt) {
		if quiet, ok := p.corruptLog.allow(time.Now()); ok {
			p.e.log.Warn("tcp: connection reset: its app broke a fifo's indices", "app", s.app,
				"session", uint64(ref.Handle), "err", err, "not_logged_before", quiet)
		}
	}
	if ok {
		_ = p.e.layer.Load().StreamReset(ref, resetWhy(err))
	}
}

// CloseRequested: the app marked its tx fifo closed. The session ends as
// the app's Disconnect on the control socket would end it: the layer
// forgets it and closes the Conn in order (closeByApp). A mark in a
// session the layer no longer has, or that ended, changes nothing.
func (s *tcpSess) CloseRequested(*tcp.Conn) {
	p := s.p
	p.mu.Lock()
	ref, ok := s.refLocked(), s.established && !s.byApp && !s.ended
	p.mu.Unlock()
	if ok {
		_ = p.e.layer.Load().StreamCloseRequested(ref)
	}
}

// Closed: the Conn no longer touches the fifos. The layer is told the
// session ended (if nobody told it yet), the fifos are freed when the layer
// already let them go, and the port is released.
func (s *tcpSess) Closed(c *tcp.Conn) {
	p := s.p
	l := p.e.layer.Load()
	p.mu.Lock()
	if s.conn == nil {
		s.conn = c // Dial has not returned yet
	}
	tell := s.established && !s.byApp && !s.ended
	s.ended = true
	ref := s.refLocked()
	p.mu.Unlock()
	if tell {
		p.keepWhileHeld(s)
		_ = l.StreamClosed(ref)
	}
	// The worker stops looking at the fifos first; only then may they be
	// freed (the app's memory with its last connection).
	if tw := s.w; tw != nil && tw.w.shard != nil {
		tw.w.shard.Post(func(*sessions.Shard) {
			tw.disown(s)
			s.finish(l)
		})
		return
	}
	s.finish(l)
}

// finish releases what a Closed connection held: its fifos (now, or when
// the layer lets them go), its port and steering (after TIME-WAIT unless
// it was reset), its count against the app. No worker looks at it any
// more.
func (s *tcpSess) finish(l *sessions.Layer) {
	p := s.p
	p.mu.Lock()
	s.done = true
	if s.conn != nil && s.nsDone != nil {
		s.nsDone.addConn(s.conn.Info())
	}
	free := s.free
	s.free = nil
	for _, k := range []flow.Handle{s.ho, s.h} {
		if p.conns[k] == s {
			delete(p.conns, k)
		}
	}
	// A connection either end reset has no TIME-WAIT: its port goes at
	// once, as the kernel frees one after an RST (the app's Abort, a
	// close with data unread, a peer's reset).
	established, reset := s.established, s.wasReset || s.conn != nil && s.conn.ResetSent()
	unsteer := s.unsteer
	s.unsteer = nil
	p.mu.Unlock()
	if !established {
		l.StreamFreeFifos(s.app, s.mem, s.pair)
	}
	if free != nil {
		free()
	}
	if established && !reset {
		p.holdPort(s, s.res, unsteer)
	} else {
		p.dropPort(s, unsteer)
	}
	p.endLive(s.app)
}

// The Engine's Datapath is the layer's StreamKeeper through its TCP.

var _ sessions.StreamKeeper = (*enginePath)(nil)

// KeepFifos: see sessions.StreamKeeper.
func (p *enginePath) KeepFifos(h flow.Handle, free func()) func() {
	if p.e.tcp == nil {
		return free
	}
	return p.e.tcp.KeepFifos(h, free)
}

// NamespaceDeleted: see sessions.NamespaceForgetter.
func (p *enginePath) NamespaceDeleted(id string) {
	if p.e.tcp != nil {
		p.e.tcp.forgetNamespace(id)
	}
}

var _ sessions.NamespaceForgetter = (*enginePath)(nil)

// AppGone: see sessions.StreamKeeper.
func (p *enginePath) AppGone(app sessions.AppID) {
	p.e.appNetns.Delete(app)
	if p.e.tcp != nil {
		p.e.tcp.AppGone(app)
	}
}

// KeepApp: see sessions.StreamKeeper.
func (p *enginePath) KeepApp(app sessions.AppID, free func()) func() {
	if p.e.tcp == nil {
		return free
	}
	return p.e.tcp.KeepApp(app, free)
}

// conn returns the Conn of TCP session h.
func (p *enginePath) conn(h flow.Handle) (*tcp.Conn, error) {
	t := p.e.tcp
	if t == nil {
		return nil, fmt.Errorf("session %#x: %w", uint64(h), flow.ErrNoSession)
	}
	t.mu.Lock()
	s := t.conns[h]
	var c *tcp.Conn
	if s != nil {
		c = s.conn
	}
	t.mu.Unlock()
	if c == nil {
		return nil, fmt.Errorf("session %#x: %w", uint64(h), flow.ErrNoSession)
	}
	return c, nil
}

// ResetOnClose: see sessions.StreamKeeper.
func (p *enginePath) ResetOnClose(h flow.Handle) {
	t := p.e.tcp
	if t == nil {
		return
	}
	t.mu.Lock()
	if s := t.conns[h]; s != nil {
		s.reset = true
	}
	t.mu.Unlock()
}

// CloseWrite: see sessions.StreamKeeper.
func (p *enginePath) CloseWrite(h flow.Handle) error {
	c, err := p.conn(h)
	if err != nil {
		return err
	}
	c.CloseWrite()
	return nil
}

// TCPStats are the counts of the Engine's TCP.
type TCPStats struct {
	tcp.Stats
	AcceptRefused uint64 // connections a listener refused (app gone, no fifo memory)
	TxQueueDrops  uint64 // packets of the stack dropped on a full worker queue
	// DirectWrites counts the packets the Stack's goroutines wrote to the
	// packet socket themselves, a lone packet with data on a quiet queue
	// (tcpWorker.direct), rather than through a worker.
	DirectWrites uint64
	// Lingering are the connections whose session ended and that gVisor
	// still finishes (FIN-WAIT, TIME-WAIT, LAST-ACK, ...), not in
	// Stats.Conns; TimeWaitOverflow counts those ended early past
	// TCPConfig.MaxTimeWait.
	Lingering        int
	TimeWaitOverflow uint64
	// PathMTUMessages counts the routers' ICMP messages of a smaller path
	// MTU (fragmentation needed, packet too big) about a connection of
	// the Stack, each of which lowered its MSS if it was larger;
	// ConnectsUnreachable the connections in their handshake that ended
	// unreachable: a router's destination unreachable, or the kernel's
	// neighbour entry of their next hop failed.
	PathMTUMessages     uint64
	ConnectsUnreachable uint64
}

// SetAppUser tells the Engine the uid of app's process, before the app
// opens anything: the connections of one user's apps share the bound on
// their gVisor buffers (TCPConfig.Stack.GroupBufferBytes); root's apps
// are bounded each on its own.
func (e *Engine) SetAppUser(app sessions.AppID, uid uint32) {
	if e.tcp != nil {
		e.tcp.setUser(app, uid)
	}
}

// SetAppNetns tells the Engine the FIB of the network namespace app's
// process runs in, before the app opens anything. A datagram of the app
// to an address of this host goes through the kernel to the host's
// sockets only when that is the interface's namespace, where the app
// could send it with a kernel socket of its own; an app elsewhere (a
// container's namespace) gets no way in to the host's loopback through
// the daemon: its datagram is dropped, counted as no-route.
func (e *Engine) SetAppNetns(app sessions.AppID, fib flow.FIBID) { e.appNetns.Store(app, fib) }

// mayReachHost reports whether app's datagrams to an address of this host
// go through the kernel (SetAppNetns): udp.Target.HostReach.
func (e *Engine) mayReachHost(app sessions.AppID) bool {
	v, ok := e.appNetns.Load(app)
	return ok && v.(flow.FIBID) == e.fib
}

// SetAppMarksAccepts tells the Engine, before app opens anything, that
// app's library marks the sessions its Accept takes (fifo.Fifo.MarkTaken,
// protocol 2.2): its listeners are held to their backlog from the start,
// not only once a session was marked.
func (e *Engine) SetAppMarksAccepts(app sessions.AppID) {
	if p := e.tcp; p != nil {
		p.mu.Lock()
		p.marking[app] = true
		p.mu.Unlock()
	}
}

// TCPStats returns the counts of the Engine's TCP.
func (e *Engine) TCPStats() TCPStats {
	if e.tcp == nil {
		return TCPStats{}
	}
	s := TCPStats{Stats: e.tcp.st.Stats(), AcceptRefused: e.tcp.refused.Load(),
		Lingering: len(e.tcp.lingering()), TimeWaitOverflow: e.tcp.twOverflow.Load()}
	s.ConnectsUnreachable = e.tcp.nbUnreachable.Load()
	if w := e.tcp.icmp; w != nil {
		s.PathMTUMessages = w.tooBig.Load()
		s.ConnectsUnreachable += w.unreachables.Load()
	}
	for _, tw := range e.tcp.wq {
		s.TxQueueDrops += tw.drops.Load()
		s.DirectWrites += tw.directSent.Load()
	}
	return s
}

// Linger: see sessions.StreamKeeper. The 5-tuple of a connection stays
// steered while its port is held (holdPort), or until its Closed.
func (p *enginePath) Linger(h flow.Handle, release func()) {
	t := p.e.tcp
	if t == nil {
		go release()
		return
	}
	t.mu.Lock()
	s := t.conns[h]
	if s != nil && !s.done {
		s.unsteer = release
		release = nil
	}
	t.mu.Unlock()
	if release != nil {
		go release()
	}
}

// SetKeepalive: see sessions.StreamKeepaliver.
func (p *enginePath) SetKeepalive(h flow.Handle, k sessions.Keepalive) error {
	c, err := p.conn(h)
	if err != nil {
		return err
	}
	if err := c.SetKeepalive(tcp.Keepalive{Enabled: k.Enabled, Idle: k.Idle, Interval: k.Interval, Count: k.Count}); err != nil {
		return fmt.Errorf("session %#x: %w: %w", uint64(h), flow.ErrInvalidValue, err)
	}
	return nil
}

var _ sessions.StreamKeepaliver = (*enginePath)(nil)

// logLimit lets one log line through per second and counts the ones it
// held back.
type logLimit struct {
	last  atomic.Int64 // unix ns of the last line let through
	quiet atomic.Uint64
}

// allow reports whether a line may be logged at now, and how many were
// held back since the last one.
func (l *logLimit) allow(now time.Time) (quiet uint64, ok bool) {
	t, last := now.UnixNano(), l.last.Load()
	if t-last < int64(time.Second) || !l.last.CompareAndSwap(last, t) {
		l.quiet.Add(1)
		return 0, false
	}
	return l.quiet.Swap(0), true
}
