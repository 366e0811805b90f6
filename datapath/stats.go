package datapath

import (
	"github.com/xsessiond/xsessiond/datapath/frame"
	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/datapath/xsk"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/loader"
)

// Stats is a JSON-friendly picture of an Engine.
type Stats struct {
	Interface string             `json:"interface"`
	IfIndex   int                `json:"ifindex"`
	XDPMode   string             `json:"xdp_mode"`
	Checksum  string             `json:"checksum"` // the checksum mode in effect (Config.Checksum)
	PinDir    string             `json:"pin_dir"`
	Queues    []QueueStats       `json:"queues"`
	Totals    QueueStats         `json:"totals"`  // the queues summed (Queue -1, no XSK)
	Targets   []udp.Stats        `json:"targets"` // listeners and connected sessions
	BPF       map[string]uint64  `json:"bpf"`     // the XDP program's counters
	Mirror    loader.MirrorStats `json:"mirror"`
	MirrorErr string             `json:"mirror_error,omitempty"`
	Resolver  ResolverStats      `json:"resolver"`
	// PeerErrors counts the ICMP errors of connected sessions' peers
	// (port, host or network unreachable) handed to their apps.
	PeerErrors uint64 `json:"peer_errors"`
	// KernelRx counts datagrams the kernel path delivered (larger than a
	// frame: reassembled by the kernel), KernelRxDrops those it could not.
	KernelRx      uint64 `json:"kernel_rx"`
	KernelRxDrops uint64 `json:"kernel_rx_drops"`
}

// QueueStats are one worker's counters. Drops are by reason: the decoder's
// reasons (malformed, bad checksums, not UDP, ...) and the datapath's
// (no-session, fifo-full, no-neighbour, ...); zero reasons are left out.
type QueueStats struct {
	Queue    int    `json:"queue"`
	Worker   uint32 `json:"worker"`
	ZeroCopy bool   `json:"zero_copy"`
	// CPU is the CPU the worker's thread is confined to (Config.CPUs);
	// absent: not pinned.
	CPU *int `json:"cpu,omitempty"`
	Counts
	Dropped uint64            `json:"dropped"` // sum of Drops
	Drops   map[string]uint64 `json:"drops"`
	XSK     *xsk.Stats        `json:"xsk,omitempty"`
}

// Counts are a worker's event counters. Every field is a uint64: the
// worker's private copy, its published copy and the totals go through
// them by index (array), so a counter is added here and where it counts,
// nowhere else.
type Counts struct {
	Rx        uint64 `json:"rx"`        // frames received
	Delivered uint64 `json:"delivered"` // datagrams queued in an app's rx fifo
	Tx        uint64 `json:"tx"`        // frames transmitted
	Held      uint64 `json:"held"`      // tx datagrams held for a neighbour or for room in the kernel path's socket
	Loops     uint64 `json:"loops"`
	Sleeps    uint64 `json:"sleeps"`
	Kicks     uint64 `json:"kicks"`     // kick eventfd wakeups
	Spins     uint64 `json:"spins"`     // idle spins begun (Config.IdleSpin)
	SpinHits  uint64 `json:"spin_hits"` // idle spins that found work before sleeping
	// SpinsStolen counts the idle spins ended by a yield that another
	// thread held the CPU through for yieldStolen or longer (poll.go).
	SpinsStolen uint64 `json:"spins_stolen"`
	Naps        uint64 `json:"naps"` // timed naps of a worker with recent traffic (Config.IdleNap)
	// FullYields counts the batches after which the worker yielded its
	// CPU because an app's rx fifo was full (worker.yieldToApp).
	FullYields uint64 `json:"full_yields"`
	TxKernel   uint64 `json:"tx_kernel"` // datagrams sent through the kernel path: larger than a frame, to a group, to an address of this host
	// TxKernelWaits counts the datagrams the kernel path's socket
	// refused for want of room (EAGAIN), which then waited (kernelpath.go).
	TxKernelWaits uint64 `json:"tx_kernel_waits"`
	TxGSO         uint64 `json:"tx_gso"` // TCP packets (up to 64 KiB) sent through the packet socket (TCPConfig.NoGSO)
	// PartialCsum counts datagrams delivered whose UDP checksum field
	// held the pseudo-header sum (Config.Checksum accepts them; under
	// ChecksumVerify they are dropped as bad-udp-csum instead).
	PartialCsum uint64 `json:"partial_csum"`
	// Fragments counts the fragments of UDP datagrams the XDP program
	// steered to the worker, Reassembled the datagrams made whole from
	// them (then delivered, or dropped for their UDP header or checksum
	// or for want of a session, like a whole datagram).
	Fragments   uint64 `json:"fragments"`
	Reassembled uint64 `json:"reassembled"`
	// ReasmInFlight and ReasmHeld are gauges: the datagrams being
	// reassembled now and the bytes of their fragments held, within
	// Config.Reassembly's bounds.
	ReasmInFlight uint64 `json:"reasm_in_flight"`
	ReasmHeld     uint64 `json:"reasm_held"`
	// Chained counts the multi-buffer packets (chain.go) joined into one
	// frame each: TCP segments larger than a frame.
	Chained uint64 `json:"chained"`
	// SynQueued is a gauge: the TCP SYNs the worker holds for the stack
	// (tcp_syn.go).
	SynQueued uint64 `json:"syn_queued"`
}

// Stats returns the Engine's counters. After Close it returns what the
// workers counted last, without kernel counters.
func (e *Engine) Stats() Stats {
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	s := Stats{Interface: e.cfg.IfName, IfIndex: e.ifc.Index, Checksum: e.csumMode, Totals: QueueStats{Queue: -1, Drops: map[string]uint64{}},
		PeerErrors: e.peerErrors.Load(), KernelRx: e.kernelRxN.Load(), KernelRxDrops: e.kernelDrops.Load()}
	e.mu.Lock()
	closed := e.closed
	if e.att != nil && !closed {
		s.XDPMode = e.att.Mode().String()
		s.PinDir = e.att.PinDir()
	}
	if e.mirror != nil {
		s.Mirror = e.mirror.Stats()
	}
	if e.mirErr != nil {
		s.MirrorErr = e.mirErr.Error()
	}
	e.mu.Unlock()
	for i, w := range e.work {
		qs := w.stats()
		if e.tcp != nil {
			// The TCP path's writes to its packet socket made outside
			// the worker (tcpWorker.direct).
			tw := e.tcp.wq[i]
			qs.TxGSO += tw.directSent.Load()
			if v := tw.directFailed.Load(); v > 0 {
				qs.Drops[dropNames[dropTxKernel]] += v
				qs.Dropped += v
			}
		}
		if !closed {
			if xs, err := w.sock.Stats(); err == nil {
				qs.XSK = &xs
			}
		}
		s.Totals.add(&qs)
		s.Queues = append(s.Queues, qs)
	}
	for _, t := range *e.lis.Load() {
		s.Targets = append(s.Targets, t.Stats())
	}
	for _, t := range e.est.Load().m {
		s.Targets = append(s.Targets, t.Stats())
	}
	if e.objs != nil && !closed {
		if c, err := e.objs.Counters.Read(); err == nil {
			s.BPF = map[string]uint64{}
			c.Each(func(name string, v uint64) { s.BPF[name] = v })
		}
	}
	if e.res != nil {
		s.Resolver = e.res.stats()
	}
	return s
}

// SessionTargetStats returns the counters of the connected UDP sessions
// of handles hs (Stats' Targets, for a page of sessions): the others are
// not read.
func (e *Engine) SessionTargetStats(hs []flow.Handle) []udp.Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []udp.Stats
	for _, h := range hs {
		if c := e.conns[h]; c != nil && c.target != nil && c.h == h {
			out = append(out, c.target.Stats())
		}
	}
	return out
}

func (w *worker) stats() QueueStats {
	p := &w.pub
	qs := QueueStats{Queue: w.q, Worker: w.id, Drops: map[string]uint64{}}
	n := qs.Counts.array()
	for i := range n {
		n[i] = p.n[i].Load()
	}
	if w.sock != nil {
		qs.ZeroCopy = w.sock.ZeroCopy()
	}
	if c := int(w.pinnedCPU.Load()); c >= 0 {
		qs.CPU = &c
	}
	for r := 1; r < frame.NumReasons; r++ {
		if v := p.Bad[r].Load(); v > 0 {
			qs.Drops[frame.Reason(r).String()] = v
			qs.Dropped += v
		}
	}
	for i := range p.Drops {
		if v := p.Drops[i].Load(); v > 0 {
			qs.Drops[dropNames[i]] = v
			qs.Dropped += v
		}
	}
	return qs
}

func (t *QueueStats) add(q *QueueStats) {
	tn, qn := t.Counts.array(), q.Counts.array()
	for i := range tn {
		tn[i] += qn[i]
	}
	t.Dropped += q.Dropped
	for k, v := range q.Drops {
		t.Drops[k] += v
	}
}
