package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/xsessiond/xsessiond/flow"

	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/sessions"
)

// engine is what the daemon needs of a datapath: the datapath.Engine of one
// interface (dpEngine), behind this interface so that the control plane
// also runs without one (noEngine, Config.NoDatapath).
type engine interface {
	// Workers returns the number of datapath workers (sessions shards).
	Workers() int
	// Datapath returns what the session layer calls, or nil when there is
	// no datapath (connects to remote peers then fail with ErrConnect).
	Datapath() sessions.Datapath
	// Start mirrors the layer's tables into the datapath and starts the
	// workers.
	Start(l *sessions.Layer) error
	// KickFDs returns one eventfd per worker, in worker order, or none.
	KickFDs() []int
	// AppKicks makes an app's own kick eventfds, one per worker (none
	// without a datapath); release closes them once the app detached.
	AppKicks(app sessions.AppID) (fds []int, release func(), err error)
	// SetAppUser tells the datapath the uid of app's process, before the
	// app opens anything (the bound on a user's TCP buffers).
	SetAppUser(app sessions.AppID, uid uint32)
	// SetAppNetns tells the datapath the FIB of the network namespace
	// app's process runs in (its datagrams to the host itself go through
	// the kernel only from the interface's namespace).
	SetAppNetns(app sessions.AppID, fib flow.FIBID)
	// FlushTx waits, until ctx ends, for the datapath to take what app's
	// UDP tx fifos hold, and reports whether it did
	// (datapath.Engine.FlushTx).
	FlushTx(ctx context.Context, app sessions.AppID) bool
	// SetAppMarksAccepts tells the datapath, before app opens anything,
	// that app's library marks the sessions its Accept takes (protocol
	// 2.2, fifo/ABI.md): its listeners are held to their backlog from the
	// start.
	SetAppMarksAccepts(app sessions.AppID)
	// Stats returns the datapath's counters.
	Stats() EngineStats
	// WaitMirror waits until the datapath's tables (the XDP program's
	// maps) reflect every change the session layer made before the call.
	WaitMirror(ctx context.Context) error
	// HandingBack reports whether a port of the transport the datapath
	// held waits for WaitMirror to be the kernel's again.
	HandingBack(flow.Transport) bool
	// SteerRefused reports whether the XDP program's listener or
	// established map refused the entry of listener or session h (it is
	// full): its packets go to the kernel.
	SteerRefused(h sessions.Handle) bool
	// DetachXDP detaches the XDP program and unpins at once, leaving the
	// workers running; idempotent.
	DetachXDP() error
	// Close stops the workers, detaches and unpins; idempotent.
	Close() error
	// TCPConns lists the TCP connections on the wire, lingering ones
	// included; none without a datapath.
	TCPConns() []datapath.TCPConnView
	// TCPConnsPage lists those of a page of sessions: the connections of
	// the handles in page and the lingering ones whose handle is in
	// (after, last] (datapath.Engine.TCPConnsPage).
	TCPConnsPage(page map[flow.Handle]bool, after, last flow.Handle) []datapath.TCPConnView
	// SessionTargets returns the counters of the connected UDP sessions
	// of handles hs, by handle (Stats' per-session counters, for a page of
	// sessions); none without a datapath.
	SessionTargets(hs []flow.Handle) map[flow.Handle]TargetStats
	// TCPNamespaceStats returns the TCP counts by namespace id.
	TCPNamespaceStats() map[string]*datapath.TCPNamespaceStats
	// TCPListeners tells of the TCP listeners on the wire, by handle;
	// none without a datapath.
	TCPListeners() map[flow.Handle]datapath.TCPListenerView
	// PathMTUFrom returns the MTU of an IP packet from local endpoint ep
	// to dst as the datapath sends it (datapath.Engine.PathMTU), or an
	// error wrapping flow.ErrNotSupported when no datapath serves ep's
	// interface and FIB.
	PathMTUFrom(ep flow.Endpoint, dst netip.Addr) (int, error)
	// SleepFlagsFD returns the workers' sleep flags page (api.SleepFlags),
	// owned by the engine, or -1 without a datapath.
	SleepFlagsFD() int
	// JoinGroup and LeaveGroup change the multicast memberships of app's
	// UDP listener h on interface ifindex (0: the route's) through the
	// kernel socket holding its port (datapath.Engine.JoinGroup), or fail
	// with flow.ErrNotSupported without a datapath.
	JoinGroup(app sessions.AppID, h flow.Handle, group netip.Addr, ifindex int) error
	LeaveGroup(app sessions.AppID, h flow.Handle, group netip.Addr, ifindex int) error
}

// EngineStats are a datapath's counters as the daemon reports them (ctl
// show stats, ctl top, metrics). Every key is snake_case; every counter
// appears once.
type EngineStats struct {
	Datapath string       `json:"datapath"`           // "none" without a datapath, else "af_xdp"
	XDPMode  string       `json:"xdp_mode"`           // "native", "generic", or "" without a datapath
	PinDir   string       `json:"pin_dir"`            // where the XDP program's maps are pinned (bpftool map dump pinned PIN_DIR/counters)
	Checksum string       `json:"checksum,omitempty"` // the UDP checksum mode in effect (datapath.Config.Checksum)
	Queues   []QueueStats `json:"queues"`
	// Kicks count the wakeups by apps' kick eventfds.
	Kicks  *datapath.KickStats `json:"kicks,omitempty"`
	Totals QueueStats          `json:"totals"` // the queues summed; queue -1
	// XDP are the XDP program's counters (pass, redirect, malformed and
	// the reasons), summed over CPUs.
	XDP         map[string]uint64 `json:"xdp"`
	Mirror      MirrorStats       `json:"mirror"`
	MirrorError string            `json:"mirror_error,omitempty"`
	Resolver    ResolverStats     `json:"resolver"`
	// PeerErrors counts the ICMP errors (port, host or network
	// unreachable) reported to connected sessions; the sessions stay open.
	PeerErrors uint64 `json:"peer_errors"`
	// KernelRx counts datagrams larger than a frame that the kernel
	// reassembled and the kernel path delivered; KernelRxDrops those it
	// could not.
	KernelRx      uint64 `json:"kernel_rx"`
	KernelRxDrops uint64 `json:"kernel_rx_drops"`
	// TCP is the datapath's TCP: its connections and listeners and its
	// gVisor buffers against their bounds; nil without a datapath.
	TCP *TCPEngineStats `json:"tcp,omitempty"`

	// targets are the per-session counters, by handle; in the sessions
	// and listeners views, not here.
	targets map[flow.Handle]TargetStats
}

// TCPEngineStats are the datapath's TCP counts in show stats.
type TCPEngineStats struct {
	// Connections are those whose sessions are open; Lingering, those
	// whose app closed them and that TCP still finishes (FIN-WAIT,
	// TIME-WAIT, LAST-ACK, ...), shown in show sessions as lingering.
	// TimeWaitOverflow counts those ended early because
	// tcp.max_time_wait were held (Linux's TCPTimeWaitOverflow).
	Connections      int    `json:"connections"`
	Lingering        int    `json:"lingering"`
	TimeWaitOverflow uint64 `json:"time_wait_overflow"`
	Listeners        int    `json:"listeners"`
	// RxDropped counts the segments the link did not hand to gVisor (IPv6
	// with a routing header, AH or ESP; the stack closing), ChecksumErrors
	// those with a bad IPv4 header or TCP checksum where the link checks
	// them.
	RxDropped      uint64 `json:"rx_dropped"`
	ChecksumErrors uint64 `json:"checksum_errors"`
	// BufferBytes are the gVisor send and receive buffer sizes of all
	// connections; BufferLimit bounds them (tcp.buffer_memory),
	// UserBufferLimit those of one user's apps (tcp.user_buffer_memory).
	BufferBytes     int64 `json:"buffer_bytes"`
	BufferLimit     int64 `json:"buffer_limit_bytes"`
	UserBufferLimit int64 `json:"user_buffer_limit_bytes"`
	// BuffersClamped counts the connections that got 64 KiB buffers,
	// BufferGrowthsHeld the buffer growths the bounds refused; Refused
	// the connections the stack's limits refused (connections, buffers).
	BuffersClamped    uint64 `json:"buffers_clamped"`
	BufferGrowthsHeld uint64 `json:"buffer_growths_held"`
	Refused           uint64 `json:"refused"`
	// Orphans are the connections whose app closed them and that gVisor
	// still delivers for (what they hold to send is in BufferBytes);
	// OrphansReset counts those reset because the peer took nothing for
	// the close timeout.
	Orphans      int    `json:"orphans"`
	OrphansReset uint64 `json:"orphans_reset"`
	// AbortedOnClose counts the connections reset as their app closed
	// them: it left data unread, or the peer sent more after the close
	// (as Linux's TCPAbortOnClose and TCPAbortOnData).
	AbortedOnClose uint64 `json:"aborted_on_close"`
	// PathMTUMessages counts the routers' ICMP messages of a smaller path
	// MTU (fragmentation needed, packet too big) about a connection, each
	// of which lowered its MSS to fit if it was larger.
	PathMTUMessages uint64 `json:"path_mtu_messages"`
	// ConnectsUnreachable counts the connections in their handshake that
	// ended unreachable, as Linux ends them: a router's destination
	// unreachable (ENETUNREACH, EHOSTUNREACH, ECONNREFUSED), or the
	// kernel's neighbour entry of their next hop failed (EHOSTUNREACH).
	ConnectsUnreachable uint64 `json:"connects_unreachable"`
}

// QueueStats are the counters of one queue's worker and its AF_XDP socket.
// Drops holds every drop reason that is not zero: the decoder's
// (truncated_ip, bad_udp_csum, ...), the datapath's (no_session,
// fifo_full, no_neighbour, ...) and the AF_XDP socket's, prefixed xsk_
// (xsk_rx_ring_full, xsk_rx_dropped, xsk_rx_invalid_descs,
// xsk_tx_invalid_descs). Dropped is their sum.
type QueueStats struct {
	Queue    int    `json:"queue"`
	Worker   uint32 `json:"worker"`
	ZeroCopy bool   `json:"zero_copy"`
	// CPU is the CPU the worker's thread is confined to (the interface's
	// cpus); absent: not pinned.
	CPU       *int   `json:"cpu,omitempty"`
	RxPackets uint64 `json:"rx_packets"`
	// TxPackets counts the packets sent through the AF_XDP ring.
	TxPackets uint64 `json:"tx_packets"`
	Delivered uint64 `json:"delivered"`
	// PartialCsum counts datagrams delivered with a partial checksum (a
	// local sender's offload), accepted by the checksum mode.
	PartialCsum uint64 `json:"partial_csum"`
	// TxKernel counts datagrams sent through the kernel path: larger
	// than a frame (the kernel fragments them), to a multicast group, or
	// to an address of this host (the kernel delivers them to its
	// sockets).
	TxKernel uint64 `json:"tx_kernel"`
	// TxKernelWaits counts the datagrams the kernel path's socket had no
	// room for, each once: they waited in the app's tx fifo (or a hold
	// slot) instead of being dropped.
	TxKernelWaits uint64 `json:"tx_kernel_waits"`
	// TxGSO counts TCP packets (up to 64 KiB each) sent through the
	// packet socket that lets the kernel segment them.
	TxGSO uint64 `json:"tx_gso"`
	// Fragments counts the UDP fragments the XDP program steered to the
	// worker (those of datagrams to the daemon's ports whose first
	// fragment came first), Reassembled the datagrams the worker made
	// whole from them. The kernel reassembles the others (KernelRx).
	Fragments   uint64 `json:"fragments"`
	Reassembled uint64 `json:"reassembled"`
	// ReasmInFlight and ReasmHeld are gauges: the datagrams the worker
	// is reassembling and the bytes of their fragments it holds.
	ReasmInFlight uint64 `json:"reasm_in_flight"`
	ReasmHeld     uint64 `json:"reasm_held"`
	// SynQueued is a gauge: the TCP SYNs the worker holds, to hand to
	// gVisor after the other packets it receives (at most 4,096; more
	// are dropped as syn_backlog).
	SynQueued uint64 `json:"syn_queued"`
	// Chained counts the packets larger than a frame that came as
	// chains of AF_XDP descriptors and were joined (TCP segments the
	// peer's segmentation offload built, in generic mode on a veth).
	Chained uint64 `json:"chained"`
	Held    uint64 `json:"held"`
	Loops   uint64 `json:"loops"`
	Sleeps  uint64 `json:"sleeps"`
	Kicks   uint64 `json:"kicks"`
	Naps    uint64 `json:"naps"`
	// FullYields counts the batches after which the worker yielded its
	// CPU to an app whose rx fifo was full.
	FullYields uint64            `json:"full_yields"`
	Dropped    uint64            `json:"dropped"`
	Drops      map[string]uint64 `json:"drops"`
	// XSK are the socket's counters that are not drops.
	XSK XSKStats `json:"xsk"`
}

// Sent is every packet the queue's worker sent: through its AF_XDP ring
// (TxPackets) and through the kernel paths (TxKernel, TxGSO).
func (q *QueueStats) Sent() uint64 { return q.TxPackets + q.TxKernel + q.TxGSO }

// XSKStats are an AF_XDP socket's counters other than its drops.
type XSKStats struct {
	RxFillRingEmpty uint64 `json:"rx_fill_ring_empty"` // times the fill ring was empty when a packet came
	TxRingEmpty     uint64 `json:"tx_ring_empty"`
	Received        uint64 `json:"received"`
	Transmitted     uint64 `json:"transmitted"`
	Completed       uint64 `json:"completed"`
	Filled          uint64 `json:"filled"`
	TxKicks         uint64 `json:"tx_kicks"`
	RxWakeups       uint64 `json:"rx_wakeups"`
	KickErrors      uint64 `json:"kick_errors"`
	BadDescs        uint64 `json:"bad_descs"`
}

// MirrorStats are the map mirror's counters (see loader.MirrorStats).
type MirrorStats struct {
	LastSeq     uint64 `json:"last_seq"`
	Applied     uint64 `json:"applied"`
	Skipped     uint64 `json:"skipped"`
	Stale       uint64 `json:"stale"`
	OutOfOrder  uint64 `json:"out_of_order"`
	Invalid     uint64 `json:"invalid"`
	Failed      uint64 `json:"failed"`
	DelMissing  uint64 `json:"del_missing"`
	Resyncs     uint64 `json:"resyncs"`
	Checks      uint64 `json:"checks"`
	NotCompared uint64 `json:"not_compared"`
	Divergent   uint64 `json:"divergent"`
	Missing     uint64 `json:"missing"`
	Extra       uint64 `json:"extra"`
	Mismatched  uint64 `json:"mismatched"`
}

// ResolverStats count the neighbour resolver's work.
type ResolverStats struct {
	Lookups         uint64 `json:"lookups"`
	Resolved        uint64 `json:"resolved"`
	Failures        uint64 `json:"failures"`
	DroppedRequests uint64 `json:"dropped_requests"`
	Entries         int    `json:"entries"`
}

// TargetStats are the datapath's counters of one session or listener.
type TargetStats struct {
	RxPackets uint64
	RxBytes   uint64
	TxPackets uint64
	TxBytes   uint64
	Drops     map[string]uint64 // not zero only
}

// snake turns a counter name like "no-session" into "no_session".
func snake(s string) string { return strings.ReplaceAll(s, "-", "_") }

// noEngine is the control plane without a datapath: one shard, no
// workers, no kick eventfds. Binds work, cut-through sessions work,
// connects to remote peers fail with flow.ErrConnect.
type noEngine struct{}

func (noEngine) Workers() int                { return 1 }
func (noEngine) Datapath() sessions.Datapath { return nil }
func (noEngine) Start(*sessions.Layer) error { return nil }
func (noEngine) KickFDs() []int              { return nil }

func (noEngine) AppKicks(sessions.AppID) ([]int, func(), error) { return nil, func() {}, nil }
func (noEngine) SetAppUser(sessions.AppID, uint32)              {}
func (noEngine) SetAppNetns(sessions.AppID, flow.FIBID)         {}
func (noEngine) FlushTx(context.Context, sessions.AppID) bool   { return true }
func (noEngine) SetAppMarksAccepts(sessions.AppID)              {}
func (noEngine) Stats() EngineStats {
	return EngineStats{Datapath: "none", Queues: []QueueStats{}, Totals: QueueStats{Queue: -1, Drops: map[string]uint64{}},
		XDP: map[string]uint64{}}
}
func (noEngine) Close() error     { return nil }
func (noEngine) DetachXDP() error { return nil }

func (noEngine) WaitMirror(context.Context) error  { return nil }
func (noEngine) HandingBack(flow.Transport) bool   { return false }
func (noEngine) SteerRefused(sessions.Handle) bool { return false }

func (noEngine) TCPConns() []datapath.TCPConnView                         { return nil }
func (noEngine) SessionTargets([]flow.Handle) map[flow.Handle]TargetStats { return nil }
func (noEngine) TCPConnsPage(map[flow.Handle]bool, flow.Handle, flow.Handle) []datapath.TCPConnView {
	return nil
}
func (noEngine) TCPNamespaceStats() map[string]*datapath.TCPNamespaceStats { return nil }
func (noEngine) TCPListeners() map[flow.Handle]datapath.TCPListenerView    { return nil }

func (noEngine) SleepFlagsFD() int { return -1 }

func (noEngine) PathMTUFrom(flow.Endpoint, netip.Addr) (int, error) {
	return 0, fmt.Errorf("path mtu: no datapath: %w", flow.ErrNotSupported)
}

func (noEngine) JoinGroup(sessions.AppID, flow.Handle, netip.Addr, int) error {
	return fmt.Errorf("join group: no datapath: %w", flow.ErrNotSupported)
}

func (noEngine) LeaveGroup(sessions.AppID, flow.Handle, netip.Addr, int) error {
	return fmt.Errorf("leave group: no datapath: %w", flow.ErrNotSupported)
}

// dpEngine adapts a datapath.Engine to the daemon's engine.
type dpEngine struct {
	*datapath.Engine
}

func newDatapathEngine(cfg datapath.Config) (engine, error) {
	e, err := datapath.New(cfg)
	if err != nil {
		return nil, err
	}
	return dpEngine{e}, nil
}

// PathMTUFrom is the Engine's PathMTU for an endpoint of its interface
// and FIB.
func (e dpEngine) PathMTUFrom(ep flow.Endpoint, dst netip.Addr) (int, error) {
	if (ep.IfIndex != 0 && ep.IfIndex != e.IfIndex()) || ep.FIB != e.FIB() {
		return 0, fmt.Errorf("path mtu: %s is not on the datapath's interface: %w", ep.URI(), flow.ErrNotSupported)
	}
	return e.PathMTU(ep.Addr, dst)
}

// SessionTargets returns the counters of the connected UDP sessions of
// handles hs, by handle (datapath.Engine.SessionTargetStats).
func (e dpEngine) SessionTargets(hs []flow.Handle) map[flow.Handle]TargetStats {
	ts := e.Engine.SessionTargetStats(hs)
	out := make(map[flow.Handle]TargetStats, len(ts))
	for i := range ts {
		out[ts[i].Handle] = targetStats(&ts[i])
	}
	return out
}

// targetStats is the daemon's view of a Target's counters.
func targetStats(t *udp.Stats) TargetStats {
	ts := TargetStats{RxPackets: t.Delivered, RxBytes: t.RxBytes, TxPackets: t.Sent, TxBytes: t.TxBytes,
		Drops: map[string]uint64{}}
	for k, v := range map[string]uint64{"fifo_full": t.DropFull, "too_big": t.DropTooBig, "fifo_corrupt": t.DropCorrupt,
		"tx_dropped": t.TxDrops, "tx_fifo_corrupt": t.TxCorrupt} {
		if v != 0 {
			ts.Drops[k] = v
		}
	}
	return ts
}

func (e dpEngine) Stats() EngineStats {
	s := e.Engine.Stats()
	ks := e.Engine.KickStats()
	out := EngineStats{Datapath: "af_xdp", XDPMode: s.XDPMode, Checksum: s.Checksum, PinDir: s.PinDir, Queues: make([]QueueStats, 0, len(s.Queues)),
		Totals: QueueStats{Queue: -1, Drops: map[string]uint64{}}, XDP: map[string]uint64{}, MirrorError: s.MirrorErr,
		PeerErrors: s.PeerErrors, KernelRx: s.KernelRx, KernelRxDrops: s.KernelRxDrops, targets: make(map[flow.Handle]TargetStats, len(s.Targets)), Kicks: &ks}
	for _, q := range s.Queues {
		qs := queueStats(&q)
		out.Totals.add(&qs)
		out.Queues = append(out.Queues, qs)
	}
	for k, v := range s.BPF {
		out.XDP[snake(k)] = v
	}
	m := s.Mirror
	out.Mirror = MirrorStats{LastSeq: m.LastSeq, Applied: m.Applied, Skipped: m.Skipped, Stale: m.Stale,
		OutOfOrder: m.OutOfOrder, Invalid: m.Invalid, Failed: m.Failed, DelMissing: m.DelMissing, Resyncs: m.Resyncs,
		Checks: m.Checks, NotCompared: m.NotCompared, Divergent: m.Divergent, Missing: m.Missing, Extra: m.Extra,
		Mismatched: m.Mismatched}
	r := s.Resolver
	out.Resolver = ResolverStats{Lookups: r.Lookups, Resolved: r.Resolved, Failures: r.Failures,
		DroppedRequests: r.Dropped, Entries: r.Entries}
	for _, t := range s.Targets {
		out.targets[t.Handle] = targetStats(&t)
	}
	if ts := e.Engine.TCPStats(); ts.Buffers.Limit != 0 { // zero: no TCP
		b := ts.Buffers
		out.TCP = &TCPEngineStats{Connections: ts.Conns, Lingering: ts.Lingering, TimeWaitOverflow: ts.TimeWaitOverflow,
			Listeners: ts.Listeners, RxDropped: ts.RxDropped, ChecksumErrors: ts.ChecksumError, BufferBytes: b.Bytes,
			BufferLimit: b.Limit, UserBufferLimit: b.GroupLimit, BuffersClamped: b.Clamped, BufferGrowthsHeld: b.Held,
			Refused: ts.Refused, Orphans: ts.Orphans, OrphansReset: ts.OrphansReset, AbortedOnClose: ts.AbortedOnClose,
			PathMTUMessages: ts.PathMTUMessages, ConnectsUnreachable: ts.ConnectsUnreachable}
	}
	return out
}

// queueStats converts one worker's counters.
func queueStats(q *datapath.QueueStats) QueueStats {
	qs := QueueStats{Queue: q.Queue, Worker: q.Worker, ZeroCopy: q.ZeroCopy, RxPackets: q.Rx, TxPackets: q.Tx,
		Delivered: q.Delivered, PartialCsum: q.PartialCsum, TxKernel: q.TxKernel, TxKernelWaits: q.TxKernelWaits, TxGSO: q.TxGSO,
		Fragments: q.Fragments, Reassembled: q.Reassembled, ReasmInFlight: q.ReasmInFlight, ReasmHeld: q.ReasmHeld, SynQueued: q.SynQueued, Chained: q.Chained, Held: q.Held, Loops: q.Loops, Sleeps: q.Sleeps, Kicks: q.Kicks, Naps: q.Naps, FullYields: q.FullYields,
		CPU: q.CPU, Drops: make(map[string]uint64, len(q.Drops)+4)}
	for k, v := range q.Drops {
		if v != 0 {
			qs.Drops[snake(k)] = v
		}
	}
	if x := q.XSK; x != nil {
		for k, v := range map[string]uint64{"xsk_rx_ring_full": x.RxRingFull, "xsk_rx_dropped": x.RxDropped,
			"xsk_rx_invalid_descs": x.RxInvalidDescs, "xsk_tx_invalid_descs": x.TxInvalidDescs} {
			if v != 0 {
				qs.Drops[k] = v
			}
		}
		qs.XSK = XSKStats{RxFillRingEmpty: x.RxFillRingEmptyDescs, TxRingEmpty: x.TxRingEmptyDescs, Received: x.Received,
			Transmitted: x.Transmitted, Completed: x.Completed, Filled: x.Filled, TxKicks: x.TxKicks, RxWakeups: x.RxWakeups,
			KickErrors: x.KickErrors, BadDescs: x.BadDescs}
	}
	for _, v := range qs.Drops {
		qs.Dropped += v
	}
	return qs
}

// add adds q's counters to t's.
func (t *QueueStats) add(q *QueueStats) {
	t.RxPackets += q.RxPackets
	t.TxPackets += q.TxPackets
	t.Delivered += q.Delivered
	t.PartialCsum += q.PartialCsum
	t.TxKernel += q.TxKernel
	t.TxKernelWaits += q.TxKernelWaits
	t.TxGSO += q.TxGSO
	t.Fragments += q.Fragments
	t.Reassembled += q.Reassembled
	t.ReasmInFlight += q.ReasmInFlight
	t.ReasmHeld += q.ReasmHeld
	t.SynQueued += q.SynQueued
	t.Chained += q.Chained
	t.Held += q.Held
	t.Loops += q.Loops
	t.Sleeps += q.Sleeps
	t.Kicks += q.Kicks
	t.Naps += q.Naps
	t.FullYields += q.FullYields
	t.Dropped += q.Dropped
	for k, v := range q.Drops {
		t.Drops[k] += v
	}
	x, y := &t.XSK, &q.XSK
	x.RxFillRingEmpty += y.RxFillRingEmpty
	x.TxRingEmpty += y.TxRingEmpty
	x.Received += y.Received
	x.Transmitted += y.Transmitted
	x.Completed += y.Completed
	x.Filled += y.Filled
	x.TxKicks += y.TxKicks
	x.RxWakeups += y.RxWakeups
	x.KickErrors += y.KickErrors
	x.BadDescs += y.BadDescs
}

// sub returns t - base, counter by counter (the gauges ReasmInFlight,
// ReasmHeld and SynQueued stay as they are); zero drops are left out. A
// counter below its base (a queue restarted) counts from zero.
func (t QueueStats) sub(base QueueStats) QueueStats {
	d := func(a, b uint64) uint64 {
		if a < b {
			return a
		}
		return a - b
	}
	out := t
	out.RxPackets, out.TxPackets, out.Delivered = d(t.RxPackets, base.RxPackets), d(t.TxPackets, base.TxPackets), d(t.Delivered, base.Delivered)
	out.Held, out.Loops, out.Sleeps = d(t.Held, base.Held), d(t.Loops, base.Loops), d(t.Sleeps, base.Sleeps)
	out.Kicks, out.Naps, out.Chained = d(t.Kicks, base.Kicks), d(t.Naps, base.Naps), d(t.Chained, base.Chained)
	out.FullYields = d(t.FullYields, base.FullYields)
	out.TxKernelWaits = d(t.TxKernelWaits, base.TxKernelWaits)
	out.PartialCsum, out.TxKernel, out.TxGSO = d(t.PartialCsum, base.PartialCsum), d(t.TxKernel, base.TxKernel), d(t.TxGSO, base.TxGSO)
	out.Fragments, out.Reassembled = d(t.Fragments, base.Fragments), d(t.Reassembled, base.Reassembled)
	out.Drops, out.Dropped = subMap(t.Drops, base.Drops), 0
	for _, v := range out.Drops {
		out.Dropped += v
	}
	x, y := &out.XSK, &base.XSK
	x.RxFillRingEmpty, x.TxRingEmpty = d(x.RxFillRingEmpty, y.RxFillRingEmpty), d(x.TxRingEmpty, y.TxRingEmpty)
	x.Received, x.Transmitted, x.Completed = d(x.Received, y.Received), d(x.Transmitted, y.Transmitted), d(x.Completed, y.Completed)
	x.Filled, x.TxKicks, x.RxWakeups = d(x.Filled, y.Filled), d(x.TxKicks, y.TxKicks), d(x.RxWakeups, y.RxWakeups)
	x.KickErrors, x.BadDescs = d(x.KickErrors, y.KickErrors), d(x.BadDescs, y.BadDescs)
	return out
}

// subMap returns a - base by key, leaving out what comes to zero.
func subMap(a, base map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(a))
	for k, v := range a {
		if b := base[k]; b <= v {
			v -= b
		}
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func (t TargetStats) sub(base TargetStats) TargetStats {
	d := func(a, b uint64) uint64 {
		if a < b {
			return a
		}
		return a - b
	}
	return TargetStats{RxPackets: d(t.RxPackets, base.RxPackets), RxBytes: d(t.RxBytes, base.RxBytes),
		TxPackets: d(t.TxPackets, base.TxPackets), TxBytes: d(t.TxBytes, base.TxBytes), Drops: subMap(t.Drops, base.Drops)}
}
