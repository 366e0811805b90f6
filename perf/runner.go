package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
	"github.com/xsessiond/xsessiond/perf/internal/gen"
)

// Timing is how long each phase of a repetition lasts.
type Timing struct {
	Warmup time.Duration // load runs, nothing is measured
	Window time.Duration // the measurement window
	Drain  time.Duration // most time to wait for counts to settle afterwards
}

// Rep is what one repetition measured. Window figures come from counters
// read at the start and end of the measurement window; totals cover the
// whole repetition (warm-up and drain included) and give the loss.
type Rep struct {
	WindowNs       int64   `json:"window_ns"`
	Sent           uint64  `json:"sent"`      // sent in the window
	Delivered      uint64  `json:"delivered"` // delivered in the window
	TotalSent      uint64  `json:"total_sent"`
	TotalDelivered uint64  `json:"total_delivered"`
	BusyNs         int64   `json:"busy_ns"` // whole machine, /proc/stat, in the window
	ProcNs         int64   `json:"proc_ns"` // this process's user+system, in the window
	Util           float64 `json:"util"`    // busy share of all CPUs in the window
	// Samples are echo round-trip times sent in the window (not in JSON),
	// one per reply to a request sent in the window (winReplies).
	Samples []time.Duration `json:"-"`
	// SocketSamples are the echo's round trips of the same replies to
	// their arrival at the client's socket (the kernel's receive
	// timestamp), before the client's wake-up and read; sorted.
	SocketSamples []time.Duration `json:"-"`
	winReplies    uint64
	// Receive repetitions: the drops counted over the whole repetition
	// (drops.go says where), their sum, and the loss no counter explains:
	// TotalSent − TotalDelivered − Counted (negative: counted twice).
	Drops       Drops  `json:"drops,omitempty"`
	Breakdown   Drops  `json:"drops_breakdown,omitempty"` // overlaps Drops, printed only
	Counted     uint64 `json:"counted"`
	Unexplained int64  `json:"unexplained"`
	// TCP repetitions: host B's CPU time in the window, and the
	// connection errors of client and server (Breakdown names them). With
	// the server placed (--server-cpu) and --steer, B's CPU time is all
	// the busy time of the server's CPU (/proc/stat: the server process,
	// the softirqs and kernel threads of B's receive steered there,
	// steer.go); otherwise the server process's user+system time.
	// SrvProcNs is the server process's alone (the server and, for
	// xsessiond, the daemon in the same process, or in a process of its
	// own with --xs-daemon-process: then both, SrvDaemonNs the daemon's).
	SrvNs       int64  `json:"server_cpu_ns,omitempty"`
	SrvProcNs   int64  `json:"server_proc_ns,omitempty"`
	SrvDaemonNs int64  `json:"server_daemon_ns,omitempty"`
	Errors      uint64 `json:"errors,omitempty"`
	// WorkerLoops and WorkerSleeps are xsessiond's worker loops and
	// sleeps in poll(2) in the window (TCP rows).
	WorkerLoops  uint64 `json:"worker_loops,omitempty"`
	WorkerSleeps uint64 `json:"worker_sleeps,omitempty"`
	// RxRingFull and FillEmpty are xsessiond's AF_XDP rx_ring_full and
	// rx_fill_ring_empty_descs in the window (TCP rows): frames the
	// kernel dropped before the worker saw them, and the times it found no
	// frame to receive into.
	RxRingFull uint64 `json:"xsk_rx_ring_full,omitempty"`
	FillEmpty  uint64 `json:"xsk_rx_fill_ring_empty,omitempty"`
}

// snap is the counters at one instant.
type snap struct {
	t               time.Time
	cpu             CPUTimes
	srv             CPUTimes // the server's CPU (serverPin), when there is one
	proc            time.Duration
	sent, delivered uint64
}

// take reads the counters now; srvCPU ≥ 0 also reads that CPU's line of
// /proc/stat (the placed server's).
func take(sent, delivered func() uint64, srvCPU int) (snap, error) {
	c, err := ReadCPUTimes()
	if err != nil {
		return snap{}, err
	}
	var srv CPUTimes
	if srvCPU >= 0 {
		if srv, err = ReadCPUTime(srvCPU); err != nil {
			return snap{}, err
		}
	}
	return snap{t: time.Now(), cpu: c, srv: srv, proc: procCPU(), sent: sent(), delivered: delivered()}, nil
}

// windowRep turns the snapshots at both ends of a window into a Rep.
func windowRep(a, b snap) (Rep, error) {
	busy, err := BusyBetween(a.cpu, b.cpu)
	if err != nil {
		return Rep{}, err
	}
	return Rep{
		WindowNs:  b.t.Sub(a.t).Nanoseconds(),
		Sent:      b.sent - a.sent,
		Delivered: b.delivered - a.delivered,
		BusyNs:    busy.Nanoseconds(),
		ProcNs:    (b.proc - a.proc).Nanoseconds(),
		Util:      Utilisation(a.cpu, b.cpu),
	}, nil
}

// runner measures scenarios on rigs it builds.
type runner struct {
	rigs       *rigs
	timing     Timing
	prog       *progress
	port       uint16
	genThreads int        // generator sockets (and goroutines) per repetition
	tcpCC      string     // the hosts' TCP congestion control in the TCP rows ("" = the machine's)
	serverPin  *serverPin // where the echo and TCP rows' server and client run; nil: anywhere
	// cpuProfile, when set, is where the CPU profile of the first
	// repetition of each xsessiond 64-byte receive row goes (profileFile).
	cpuProfile string
	profiled   int // rows profiled so far
	tcpReps    int // TCP repetitions run so far (each takes the next port)
	// stats, when set, is given the implementation's own counters after
	// each receive repetition (xsessiond: the engine's).
	stats func(line string)
	// loss, when set, is given each receive repetition's loss line: sent,
	// delivered, the drops counted by counter, and what is unexplained.
	loss func(line string)
}

const defaultPort = 9000

// Generators of the UDP receive rows (--gen, Scenario.Gen).
const (
	genPacket = "packet"
	genXDP    = "xdp"
	genAuto   = "auto" // genXDP on one queue, genPacket on more (Plan.rowGen)
)

// sleepCtx sleeps d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// maxWindowStretch bounds how far a window that saw nothing sent or
// delivered is stretched (stretchWindow).
const maxWindowStretch = 20

// watch waits out the measurement window, refreshing the progress line.
// A window lasts Timing.Window, and longer while nothing was sent or
// nothing delivered in it (at most maxWindowStretch windows): on a loaded
// machine the goroutines that move the traffic may not have run at all in
// a short window, and a window without traffic measures nothing.
func (r *runner) watch(ctx context.Context, s Scenario, rep, reps int, sent, delivered func() uint64) (snap, snap, error) {
	a, err := take(sent, delivered, r.serverPin.cpuIndex())
	if err != nil {
		return a, a, err
	}
	end := a.t.Add(r.timing.Window)
	last := a.t.Add(maxWindowStretch * r.timing.Window)
	lastT, lastD := a.t, a.delivered
	for {
		left := time.Until(end)
		if left <= 0 {
			if sent() > a.sent && delivered() > a.delivered || !time.Now().Before(last) {
				break
			}
			left = min(r.timing.Window/10, time.Until(last))
			end = time.Now().Add(left)
		}
		if err := sleepCtx(ctx, min(left, 250*time.Millisecond)); err != nil {
			return a, a, err
		}
		now, d, sn := time.Now(), delivered(), sent()
		loss := 0.0
		if sn > a.sent {
			loss = 100 * (1 - float64(d-a.delivered)/float64(sn-a.sent))
		}
		r.prog.update(s, rep, reps, float64(d-lastD)/now.Sub(lastT).Seconds(), max(0, loss))
		lastT, lastD = now, d
	}
	b, err := take(sent, delivered, r.serverPin.cpuIndex())
	return a, b, err
}

// settleAccounted waits until every datagram sent is delivered or counted
// as dropped, or for at most d, and returns delivered and the drops read
// last (read after delivered: a datagram is in one or the other, or still
// on its way, never in both). It does not stop earlier when nothing moves:
// on a loaded machine a receiver may not run for hundreds of
// milliseconds while datagrams wait in its socket or ring.
func settleAccounted(sent, delivered func() uint64, drops func() (Drops, error), d time.Duration) (uint64, Drops, error) {
	deadline := time.Now().Add(d)
	for {
		n := delivered()
		c, err := drops()
		if err != nil || n+c.Sum() >= sent() || !time.Now().Before(deadline) {
			return n, c, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// genGroup is the generators of one repetition: one per thread, each on
// its own socket and ring with its share of the flows and the rate.
type genGroup struct{ gens []generator }

// generator is what a genGroup runs: gen.Generator (AF_PACKET) or
// gen.XDPGenerator (XDP frames).
type generator interface {
	Run(ctx context.Context) error
	Sent() uint64
	Errors() uint64
	Close() error
}

// Sent is the frames sent by all the group's generators.
func (gg *genGroup) Sent() uint64 {
	var n uint64
	for _, g := range gg.gens {
		n += g.Sent()
	}
	return n
}

// Errors is the frames the group's generators had rejected as malformed
// (not in Sent).
func (gg *genGroup) Errors() uint64 {
	var n uint64
	for _, g := range gg.gens {
		n += g.Errors()
	}
	return n
}

// lossLine says where a receive repetition's loss went.
func lossLine(rep Rep) string {
	return fmt.Sprintf("sent %d delivered %d loss %d: counted %d (%s), unexplained %d; breakdown %s",
		rep.TotalSent, rep.TotalDelivered, int64(rep.TotalSent)-int64(rep.TotalDelivered), rep.Counted, rep.Drops,
		rep.Unexplained, rep.Breakdown)
}

// startGen creates generators in host A aimed at host B's address (and
// dstMAC) and runs them: threads of them (at most one per flow), the flows
// and the rate split between them.
//
// With cpus, each generator's goroutine runs on a thread of its own on
// those CPUs (serverPin.genCPUs); the thread ends with it.
func startGen(p *nstest.Pair, s Scenario, dstMAC net.HardwareAddr, port uint16, threads int, cpus *unix.CPUSet) (*genGroup, func() error, error) {
	k := max(1, min(threads, s.Flows))
	kind := s.Gen
	gg := &genGroup{}
	var ungro func() error
	closeAll := func() {
		for _, g := range gg.gens {
			g.Close()
		}
		if ungro != nil {
			ungro()
		}
	}
	if kind == genXDP {
		// veth takes XDP frames only on receive queues with a NAPI: the
		// kernel's receiver has one with GRO on (xsessiond's native XDP
		// program brings one too).
		var err error
		if ungro, err = xsktest.EnableGRO(p.B); err != nil {
			return nil, nil, fmt.Errorf("start generator: %w", err)
		}
	}
	for i := range k {
		lo, hi := i*s.Flows/k, (i+1)*s.Flows/k
		rate := s.Rate / uint64(k)
		if i == 0 {
			rate += s.Rate % uint64(k)
		}
		if s.Rate > 0 && rate == 0 {
			continue
		}
		cfg := gen.Config{
			FrameSpec: gen.FrameSpec{
				SrcMAC: p.A.MAC, DstMAC: dstMAC, SrcIP: p.A.IPv4, DstIP: p.B.IPv4,
				SrcPortBase: uint16(40000 + lo), DstPort: port, Flows: hi - lo, Payload: s.Payload,
			},
			IfIndex: p.A.IfIndex,
			Rate:    rate,
		}
		var g generator
		if err := p.A.Do(func() (err error) {
			if kind == genXDP {
				g, err = gen.NewXDP(cfg)
			} else {
				g, err = gen.New(cfg)
			}
			return err
		}); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("start generator: %w", err)
		}
		gg.gens = append(gg.gens, g)
	}
	// Each generator goroutine runs flat out in sendto, where host B's
	// receive runs too, and holds a P of this process all along (the
	// runtime hands a P in a system call to others only when sysmon looks,
	// 20 µs to 10 ms later). On 2 vCPUs that left the receiver under test
	// (the kernel socket's reader, or xsessiond's worker and its app) one
	// P to share, which no host running them has: xsessiond's app, waiting
	// for a P with a vCPU idle, lost 30–36% of the 1472-byte row to a full
	// fifo. So the generators get a P each of their own while they run.
	prevProcs := runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + len(gg.gens))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, len(gg.gens))
	for _, g := range gg.gens {
		go pprof.Do(ctx, pprof.Labels("part", "gen"), func(ctx context.Context) {
			if cpus != nil {
				runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
				if err := unix.SchedSetaffinity(0, cpus); err != nil {
					errc <- fmt.Errorf("generator on CPUs %s: %w", cpuMask(cpus), err)
					return
				}
			}
			if kind == genXDP {
				// The test run resolves the frames' interface in the
				// calling thread's namespace.
				errc <- p.A.Do(func() error { return g.Run(ctx) })
				return
			}
			errc <- g.Run(ctx)
		})
	}
	stop := func() error {
		cancel()
		var errs []error
		for range gg.gens {
			errs = append(errs, <-errc)
		}
		runtime.GOMAXPROCS(prevProcs)
		for _, g := range gg.gens {
			errs = append(errs, g.Close())
		}
		if ungro != nil {
			errs = append(errs, ungro())
		}
		return errors.Join(errs...)
	}
	return gg, stop, nil
}

// runRep runs one repetition of s.
func (r *runner) runRep(ctx context.Context, s Scenario, rep, reps int) (Rep, error) {
	switch s.Kind {
	case KindGenOnly:
		return r.genOnlyRep(ctx, s, rep, reps)
	case KindReceive:
		return r.receiveRep(ctx, s, rep, reps)
	case KindEcho:
		return r.echoRep(ctx, s, rep, reps)
	case KindCutThrough:
		return r.cutThroughRep(ctx, s, rep, reps)
	case KindTCPRR, KindTCPCRR, KindTCPRecv, KindTCPSend:
		return r.tcpRep(ctx, s, rep, reps)
	}
	return Rep{}, fmt.Errorf("unknown scenario kind %q", s.Kind)
}

func (r *runner) receiveRep(ctx context.Context, s Scenario, rep, reps int) (out Rep, err error) {
	p, err := r.rigs.get(s.Queues)
	if err != nil {
		return Rep{}, err
	}
	unplace, err := r.serverPin.placeReceive(p)
	if err != nil {
		return Rep{}, err
	}
	defer func() { err = errors.Join(err, unplace()) }()
	rx, err := newReceiver(s.Impl, s.Queues)
	if err != nil {
		return Rep{}, err
	}
	if x, ok := rx.(*XsessiondReceiver); ok && s.Gen == genXDP && x.opts.XDPMode == "" {
		// XDP frames come as from a NIC with an XDP driver, which the
		// daemon's auto mode attaches in native mode (on a one-queue
		// veth it picks generic, for local senders' socket buffers).
		x.opts.XDPMode = "native"
	}
	if err := rx.Start(envB(p, s.Queues, s.Flows, s.Payload, r.port)); err != nil {
		return Rep{}, fmt.Errorf("start %s: %w", s.Impl, err)
	}
	defer func() { err = errors.Join(err, rx.Stop()) }()
	if r.serverPin.genCPUs() != nil { // --place-udp
		unnapi, err := r.serverPin.placed(p, s.Impl)
		if err != nil {
			return Rep{}, err
		}
		defer func() { err = errors.Join(err, unnapi()) }() // before rx.Stop
	}
	native, err := nativeXDP(p.B)
	if err != nil {
		return Rep{}, err
	}
	before, err := readRigCounters(p)
	if err != nil {
		return Rep{}, err
	}
	g, stopGen, err := startGen(p, s, p.B.MAC, r.port, r.genThreads, r.serverPin.genCPUs())
	if err != nil {
		return Rep{}, err
	}
	stopped := false
	defer func() {
		if !stopped {
			err = errors.Join(err, stopGen())
		}
	}()
	if err := sleepCtx(ctx, r.timing.Warmup); err != nil {
		return Rep{}, err
	}
	stopProfile, err := r.startProfile(s, rep, rx)
	if err != nil {
		return Rep{}, err
	}
	a, b, err := r.watch(ctx, s, rep, reps, g.Sent, rx.Delivered)
	err = errors.Join(err, stopProfile())
	if err != nil {
		return Rep{}, err
	}
	stopped = true
	if err := stopGen(); err != nil {
		return Rep{}, err
	}
	var after rigCounters
	drops := func() (Drops, error) {
		var err error
		if after, err = readRigCounters(p); err != nil {
			return nil, err
		}
		// XDP frames reach B in its NAPI, never its backlog; those its
		// ring refused are in B's rx_dropped (xdpGenRefused).
		d := after.since(before, false, !native && s.Gen != genXDP)
		if dc, ok := rx.(dropCounter); ok {
			maps.Copy(d, dc.Drops())
		}
		return d, nil
	}
	delivered, counted, err := settleAccounted(g.Sent, rx.Delivered, drops, r.timing.Drain)
	if err != nil {
		return Rep{}, err
	}
	out, err = windowRep(a, b)
	if err == nil {
		out.SrvNs, err = r.hostBBusy(a, b)
	}
	out.TotalSent, out.TotalDelivered = g.Sent(), delivered
	out.Drops, out.Counted = counted, counted.Sum()
	out.Unexplained = int64(out.TotalSent) - int64(out.TotalDelivered) - int64(out.Counted)
	out.Breakdown = after.udpDetail(before)
	if s.Gen == genXDP {
		maps.Copy(out.Breakdown, after.xdpGenRefused(before))
	} else {
		maps.Copy(out.Breakdown, after.genRetried(before))
	}
	if bd, ok := rx.(breakdown); ok {
		maps.Copy(out.Breakdown, bd.Breakdown())
	}
	if genErrs := g.Errors(); genErrs > 0 {
		out.Breakdown["gen-rejected"] = genErrs // never counted as sent
	}
	if r.loss != nil {
		r.loss(fmt.Sprintf("%s rep %d: %s", s.Name, rep, lossLine(out)))
	}
	if sl, ok := rx.(interface{ StatsLine() string }); ok && r.stats != nil {
		// The counters are final once the receiver has stopped.
		defer func() { r.stats(fmt.Sprintf("%s rep %d: %s", s.Name, rep, sl.StatsLine())) }()
	}
	return out, err
}

func (r *runner) genOnlyRep(ctx context.Context, s Scenario, rep, reps int) (out Rep, err error) {
	p, err := r.rigs.get(s.Queues)
	if err != nil {
		return Rep{}, err
	}
	unplace, err := r.serverPin.placeReceive(p)
	if err != nil {
		return Rep{}, err
	}
	defer func() { err = errors.Join(err, unplace()) }()
	g, stopGen, err := startGen(p, s, otherHostMAC(p.B.MAC), r.port, r.genThreads, r.serverPin.genCPUs())
	if err != nil {
		return Rep{}, err
	}
	if err := sleepCtx(ctx, r.timing.Warmup); err != nil {
		return Rep{}, errors.Join(err, stopGen())
	}
	a, b, err := r.watch(ctx, s, rep, reps, g.Sent, g.Sent)
	if err != nil {
		return Rep{}, errors.Join(err, stopGen())
	}
	if err := stopGen(); err != nil {
		return Rep{}, err
	}
	out, err = windowRep(a, b)
	if err == nil {
		out.SrvNs, err = r.hostBBusy(a, b)
	}
	out.TotalSent, out.TotalDelivered = g.Sent(), g.Sent()
	return out, err
}

// hostBBusy is the busy time of host B's CPU between a and b in a placed
// receive or gen-only row (serverPin.placeReceive): B's receive softirqs
// and the receiver under test, which run there; 0 when the rows are not
// placed.
func (r *runner) hostBBusy(a, b snap) (int64, error) {
	if r.serverPin.genCPUs() == nil {
		return 0, nil
	}
	busy, err := BusyBetween(a.srv, b.srv)
	return busy.Nanoseconds(), err
}

// otherHostMAC is a locally administered unicast MAC that differs from mac.
func otherHostMAC(mac net.HardwareAddr) net.HardwareAddr {
	o := net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 0x01}
	if mac.String() == o.String() {
		o[5] = 0x02
	}
	return o
}

func (r *runner) cutThroughRep(ctx context.Context, s Scenario, rep, reps int) (out Rep, err error) {
	lp, err := newLocalPair(s.Impl)
	if err != nil {
		return Rep{}, err
	}
	if err := lp.Start(s.Payload); err != nil {
		return Rep{}, err
	}
	stopped := false
	defer func() {
		if !stopped {
			err = errors.Join(err, lp.Stop())
		}
	}()
	if err := sleepCtx(ctx, r.timing.Warmup); err != nil {
		return Rep{}, err
	}
	a, b, err := r.watch(ctx, s, rep, reps, lp.Sent, lp.Delivered)
	if err != nil {
		return Rep{}, err
	}
	stopped = true
	if err := lp.Stop(); err != nil {
		return Rep{}, err
	}
	out, err = windowRep(a, b)
	out.TotalSent, out.TotalDelivered = lp.Sent(), lp.Delivered()
	return out, err
}

// startProfile starts the CPU profile of s's measurement window when s is
// an xsessiond 64-byte receive row at its first repetition and a profile
// was asked for: of this process, and of rx's daemon when that runs in a
// process of its own (daemonFile); the function it returns stops them.
func (r *runner) startProfile(s Scenario, rep int, rx Receiver) (func() error, error) {
	none := func() error { return nil }
	if r.cpuProfile == "" || rep != 1 || s.Kind != KindReceive || s.Impl != ImplXsessiond || s.Payload != 64 {
		return none, nil
	}
	path, err := filepath.Abs(profileFile(r.cpuProfile, s.Group, r.profiled))
	if err != nil {
		return none, fmt.Errorf("cpu profile: %w", err)
	}
	r.profiled++
	var p profile
	if err := p.start(path); err != nil {
		return none, err
	}
	stopDaemon := none
	if x, ok := rx.(*XsessiondReceiver); ok && x.l != nil {
		if stopDaemon, err = x.l.x.profile(daemonFile(path)); err != nil {
			return none, errors.Join(err, p.stop())
		}
	}
	return func() error { return errors.Join(stopDaemon(), p.stop()) }, nil
}

// profileFile is the profile path of the i-th profiled row: path itself
// for the first, then path with "-group" inserted before its extension.
func profileFile(path, group string, i int) string {
	if i == 0 {
		return path
	}
	return tagged(path, group)
}

// daemonFile is where the daemon's process writes its profile when this
// one's goes to path: "-daemon" before the extension.
func daemonFile(path string) string { return tagged(path, "daemon") }

// tagged is path with "-tag" inserted before its extension.
func tagged(path, tag string) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "-" + tag + ext
}
