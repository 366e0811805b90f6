package datapath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/datapath/reasm"
	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/datapath/xsk"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/testhook"
	"github.com/xsessiond/xsessiond/loader"
	"github.com/xsessiond/xsessiond/nsbind"
	"github.com/xsessiond/xsessiond/sessions"
)

// Config configures an Engine.
type Config struct {
	IfName    string
	Netns     *nsbind.Namespace // the interface's netns, opened by the daemon (the Engine does not close it); nil: the current one
	NetnsName string            // for the pin path /sys/fs/bpf/xsessiond/<netns>/<ifname>/ ("" → derived)
	// NetnsPath is a file naming the netns (/run/netns/NAME,
	// /proc/PID/ns/net). Empty: found from Netns by inode under
	// /run/netns, or the current namespace.
	NetnsPath   string
	Queues      int // 0 = every rx queue of the interface
	Batch       int // frames per poll, 0 = 64
	BusyPoll    bool
	XDPMode     string // "auto" (default, see autoXDPMode), "native", "generic"
	FirstWorker uint32 // this engine's first worker = sessions shard index
	Logger      *slog.Logger

	// PinRoot overrides loader.DefaultPinRoot (tests).
	PinRoot string
	// MaxEstablished bounds the program's established map, the 5-tuples
	// of the sessions apps opened (0: loader.DefaultMaxEstablished). A
	// connect past it fails with flow.ErrLimit.
	MaxEstablished int
	// Addrs, when set, says which addresses the interface has: a
	// datagram whose source address is not one of them is dropped and
	// counted as tx-bad-source, so no app sends frames with a spoofed
	// source. HasAddress runs on the transmit path: it must not
	// allocate. The daemon passes its netlink view.
	Addrs interface {
		HasAddress(ifindex int, a netip.Addr) bool
	}
	// XSK shapes the AF_XDP sockets; zero fields take xsk's defaults.
	// NeedWakeup is always set.
	XSK xsk.Options
	// IdleTimeout bounds one sleep of an idle worker; 0 = 200ms.
	IdleTimeout time.Duration
	// IdleNap: while frames keep arriving (32 or more within a
	// millisecond, the last less than a millisecond ago), a worker whose
	// loop found nothing to do sleeps this long on a timer instead of in
	// poll, so that the kernel does not wake it a few frames at a time;
	// the next loop takes what arrived meanwhile as one batch. It adds up
	// to IdleNap of latency under load; with fewer frames the worker
	// sleeps in poll. 0 = DefaultIdleNap; negative = never nap. Ignored
	// with BusyPoll.
	IdleNap time.Duration
	// IdleSpin: a worker whose loop found nothing to do (and that does
	// not nap) keeps checking its rx ring, its tx fifos' event flags and
	// its mailbox, without a system call but for yields of its CPU, until
	// IdleSpin has passed since its last loop that delivered or sent an
	// app's datagrams, then sleeps in poll: a frame or reply that arrives
	// meanwhile costs no wakeup. The spin burns its CPU, so it trades CPU
	// for latency (poll.go). 0 = DefaultIdleSpin; negative = sleep at
	// once. Ignored with BusyPoll.
	IdleSpin time.Duration
	// IdleSpinMax: how long the spin may grow when the datagram gaps
	// after which the worker slept were longer than IdleSpin but shorter
	// than IdleSpinMax (poll.go); a longer gap halves it again, down to
	// IdleSpin. 0 = DefaultIdleSpinMax; negative (or not above IdleSpin) =
	// the spin stays IdleSpin.
	IdleSpinMax time.Duration
	// CPUs: the CPUs the workers run on, worker q on CPUs[q%len(CPUs)]
	// (cpus.go); each must be one the process may run on. Empty: the
	// scheduler places them.
	CPUs []int
	// Checksum is what a worker makes of a UDP checksum field holding
	// the pseudo-header sum (a local sender's checksum offload):
	// ChecksumAuto (""), ChecksumVerify or ChecksumAcceptPartial.
	Checksum string
	// TCP shapes the TCP transport (zero: its defaults).
	TCP TCPConfig
	// Reassembly bounds each worker's reassembly of UDP fragments
	// (fragment.go): datagrams in flight, fragments per datagram, and how
	// long a datagram's fragments may take (zero fields: reasm's
	// defaults, but for the timeouts, which are the namespace's
	// net.ipv4.ipfrag_time and net.ipv6.ip6frag_time).
	Reassembly reasm.Config
}

// DefaultIdleNap is Config.IdleNap's default. At a few hundred thousand
// frames per second a worker then takes some twenty frames per wakeup; the
// rx ring (xsk.DefaultRingSize) holds milliseconds of them.
const DefaultIdleNap = 50 * time.Microsecond

// DefaultBatch is the number of frames a worker takes per poll.
const DefaultBatch = 64

// Engine runs the datapath of one interface: the XDP program, one AF_XDP
// socket and one worker per queue, the mirror of the session tables into
// the program's maps, and the UDP transport's listeners and connected
// sessions. New loads and attaches; Start starts the goroutines; Close
// undoes both.
//
// Methods are safe for concurrent use. The sessions.Datapath it returns is
// called by the session layer under its control-plane lock and never
// blocks on a worker. Its locks are in the package's lock order.
type Engine struct {
	// closeMu serializes Close and Stats: Close releases what New made
	// (objs, att, work's sockets) with it held, and Stats reads them.
	closeMu sync.Mutex

	cfg      Config
	log      *slog.Logger
	nsh      netns.NsHandle
	ns       *nsbind.Namespace
	hop      [2]uint8 // IPv4 TTL and IPv6 hop limit of what the datapath sends (readHopLimits; 0: 64)
	ifc      nsbind.Interface
	mtu      atomic.Int64                            // the interface's MTU now (ifc.MTU is the one at start): followAddrs
	localSet atomic.Pointer[map[netip.Addr]struct{}] // the namespace's addresses and IPv4 broadcast ones, as syncLocals last read them (nil before)
	localGen atomic.Uint64                           // localSet's changes (stillLocal)
	fib      flow.FIBID
	objs     *loader.Objects
	att      *loader.Attachment
	work     []*worker
	dp       *enginePath
	res      *resolver
	tcp      *tcpPath
	sleep    *sleepPage // the workers' sleep flags (sleepflags.go)
	claims   chan claim

	// appNetns holds the FIB of each app's own network namespace
	// (SetAppNetns): sessions.AppID → flow.FIBID.
	appNetns sync.Map

	started atomic.Bool
	layer   atomic.Pointer[sessions.Layer]

	// Lock-free tables the workers read; replaced whole under mu.
	lis atomic.Pointer[map[flow.Handle]*udp.Target] // listeners in datagram mode, by handle
	est atomic.Pointer[estTable]                    // connected sessions, by 5-tuple (Local = this host)

	partialOK bool         // accept partial UDP checksums (Config.Checksum, resolved)
	synRate   float64      // TCPConfig.SynRate resolved: SYNs a second a worker hands over once they back up; 0: no pace
	local     localAddrs   // Config.Addrs when it knows every address of the namespace, else nil
	csumMode  string       // the checksum mode in effect, for Stats
	spinners  atomic.Int32 // workers spinning now (poll.go)

	releaseProcs func() // gives back the Ps Start added for the workers (procs.go)

	capture atomic.Pointer[Capture] // the capture running, nil: none (capture.go)

	claimsBusy atomic.Int64 // claims queued or being made
	// progress wakes those waiting for the mirror or the claims
	// (WaitMirror, a TCP dial waiting for its steering).
	progress progress
	// handbacks are the ports of listeners and connections that go back
	// to the kernel once the mirror stops steering them (handback.go).
	handbacks handbacks
	ownNS     bool       // ns was opened by New
	pw        *peerWatch // nil: peer errors not watched (tests without New)
	// peerRestore turns the veth peer's UDP segmentation offload back on
	// (generic mode on a veth: nsbind.NoPeerUDPSegmentation); once.
	peerRestore func() error
	peerErrors  atomic.Uint64
	kernelRxN   atomic.Uint64 // datagrams the kernel path delivered (kernelpath.go)
	kernelDrops atomic.Uint64 // and those it could not

	mu      sync.Mutex                          // guards conns, watched, ports, krx, sharers, nextLW, closed, cancel and mirErr; replaces lis and est
	conns   map[flow.Handle]*connectedSession   // connected sessions by half-open, then established handle
	watched map[int]*connectedSession           // claimed connected sessions by reservation fd (peerWatch)
	ports   map[netip.AddrPort]*udp.Reservation // listeners' ports held in the kernel (ports.go)
	krx     map[int]kernelReader                // what reads each opened kernel path, by its fd (kernelpath.go)
	// sharers are the UDP listeners of a specific address whose port a
	// wildcard listener's socket holds (shareOwnPort), by kernelKey: the
	// kernel path's datagrams to their address are theirs (kernelRx).
	sharers map[netip.AddrPort]*udp.Target
	nextLW  uint32 // round robin of listeners and claims over the workers
	closed  bool
	cancel  context.CancelFunc // ends the goroutines Start started
	mirErr  error              // the last resync's

	// Set once by Start, under mu, before it starts the goroutines that
	// use them; read without a lock by those goroutines, by WaitMirror
	// (after layer.Load, which Start stores last) and by Close (after
	// taking mu). Stats reads mirror under mu.
	mirror *loader.Mirror
	feed   *sessions.Feed
	wg     sync.WaitGroup // the goroutines Start started
}

// connectedSession is a connected UDP session the Engine opened for an
// app's connect (Datapath.Open): its port reservation, its Target and its
// owner worker.
type connectedSession struct {
	ho, h   flow.Handle
	tuple   flow.FiveTuple
	res     *udp.Reservation
	target  *udp.Target
	worker  *worker
	closed  bool
	remote  netip.AddrPort
	local   netip.AddrPort
	ifindex int
}

// claim is a half-open connect waiting for the claim goroutine.
type claim struct {
	ho flow.Handle
	c  *connectedSession
}

// New loads the XDP program and attaches it to cfg.IfName inside its
// namespace, and opens one AF_XDP socket per queue, registered in the
// program's xsks map. It starts nothing.
func New(cfg Config) (*Engine, error) {
	if cfg.IfName == "" {
		return nil, fmt.Errorf("new engine: no interface: %w", ErrInvalidConfig)
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Batch < 1 || cfg.Batch > 1024 {
		return nil, fmt.Errorf("new engine: batch %d: %w", cfg.Batch, ErrInvalidConfig)
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 200 * time.Millisecond
	}
	if cfg.IdleNap == 0 {
		cfg.IdleNap = DefaultIdleNap
	}
	if cfg.IdleSpin == 0 {
		cfg.IdleSpin = DefaultIdleSpin
	}
	if cfg.IdleSpinMax == 0 {
		cfg.IdleSpinMax = DefaultIdleSpinMax
	}
	if cfg.XDPMode == "" {
		cfg.XDPMode = "auto"
	}
	if err := CheckCPUs(cfg.CPUs); err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	cfg.CPUs = slices.Clone(cfg.CPUs)
	var err error
	if cfg.Checksum, err = ParseChecksum(cfg.Checksum); err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	mode, err := loader.ParseMode(cfg.XDPMode)
	if err != nil {
		return nil, fmt.Errorf("new engine: %w: %w", ErrInvalidConfig, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e := &Engine{cfg: cfg, log: log, conns: map[flow.Handle]*connectedSession{}, watched: map[int]*connectedSession{}, ports: map[netip.AddrPort]*udp.Reservation{}, krx: map[int]kernelReader{}, sharers: map[netip.AddrPort]*udp.Target{}, claims: make(chan claim, 1024)}
	e.lis.Store(&map[flow.Handle]*udp.Target{})
	e.est.Store(newEstTable(nil))
	e.local, _ = cfg.Addrs.(localAddrs)
	e.nsh, err = openNetns(cfg.NetnsPath, cfg.NetnsName, cfg.Netns)
	if err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			e.release()
		}
	}()
	e.ns = cfg.Netns
	if e.ns == nil {
		if err := doIn(e.nsh, func() error {
			var err error
			e.ns, err = nsbind.OpenCurrent()
			return err
		}); err != nil {
			return nil, fmt.Errorf("new engine: %w", err)
		}
		e.ownNS = true
	}
	e.fib = e.ns.FIB()
	e.ifc, err = e.ns.InterfaceByName(cfg.IfName)
	if err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	e.mtu.Store(int64(e.ifc.MTU))
	driver, derr := e.ns.Driver(cfg.IfName)
	if derr != nil && cfg.Checksum == ChecksumAuto {
		log.Warn("driver unknown: partial UDP checksums are dropped", "interface", cfg.IfName, "err", derr)
	}
	e.partialOK, e.csumMode = resolveChecksum(cfg.Checksum, driver)
	e.readHopLimits()
	e.readFragTimes()
	switch r := cfg.TCP.SynRate; {
	case r == 0:
		e.synRate = DefaultTCPSynRate
	case r > 0:
		e.synRate = float64(r)
	}
	// Only the queues in use can take an AF_XDP socket: IFLA_NUM_RX_QUEUES
	// counts the allocated ones, which can be more.
	active, err := e.ns.ActiveRxQueues(cfg.IfName)
	if err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	queues := cfg.Queues
	if queues == 0 {
		queues = active
	}
	if queues < 1 || queues > active {
		return nil, fmt.Errorf("new engine: %d queues asked on %s, which has %d rx queues in use (ask for at most that, 0 for all, or give it more: ethtool -L %s rx N or combined N): %w", queues, cfg.IfName, active, cfg.IfName, ErrInvalidConfig)
	}
	if queues < active {
		// The program steers a hit on a queue without a socket to the
		// kernel (no_xsk): a UDP datagram reaches the port's kernel
		// socket, which hands it on, but a TCP segment finds no kernel
		// listener or connection and is answered with a reset.
		log.Warn("fewer queues served than the interface receives on: packets of bound sessions that arrive on the others go to the kernel (counted as no_xsk), which resets their TCP connections; serve every queue (--queues 0) or spread the interface's flows over the served ones alone (ethtool -X IF equal N, or ethtool -L IF combined N)",
			"interface", cfg.IfName, "served", queues, "rx_queues", active)
	}
	if mode == loader.ModeAuto {
		mode = autoXDPMode(driver, active)
	}
	spec, err := loader.LoadSpec()
	if err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	// The program follows a fragmented datagram's verdict as long as the
	// workers wait for its fragments.
	e.objs, err = spec.Load(loader.ObjectsOptions{Queues: max(queues, e.ifc.RxQueues), FragmentTTL: max(e.cfg.Reassembly.Timeout, e.cfg.Reassembly.Timeout6), MaxEstablished: cfg.MaxEstablished,
		MAC: e.ifc.MAC, CheckLocal: true})
	if err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	if driver == "veth" && mode != loader.ModeGeneric {
		// A daemon killed in generic mode left the peer's offload off
		// (its note says so): a native program needs it off only while
		// attached, which the kernel sees to (and, while it is, refuses
		// to turn it on), so it goes back on first, as the killed one's
		// stop would have turned it. Generic mode takes the note over
		// below.
		if restored, err := e.ns.RestorePeerUDPSegmentation(e.ifc.Index); err != nil {
			log.Warn("the veth peer's tx-udp-segmentation, which a daemon killed in generic mode turned off, stays off (ethtool -K PEER tx-udp-segmentation on in the peer's namespace)",
				"interface", cfg.IfName, "err", err)
		} else if restored {
			log.Info("turned the veth peer's tx-udp-segmentation back on, which a daemon killed in generic mode left off", "interface", cfg.IfName)
		}
	}
	e.att, err = e.objs.Attach(loader.AttachOptions{IfIndex: e.ifc.Index, Netns: nsPath(e.nsh), NetnsName: cfg.NetnsName, Mode: mode, PinRoot: cfg.PinRoot})
	if err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	if e.att.Mode() == loader.ModeGeneric && driver == "veth" {
		// As native XDP's attach on a veth turns the peer's segmentation
		// offload off: a generic program cannot tell a UDP segmentation
		// burst of the peer's senders from one datagram.
		restore, err := e.ns.NoPeerUDPSegmentation(e.ifc.Index)
		if err != nil {
			log.Warn("the veth peer's UDP segmentation offload stays on: a peer's UDP_SEGMENT burst shorter than a page reaches the apps as one datagram; "+
				"turn it off (ethtool -K PEER tx-udp-segmentation off) or use xdp_mode native", "interface", cfg.IfName, "err", err)
		} else {
			e.peerRestore = sync.OnceValue(func() error {
				// A veth deleted (a container gone) took its peer
				// with it: nothing is left to turn back on.
				if err := restore(); !errors.Is(err, nsbind.ErrNoInterface) {
					return err
				}
				return nil
			})
			log.Info("the daemon turned tx-udp-segmentation off on the veth peer of "+cfg.IfName+" until it stops: "+
				"in generic mode the program would take a UDP_SEGMENT burst the peer's senders send for one datagram, "+
				"so the peer cuts the bursts into their datagrams (the kernel does the same for a native program)", "interface", cfg.IfName, "netns", cfg.NetnsName)
		}
	}
	opts := withRingDefaults(cfg.XSK)
	opts.NeedWakeup = true
	opts.MultiBuffer = true // chain.go
	if e.sleep, err = newSleepPage(); err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	for q := 0; q < queues; q++ {
		w, err := e.newWorker(q, opts)
		if err != nil {
			return nil, fmt.Errorf("new engine: queue %d: %w", q, err)
		}
		e.work = append(e.work, w)
	}
	e.dp = &enginePath{e: e}
	e.res = newResolver(e.ns, e.ifc.Index)
	if e.pw, err = newPeerWatch(); err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	if e.tcp, err = newTCPPath(e); err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	ok = true
	log.Info("datapath engine ready", "interface", cfg.IfName, "ifindex", e.ifc.Index, "queues", queues,
		"xdp", e.att.Mode().String(), "pins", e.att.PinDir(), "checksum", e.csumMode)
	return e, nil
}

// autoXDPMode is the attach mode "auto" becomes on an interface of the
// given driver with active rx queues in use: generic on a veth with one,
// native (with the loader's fallback to generic) elsewhere.
//
// On a veth, native XDP makes the veth take what its peer sends through
// a NAPI of its own; the frames of a local sender (its TCP keeps a clone
// of each segment) are copied into a page of the veth's pool before the
// program runs, and the peer's segmentation offload is turned off, so its
// TCP sends MSS-sized frames. Generic XDP runs the program in the receive
// softirq, where receive packet steering put it, and the peer keeps its
// offload: a 64 KiB segment comes as one multi-buffer frame, which the
// worker takes as a chain of descriptors (chain.go). On the perf rig (one
// rx queue, each host's receive on its own CPU; go run ./perf --tcp
// --quick, two interleaved rounds each, 2026-12-03): TCP bulk receive from
// a peer with TSO on (--peer-offload) 8.8–10.6 Gbit/s at 738–852 ms of
// B's CPU per GB in generic mode against 2.1–3.4 at 2,382–3,771 in native
// mode; with the peer's TSO off, as from a wire, 4.1–4.4 at 1,779–1,849
// against 2.7–2.9 at 2,743–2,967; 64-byte UDP receive 0.73–0.80 Mpps
// against 0.69–0.76 (three rounds). Request/response over one connection
// keeps its rate but takes about 1.4× B's CPU per transaction (77–81
// against 54–60 µs, three rounds): the program and the AF_XDP copy run in
// the interrupt that brings each request, where native mode's NAPI thread
// takes them; xdp_mode native takes that back. With several rx queues native mode stays: in generic mode a
// veth reports every frame on rx queue 0, so one worker would take them
// all.
func autoXDPMode(driver string, active int) loader.Mode {
	if driver == "veth" && active == 1 {
		return loader.ModeGeneric
	}
	return loader.ModeAuto
}

// nsPath names the namespace of h as a path the loader can open.
func nsPath(h netns.NsHandle) string { return fmt.Sprintf("/proc/self/fd/%d", int(h)) }

func (e *Engine) newWorker(q int, opts xsk.Options) (*worker, error) {
	var s *xsk.Socket
	err := doIn(e.nsh, func() error {
		var err error
		for try := 0; ; try++ {
			s, err = xsk.Open(e.ifc.Index, q, opts)
			if !errors.Is(err, xsk.ErrBusy) || try == 50 {
				return err
			}
			time.Sleep(10 * time.Millisecond) // a socket closed just before still holds the queue
		}
	})
	if err != nil {
		return nil, err
	}
	kick, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	w := newWorker(e, q, e.cfg.FirstWorker+uint32(q), s, kick)
	if e.sleep != nil && q < api.MaxKickFDs {
		w.sleepWord = e.sleep.word(q)
	}
	// The fill ring is full before the program can steer a frame here: a
	// worker that starts late on a loaded machine then finds its frames
	// in the rx ring, not dropped for want of a fill entry. (The socket
	// passes to the worker's goroutine when Start starts it.)
	s.Fill()
	if err := setBusyPoll(s.FD()); err != nil {
		e.log.Warn("busy polling not set", "queue", q, "err", err)
	}
	if err := e.objs.XSKs.Set(q, s.FD()); err != nil {
		w.closeFDs()
		return nil, err
	}
	return w, nil
}

// Workers returns how many workers (= queues) the Engine runs.
func (e *Engine) Workers() int { return len(e.work) }

// scoped gives a link-local IPv6 address the interface's index as its
// zone, which the kernel needs to bind or connect a socket to one: the
// engine's interface is the link. Other addresses come back as they are.
func (e *Engine) scoped(a netip.Addr) netip.Addr {
	if a.Is6() && (a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast()) {
		return a.WithZone(strconv.Itoa(e.ifc.Index))
	}
	return a
}

// IfIndex returns the interface's index in its namespace.
func (e *Engine) IfIndex() int { return e.ifc.Index }

// FIB returns the FIB of the interface's namespace.
func (e *Engine) FIB() flow.FIBID { return e.fib }

// Datapath returns the sessions.Datapath (a sessions.WorkerDatapath) to
// hand to sessions.New before Start.
func (e *Engine) Datapath() sessions.Datapath { return e.dp }

// KickFDs returns one eventfd per worker, in worker order: an app writes
// 1 to it after queueing into a tx fifo whose SetEvent returned true. The
// fds stay owned by the Engine.
func (e *Engine) KickFDs() []int {
	fds := make([]int, len(e.work))
	for i, w := range e.work {
		fds[i] = w.kick
	}
	return fds
}

// Start mirrors l's change feed into the program's maps and starts one
// worker goroutine per queue, worker q serving shard FirstWorker+q of l.
func (e *Engine) Start(l *sessions.Layer) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if e.started.Load() {
		return ErrStarted
	}
	if need := int(e.cfg.FirstWorker) + len(e.work); l.Workers() < need {
		return fmt.Errorf("start: the session layer has %d shards, the engine needs %d: %w", l.Workers(), need, ErrInvalidConfig)
	}
	// The namespace's addresses before any listener is steered: a
	// wildcard listener's packets to others are the kernel's.
	if _, err := e.syncLocals(); errors.Is(err, loader.ErrLocalsFull) {
		e.log.Warn("not every local address is in the XDP program's locals map: packets to the others on a wildcard listener's port take the kernel path", "err", err)
	} else if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	// Neighbour, route and rule changes, followed from now on
	// (resolver.follow).
	hops, err := e.ns.WatchNextHops(e.ifc.Index)
	if err != nil {
		e.log.Warn("neighbour, route and policy rule changes are not followed: a next hop's new MAC or route is used once resolved again, within 6 s", "err", err)
	}
	e.feed = l.Subscribe(4096)
	src := &feedSource{l: l, f: e.feed}
	m, err := loader.NewMirror(e.objs, src, loader.MirrorOptions{IfIndex: e.ifc.Index, Keep: served})
	if err != nil {
		e.feed.Close()
		if hops != nil {
			hops.Close()
		}
		return fmt.Errorf("start: %w", err)
	}
	e.mirror = m
	e.handbacks.applied = m.Stats().LastSeq
	e.layer.Store(l)
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	if hops != nil {
		e.wg.Add(1)
		go func() { defer e.wg.Done(); e.res.follow(ctx, hops) }()
	}
	e.wg.Add(6)
	go func() { defer e.wg.Done(); e.tcp.releaseIdlePorts(ctx) }()
	go func() { defer e.wg.Done(); e.followAddrs(ctx) }()
	go func() { defer e.wg.Done(); e.runPeerErrors() }()
	if w := e.tcp.icmp; w != nil {
		e.wg.Add(1)
		go func() { defer e.wg.Done(); w.run(ctx, e.tcp.st) }()
	}
	go func() { defer e.wg.Done(); e.runMirror(ctx) }()
	go func() { defer e.wg.Done(); e.res.run(ctx) }()
	go func() { defer e.wg.Done(); e.runClaims(ctx) }()
	e.releaseProcs = reserveProcs(len(e.work)) // procs.go
	for _, w := range e.work {
		w.shard = l.Shard(w.id)
		w.shard.SetNotify(w.wakeUp)
		e.wg.Add(1)
		go func() { defer e.wg.Done(); w.run() }()
	}
	e.started.Store(true)
	return nil
}

// feedSource is the mirror's loader.Source: a fresh snapshot of the
// layer, taken through the feed when it overflowed (which also re-arms
// it).
type feedSource struct {
	l *sessions.Layer
	f *sessions.Feed
}

func (s *feedSource) Snapshot() (uint64, []flow.Change) {
	var seq uint64
	var cs []flow.Change
	if s.f.NeedsResync() {
		seq, cs = s.f.Resync()
	} else {
		seq, cs = s.l.Snapshot()
	}
	return seq, cs
}

// The datapath serves UDP only. Listeners of other transports are in the
// session layer's tables for cut-through between apps of this host (a
// connect to a local address with a global listener): their packets must
// stay with the kernel, so the mirror keeps (MirrorOptions.Keep) only the
// listeners and sessions of transports the datapath serves; it skips the
// others in order, so the feed stays gap-free and MirrorStats.Skipped
// counts them.

// servedTransport reports whether the datapath carries the packets of t.
func servedTransport(t flow.Transport) bool {
	return t == flow.TransportUDP || t == flow.TransportTCP
}

// served reports whether a change of the layer's tables belongs in the
// program's maps.
func served(c *flow.Change) bool { return servedTransport(c.Tuple.Proto) }

// runMirror applies the feed to the maps, resyncs after an overflow and
// compares tables and maps every few seconds.
func (e *Engine) runMirror(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastCheck := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-e.feed.C():
			if d := testhook.MirrorApplyPause.Load(); d > 0 {
				time.Sleep(time.Duration(d))
			}
			if err := e.mirror.Apply(c); errors.Is(err, loader.ErrResyncNeeded) {
				e.resyncMirror()
			} else if err != nil {
				e.log.Warn("mirror: change not applied", "err", err)
			}
			e.runHandbacks()
			e.progress.note()
		case <-tick.C:
			if e.feed.NeedsResync() || e.mirror.NeedsResync() {
				e.resyncMirror()
			}
			e.runHandbacks()
			if time.Since(lastCheck) > 5*time.Second {
				lastCheck = time.Now()
				if d, err := e.mirror.Check(); err == nil && !d.IsZero() {
					e.log.Warn("mirror: maps diverged from the tables, resyncing", "missing", d.Missing, "extra", d.Extra, "mismatched", d.Mismatched)
					e.resyncMirror()
				}
			}
		}
	}
}

func (e *Engine) resyncMirror() {
	err := e.mirror.Resync()
	e.mu.Lock()
	e.mirErr = err
	e.mu.Unlock()
	e.runHandbacks()
	e.progress.note()
	if err != nil {
		e.log.Error("mirror: resync failed", "err", err)
	}
}

// WaitMirror waits until the program's maps reflect every change the
// session layer made before the call (and every connect handed to the
// Engine before it was claimed, and every port handed back by then is the
// kernel's: handback.go), or ctx ends.
func (e *Engine) WaitMirror(ctx context.Context) error {
	l := e.layer.Load()
	if l == nil {
		return ErrNotStarted
	}
	if err := e.progress.wait(ctx, func() bool { return len(e.claims) == 0 && e.claimsBusy.Load() == 0 }); err != nil {
		return err
	}
	seq := l.Seq()
	return e.progress.wait(ctx, func() bool { return e.mirror.Stats().LastSeq >= seq && !e.handbacksDue(seq) })
}

// SteerRefused reports whether the program's listener or established map
// refused the entry of listener or session h (full) and has not taken it
// since.
func (e *Engine) SteerRefused(h sessions.Handle) bool {
	return e.mirror != nil && e.mirror.Refused(h)
}

// progress wakes goroutines waiting for the mirror or the claims to get
// somewhere: each note closes the channel the waiters took. (A ticker
// polling every millisecond made every connect on the wire wait a
// millisecond or two: the mirror applies a change within microseconds.)
type progress struct {
	mu sync.Mutex
	ch chan struct{} // nil until a waiter takes one
}

// wait returns once done holds, or ctx's error once ctx ends first. done is
// evaluated after the channel is taken, so a note after the change it waits
// for wakes it.
func (p *progress) wait(ctx context.Context, done func() bool) error {
	for {
		p.mu.Lock()
		if p.ch == nil {
			p.ch = make(chan struct{})
		}
		ch := p.ch
		p.mu.Unlock()
		if done() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// note wakes the waiters: something they wait for may have changed.
func (p *progress) note() {
	p.mu.Lock()
	if p.ch != nil {
		close(p.ch)
		p.ch = nil
	}
	p.mu.Unlock()
}

// runClaims turns half-open connects into established sessions: UDP needs
// no handshake, so a connect is claimed at once, by the worker the Engine
// picks (round robin), not by the queue of a first reply.
func (e *Engine) runClaims(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case cl := <-e.claims:
			e.claim(cl)
			e.claimsBusy.Add(-1)
			e.progress.note()
		}
	}
}

func (e *Engine) claim(cl claim) {
	l := e.layer.Load()
	e.mu.Lock()
	if cl.c.closed || e.closed {
		e.mu.Unlock()
		return
	}
	w := e.work[int(e.nextLW)%len(e.work)]
	e.nextLW++
	e.mu.Unlock()
	h, err := l.Connected(w.id, cl.ho)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		// The layer told the app (or the app closed it meanwhile).
		if c := e.conns[cl.ho]; c == cl.c {
			delete(e.conns, cl.ho)
			c.closed = true
			res := c.res
			e.handBack(flow.TransportUDP, res.Addr(), func() { res.Close() })
		}
		e.log.Info("connect not claimed", "half-open", uint64(cl.ho), "err", err)
		return
	}
	c := cl.c
	delete(e.conns, cl.ho)
	c.h, c.worker = h, w
	e.conns[h] = c
	e.watchLocked(c)
	// The layer posted the session to w's shard; what follows runs after
	// it on w, which builds the session's Target from the shard's entry.
	w.shard.Post(func(sh *sessions.Shard) { w.addConn(sh, c) })
}

// estTable is an immutable table of the connected sessions of every
// worker, by 5-tuple (Local = this host), with a bitmap of their local
// ports: a datagram to a port no connected session uses (a listener's)
// skips the map.
type estTable struct {
	m     map[flow.FiveTuple]*udp.Target
	ports [65536 / 64]uint64
}

func newEstTable(m map[flow.FiveTuple]*udp.Target) *estTable {
	t := &estTable{m: m}
	for k := range m {
		t.ports[k.LocalPort/64] |= 1 << (k.LocalPort % 64)
	}
	return t
}

// lookup returns the Target of the session of 5-tuple k, or nil.
func (t *estTable) lookup(k *flow.FiveTuple) *udp.Target {
	if t.ports[k.LocalPort/64]&(1<<(k.LocalPort%64)) == 0 {
		return nil
	}
	return t.m[*k]
}

// publishConnLocked makes c's Target visible to every worker.
func (e *Engine) publishConnLocked(c *connectedSession) {
	old := e.est.Load().m
	m := make(map[flow.FiveTuple]*udp.Target, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[c.tuple] = c.target
	e.est.Store(newEstTable(m))
}

func (e *Engine) unpublishConnLocked(t flow.FiveTuple) {
	old := e.est.Load().m
	if _, ok := old[t]; !ok {
		return
	}
	m := make(map[flow.FiveTuple]*udp.Target, len(old))
	for k, v := range old {
		if k != t {
			m[k] = v
		}
	}
	e.est.Store(newEstTable(m))
}

// DetachXDP detaches the program from the interface and removes its pins
// now, leaving the workers running (their sockets receive nothing more),
// so that a stopping daemon gives the interface back to the kernel before
// it waits for anything. Close does the rest. It is idempotent.
func (e *Engine) DetachXDP() error {
	if e.att == nil {
		return nil
	}
	err := e.att.Close()
	if e.peerRestore != nil {
		err = errors.Join(err, e.peerRestore())
	}
	return err
}

// Close stops the workers and goroutines, closes the sockets, detaches
// the program and removes its pins. It is idempotent.
func (e *Engine) Close() error {
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	cancel := e.cancel
	e.mu.Unlock()
	if e.tcp != nil && cancel != nil {
		e.tcp.resetAll(tcpCloseDrain) // while the workers run
	}
	for _, w := range e.work {
		w.stop.Store(true)
		w.wakeUp()
	}
	if cancel != nil {
		cancel()
		e.pw.wake()
		if e.tcp != nil && e.tcp.icmp != nil {
			e.tcp.icmp.wake()
		}
	}
	e.wg.Wait()
	if e.releaseProcs != nil {
		e.releaseProcs()
	}
	if e.feed != nil {
		e.feed.Close()
	}
	if e.tcp != nil {
		_ = e.tcp.close()
	}
	// With the workers gone, run what the control plane still posted
	// (deferred frees) so memory is not held.
	for _, w := range e.work {
		if w.shard != nil {
			w.shard.SetNotify(nil) // before release closes the kick eventfd
			w.shard.Drain()
		}
		w.closeAppKicks()
	}
	e.mu.Lock()
	for h, c := range e.conns {
		c.closed = true
		e.unwatchLocked(c)
		c.res.Close()
		delete(e.conns, h)
	}
	e.closePortsLocked()
	e.mu.Unlock()
	e.closeHandbacks()
	return e.release()
}

// release frees what New acquired.
func (e *Engine) release() error {
	var errs []error
	if e.tcp != nil {
		errs = append(errs, e.tcp.close())
	}
	for _, w := range e.work {
		if e.objs != nil {
			_ = e.objs.XSKs.Delete(w.q)
		}
		errs = append(errs, w.closeFDs())
	}
	e.work = nil
	if e.sleep != nil {
		e.sleep.close()
		e.sleep = nil
	}
	if e.objs != nil {
		errs = append(errs, e.objs.Close())
		e.objs = nil
	}
	if e.peerRestore != nil {
		errs = append(errs, e.peerRestore())
	}
	if e.pw != nil {
		errs = append(errs, e.pw.close())
		e.pw = nil
	}
	if e.ownNS && e.ns != nil {
		errs = append(errs, e.ns.Close())
	}
	if e.nsh >= 0 {
		errs = append(errs, e.nsh.Close())
		e.nsh = -1
	}
	return errors.Join(errs...)
}

// syncLocals sets the program's locals map to the addresses of every
// interface of the namespace, and the TCP Stack's to those the kernel
// takes a connection to on the interface (stackAddrs), from one look at
// them, which it returns. A packet to a wildcard listener's port is
// steered only when addressed to one of them (the kernel takes any of its
// addresses on any interface); one routed through the host, or a
// broadcast, stays the kernel's (a broadcast reaches the app through the
// port's reservation, the kernel path).
func (e *Engine) syncLocals() ([]nsbind.Interface, error) {
	ifcs, err := e.ns.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("local addresses: %w", err)
	}
	var addrs []netip.Addr
	set := map[netip.Addr]struct{}{}
	for _, ifc := range ifcs {
		for _, p := range ifc.Addrs {
			addrs = append(addrs, p.Addr())
			set[p.Addr().WithZone("")] = struct{}{}
			if p.Addr().Is4() && p.Bits() < 31 {
				// The prefix's broadcast address.
				b := p.Addr().As4()
				binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])|^uint32(0)>>p.Bits())
				set[netip.AddrFrom4(b)] = struct{}{}
			}
		}
	}
	if old := e.localSet.Load(); old == nil || !maps.Equal(*old, set) {
		e.localSet.Store(&set)
		e.localGen.Add(1)
	}
	if e.tcp != nil {
		e.tcp.syncAddrs(stackAddrs(ifcs, e.ifc.Index))
	}
	return ifcs, e.objs.Locals.Set(addrs)
}

// stackAddrs are the addresses a TCP connection arriving on interface
// served may be made to, as the kernel takes them (the weak host model):
// the interface's own with their prefixes, and those of the namespace's
// other interfaces as host addresses (a service address on lo, say),
// without loopback addresses, which no packet from a link may carry, and
// without the other interfaces' IPv6 link-local ones, which are of their
// own links.
func stackAddrs(ifcs []nsbind.Interface, served int) []netip.Prefix {
	var out []netip.Prefix
	for _, ifc := range ifcs {
		for _, p := range ifc.Addrs {
			a := p.Addr()
			switch {
			case ifc.Index == served:
				out = append(out, p)
			case a.IsLoopback(), a.Is6() && a.IsLinkLocalUnicast():
			default:
				out = append(out, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	return out
}

// setMAC tells the XDP program and each worker the interface's new
// hardware address: frames to it are steered and looked at, frames leave
// with it as their source.
func (e *Engine) setMAC(mac [6]byte) {
	if err := e.objs.SetMAC(mac[:]); err != nil {
		e.log.Warn("the XDP program keeps the interface's old MAC: frames to the new one take the kernel path", "err", err)
	}
	l := e.layer.Load()
	for _, w := range e.work {
		l.Shard(w.id).Post(func(*sessions.Shard) { w.setMAC(mac) })
	}
}

// setMTU tells the TCP Stack and each worker the interface's new MTU:
// datagrams larger go through the kernel path, which fragments them; TCP
// connections opened from then on take their MSS from it, and a smaller
// one lowers the open connections' (tcp.Stack.SetMTU).
func (e *Engine) setMTU(mtu int) {
	e.mtu.Store(int64(mtu))
	if e.tcp != nil {
		e.tcp.st.SetMTU(uint32(mtu))
	}
	l := e.layer.Load()
	for _, w := range e.work {
		l.Shard(w.id).Post(func(*sessions.Shard) { w.tx.mtu = mtu })
	}
}

// addrEvents is what Config.Addrs offers when it follows the namespace
// through netlink (nsbind.View): its address and link changes as they
// happen.
type addrEvents interface {
	Subscribe(buffer int) (<-chan nsbind.Event, func())
}

// Between two looks at the namespace's addresses when nothing tells the
// engine of their changes, and when something does (a safety net).
const (
	addrPoll       = time.Second
	addrPollEvents = 10 * time.Second
)

// followAddrs keeps the locals map the namespace's addresses and the TCP
// Stack's those it takes connections to (syncLocals), and follows the
// interface's name, MAC and MTU: at once on each address or link change
// Config.Addrs reports (addrEvents), else every addrPoll. Until an added
// address is followed, a packet to it on a wildcard listener's port goes
// to the kernel: a datagram reaches the app through the port's
// reservation (the kernel path), a SYN is refused; one to an address gone
// still comes to the app until then.
func (e *Engine) followAddrs(ctx context.Context) {
	var events <-chan nsbind.Event
	every := addrPoll
	if s, ok := e.cfg.Addrs.(addrEvents); ok {
		ch, stop := s.Subscribe(0)
		defer stop()
		events, every = ch, addrPollEvents
	}
	t := time.NewTicker(every)
	defer t.Stop()
	last := ""
	var mac [6]byte
	if len(e.ifc.MAC) == len(mac) {
		mac = [6]byte(e.ifc.MAC)
	}
	mtu, name := e.ifc.MTU, e.ifc.Name
	sync := func() {
		ifcs, err := e.syncLocals()
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if msg != last && err != nil {
			e.log.Warn("local addresses not followed in full", "err", err) // once until it changes
		}
		last = msg
		// By index: a renamed interface is the same one.
		i := slices.IndexFunc(ifcs, func(i nsbind.Interface) bool { return i.Index == e.ifc.Index })
		if i >= 0 {
			ifc := ifcs[i]
			if ifc.Name != name {
				e.log.Info("the interface was renamed", "from", name, "to", ifc.Name, "ifindex", ifc.Index)
				name = ifc.Name
			}
			if len(ifc.MAC) == len(mac) && [6]byte(ifc.MAC) != mac {
				e.log.Info("the interface's MAC changed: followed", "interface", name, "from", net.HardwareAddr(mac[:]), "to", ifc.MAC)
				mac = [6]byte(ifc.MAC)
				e.setMAC(mac)
			}
			if ifc.MTU > 0 && ifc.MTU != mtu {
				e.log.Info("the interface's MTU changed: followed", "interface", name, "from", mtu, "to", ifc.MTU)
				mtu = ifc.MTU
				e.setMTU(mtu)
			}
		}
	}
	// Once now: a change between the start's look at the interface and
	// the subscription above has no event of its own.
	sync()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				events = nil // the view closed: the ticker goes on
				t.Reset(addrPoll)
				continue
			}
			// One look for a burst of changes.
			for more := true; more; {
				select {
				case _, more = <-events:
				default:
					more = false
				}
			}
			sync()
		case <-t.C:
			sync()
		}
	}
}
