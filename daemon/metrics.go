package daemon

import (
	"net/http"
	"runtime"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xsessiond/xsessiond/datapath"
)

// maxScrapes bounds the scrapes served at once.
const maxScrapes = 4

// metricsHandler serves /metrics from a registry of its own, whose
// collector reads the daemon's state on every scrape.
func (d *Daemon) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{d: d},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "xsessiond_build_info",
			Help:        "The daemon's version and the Go version it was built with; always 1.",
			ConstLabels: prometheus.Labels{"version": d.cfg.Version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }))
	mux := http.NewServeMux()
	// A scrape reads every app's fifos under the daemon's lock: a few at
	// a time, the others answered 503 at once, so that a flood of scrapes
	// of the metrics address (no authentication) cannot keep the control
	// plane waiting.
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, MaxRequestsInFlight: maxScrapes}))
	return mux
}

// collector is the daemon's Prometheus collector.
type collector struct{ d *Daemon }

var (
	descApps         = prometheus.NewDesc("xsessiond_apps", "Attached apps.", nil, nil)
	descIfaceUp      = prometheus.NewDesc("xsessiond_interface_up", "1 while the daemon's interface is up and running, else 0 (down, no carrier, or gone); state: up, down, no-carrier or gone.", []string{"state"}, nil)
	descConns        = prometheus.NewDesc("xsessiond_connections", "Open control connections (apps and CLI).", nil, nil)
	descListeners    = prometheus.NewDesc("xsessiond_listeners", "Listeners by namespace and table.", []string{"namespace", "table"}, nil)
	descSessions     = prometheus.NewDesc("xsessiond_sessions", "Sessions by namespace and state.", []string{"namespace", "state"}, nil)
	descFifoUsed     = prometheus.NewDesc("xsessiond_fifo_used_bytes", "Bytes queued in the fifos of each app's sessions and listeners; a cut-through session's fifos count once, under the app that reads them.", []string{"app", "name", "dir"}, nil)
	descFifoSize     = prometheus.NewDesc("xsessiond_fifo_size_bytes", "Size of the fifos of each app's sessions and listeners.", []string{"app", "name", "dir"}, nil)
	descRx           = prometheus.NewDesc("xsessiond_queue_rx_packets_total", "Packets received by each queue's worker.", []string{"queue"}, nil)
	descTx           = prometheus.NewDesc("xsessiond_queue_tx_packets_total", "Packets sent by each queue's worker, by path: af_xdp (its AF_XDP ring), kernel (datagrams larger than a frame, which the kernel fragments), gso (TCP packets the kernel segments).", []string{"queue", "path"}, nil)
	descDelivered    = prometheus.NewDesc("xsessiond_queue_delivered_total", "Datagrams delivered into app fifos by each queue's worker.", []string{"queue"}, nil)
	descReasm        = prometheus.NewDesc("xsessiond_queue_reassembled_total", "UDP datagrams each queue's worker reassembled from fragments the XDP program steered to it.", []string{"queue"}, nil)
	descChained      = prometheus.NewDesc("xsessiond_queue_chained_total", "Packets larger than a frame that each queue's worker received as a chain of AF_XDP descriptors and joined (TCP segments a veth peer's segmentation offload built, in generic XDP mode).", []string{"queue"}, nil)
	descSynQueued    = prometheus.NewDesc("xsessiond_queue_syn_queued", "TCP SYNs each queue's worker holds, to hand to gVisor after the other packets it receives.", []string{"queue"}, nil)
	descReasmHeld    = prometheus.NewDesc("xsessiond_queue_reassembly_bytes", "Bytes of fragments each queue's worker holds for datagrams it is reassembling.", []string{"queue"}, nil)
	descDrops        = prometheus.NewDesc("xsessiond_queue_drops_total", "Packets dropped on each queue, by reason: the worker's and its AF_XDP socket's (xsk_*).", []string{"queue", "reason"}, nil)
	descXDP          = prometheus.NewDesc("xsessiond_xdp_packets_total", "The XDP program's counters: pass and redirect count every packet once, the other counters say why.", []string{"counter"}, nil)
	descRuleHits     = prometheus.NewDesc("xsessiond_rule_hits_total", "Packets and connects each session rule acted on.", []string{"id", "tag", "action"}, nil)
	descCtlEnds      = prometheus.NewDesc("xsessiond_control_disconnects_total", "Control connections ended, by reason.", []string{"reason"}, nil)
	descShowsRefused = prometheus.NewDesc("xsessiond_control_shows_refused_total", "Show requests refused because control.max_shows were being served.", nil, nil)
	descCtlDrops     = prometheus.NewDesc("xsessiond_control_dropped_total", "Clients dropped for not reading or idling, their apps detached, by reason.", []string{"reason"}, nil)

	descTCPConns     = prometheus.NewDesc("xsessiond_tcp_connections", "TCP connections on the wire by namespace and gVisor's state name, lingering ones (FIN-WAIT, TIME-WAIT) included.", []string{"namespace", "state"}, nil)
	descTCPRetrans   = prometheus.NewDesc("xsessiond_tcp_retransmits_total", "TCP segments gVisor retransmitted on the namespace's connections.", []string{"namespace"}, nil)
	descTCPResets    = prometheus.NewDesc("xsessiond_tcp_resets_total", "TCP connections of the namespace that ended by a reset: sent (ours: an app's abort, a close timeout, a corrupt fifo, the daemon stopping) or received (the peer's).", []string{"namespace", "dir"}, nil)
	descTCPRefused   = prometheus.NewDesc("xsessiond_tcp_refused_total", "TCP connections the namespace's listeners refused, by reason: backlog (listen queue full), limit (connection limits), no_memory (no fifo memory), closing (app or listener going).", []string{"namespace", "reason"}, nil)
	descTCPFifoBad   = prometheus.NewDesc("xsessiond_tcp_fifo_corrupt_total", "TCP connections of the namespace reset because their app broke the indices of the session's rx or tx fifo (counted in xsessiond_tcp_resets_total{dir=\"sent\"} too).", []string{"namespace"}, nil)
	descTCPBufBytes  = prometheus.NewDesc("xsessiond_tcp_buffer_bytes", "The gVisor send and receive buffer sizes of all TCP connections, as accounted against tcp.buffer_memory.", nil, nil)
	descTCPBufLimit  = prometheus.NewDesc("xsessiond_tcp_buffer_limit_bytes", "The bounds on the TCP connections' gVisor buffers: of all connections (tcp.buffer_memory) and of one user's apps' (tcp.user_buffer_memory; one app's of root's).", []string{"of"}, nil)
	descTCPBufClamp  = prometheus.NewDesc("xsessiond_tcp_buffer_clamped_total", "TCP connections that got 64 KiB gVisor buffers because their user's bound (tcp.user_buffer_memory) had no room for the default ones.", nil, nil)
	descTCPBufHeld   = prometheus.NewDesc("xsessiond_tcp_buffer_growth_held_total", "TCP buffer growths (gVisor's receive buffer moderation, its send buffer tuning) the bounds refused.", nil, nil)
	descTCPOrphans   = prometheus.NewDesc("xsessiond_tcp_orphans", "TCP connections their app closed whose data gVisor still delivers (what they hold to send stays accounted in xsessiond_tcp_buffer_bytes).", nil, nil)
	descTCPOrphRst   = prometheus.NewDesc("xsessiond_tcp_orphans_reset_total", "TCP connections their app closed that were reset because the peer took none of their data for the close timeout.", nil, nil)
	descTCPPMTU      = prometheus.NewDesc("xsessiond_tcp_path_mtu_messages_total", "Routers' ICMP messages of a smaller path MTU (fragmentation needed, packet too big) about a TCP connection, each of which lowered its MSS to fit if it was larger.", nil, nil)
	descTCPUnreach   = prometheus.NewDesc("xsessiond_tcp_connects_unreachable_total", "TCP connections in their handshake that ended unreachable, as Linux ends them: a router's ICMP destination unreachable (ENETUNREACH, EHOSTUNREACH, ECONNREFUSED), or a failed neighbour entry of their next hop (EHOSTUNREACH).", nil, nil)
	descTCPTWOver    = prometheus.NewDesc("xsessiond_tcp_time_wait_overflow_total", "TCP connections in TIME-WAIT (or another closing state with nothing left to deliver) ended early because tcp.max_time_wait were held (Linux's TCPTimeWaitOverflow).", nil, nil)
	descTCPAbortCl   = prometheus.NewDesc("xsessiond_tcp_aborted_on_close_total", "TCP connections reset as their app closed them: it left data unread, or the peer sent more after the close (Linux's TCPAbortOnClose and TCPAbortOnData).", nil, nil)
	descTCPStackRsts = prometheus.NewDesc("xsessiond_tcp_stack_resets_total", "Every RST the gVisor TCP stack sent or received, stray segments' included.", []string{"dir"}, nil)
	descTCPAcksLow   = prometheus.NewDesc("xsessiond_tcp_acks_clamped_total", "Bare TCP acknowledgements whose sequence number was lowered to the right edge of the peer's window, which the peer had shrunk below gVisor's next sequence number.", nil, nil)
	descTCPAcksHeld  = prometheus.NewDesc("xsessiond_tcp_acks_held_total", "Bare TCP acknowledgements of one segment held back for the connection's next segment to carry, by how they ended: carried (a later segment made them redundant) or deadline (sent at the delay's end).", []string{"end"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descApps, descIfaceUp, descConns, descListeners, descSessions, descFifoUsed, descFifoSize, descRx, descTx, descDelivered, descReasm, descChained, descReasmHeld, descSynQueued, descDrops, descXDP, descCtlEnds, descCtlDrops, descShowsRefused, descRuleHits,
		descTCPConns, descTCPRetrans, descTCPResets, descTCPFifoBad, descTCPRefused, descTCPBufBytes, descTCPBufLimit, descTCPBufClamp, descTCPBufHeld, descTCPOrphans, descTCPOrphRst, descTCPAbortCl, descTCPTWOver, descTCPPMTU, descTCPUnreach, descTCPStackRsts, descTCPAcksLow, descTCPAcksHeld} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	apps := d.layer.Apps()
	ch <- prometheus.MustNewConstMetric(descApps, prometheus.GaugeValue, float64(len(apps)))
	if st := d.interfaceState(); st != "" {
		up := 0.0
		if st == "up" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descIfaceUp, prometheus.GaugeValue, up, st)
	}
	d.mu.Lock()
	conns := len(d.clients)
	d.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(conns))

	type lk struct{ ns, table string }
	lc := map[lk]int{}
	for _, l := range d.layer.Listeners() {
		lc[lk{NamespaceName(l.Namespace), l.Table}]++
	}
	for k, n := range lc {
		ch <- prometheus.MustNewConstMetric(descListeners, prometheus.GaugeValue, float64(n), k.ns, k.table)
	}
	nsOf := map[uint32]string{}
	names := map[uint32]string{}
	for _, a := range apps {
		nsOf[uint32(a.ID)] = NamespaceName(a.Namespace)
		names[uint32(a.ID)] = a.Name
	}
	sc := map[lk]int{}
	for _, s := range d.layer.Sessions() {
		// A session of an app that attached after the apps were read
		// is counted at the next scrape, in its namespace, not under
		// an empty one.
		if ns, ok := nsOf[uint32(s.App)]; ok {
			sc[lk{ns, s.State}]++
		}
	}
	for _, a := range apps {
		if a.Ended > 0 { // reset or timed out, not yet closed by the app
			sc[lk{NamespaceName(a.Namespace), "ended"}] += a.Ended
		}
	}
	for k, n := range sc {
		ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(n), k.ns, k.table)
	}
	fills := d.fifoFill()
	for _, a := range apps {
		app := a.ID
		f := fills.app(app)
		id := strconv.FormatUint(uint64(app), 10)
		name := names[uint32(app)]
		ch <- prometheus.MustNewConstMetric(descFifoUsed, prometheus.GaugeValue, float64(f.rxUsed), id, name, "rx")
		ch <- prometheus.MustNewConstMetric(descFifoUsed, prometheus.GaugeValue, float64(f.txUsed), id, name, "tx")
		ch <- prometheus.MustNewConstMetric(descFifoSize, prometheus.GaugeValue, float64(f.rxSize), id, name, "rx")
		ch <- prometheus.MustNewConstMetric(descFifoSize, prometheus.GaugeValue, float64(f.txSize), id, name, "tx")
	}
	for _, r := range d.layer.Rules() {
		ch <- prometheus.MustNewConstMetric(descRuleHits, prometheus.CounterValue, float64(r.Hits),
			strconv.FormatUint(uint64(r.ID), 10), r.Tag, r.Action.String())
	}
	cs := d.ControlStats()
	for r, n := range cs.Disconnects {
		ch <- prometheus.MustNewConstMetric(descCtlEnds, prometheus.CounterValue, float64(n), r)
	}
	for r, n := range cs.Dropped {
		ch <- prometheus.MustNewConstMetric(descCtlDrops, prometheus.CounterValue, float64(n), r)
	}
	ch <- prometheus.MustNewConstMetric(descShowsRefused, prometheus.CounterValue, float64(cs.ShowsRefused))
	c.collectTCP(ch)
	st := d.eng.Stats()
	for k, v := range st.XDP {
		ch <- prometheus.MustNewConstMetric(descXDP, prometheus.CounterValue, float64(v), k)
	}
	for _, q := range st.Queues {
		qs := strconv.Itoa(q.Queue)
		ch <- prometheus.MustNewConstMetric(descRx, prometheus.CounterValue, float64(q.RxPackets), qs)
		ch <- prometheus.MustNewConstMetric(descTx, prometheus.CounterValue, float64(q.TxPackets), qs, "af_xdp")
		ch <- prometheus.MustNewConstMetric(descTx, prometheus.CounterValue, float64(q.TxKernel), qs, "kernel")
		ch <- prometheus.MustNewConstMetric(descTx, prometheus.CounterValue, float64(q.TxGSO), qs, "gso")
		ch <- prometheus.MustNewConstMetric(descDelivered, prometheus.CounterValue, float64(q.Delivered), qs)
		ch <- prometheus.MustNewConstMetric(descReasm, prometheus.CounterValue, float64(q.Reassembled), qs)
		ch <- prometheus.MustNewConstMetric(descReasmHeld, prometheus.GaugeValue, float64(q.ReasmHeld), qs)
		ch <- prometheus.MustNewConstMetric(descSynQueued, prometheus.GaugeValue, float64(q.SynQueued), qs)
		ch <- prometheus.MustNewConstMetric(descChained, prometheus.CounterValue, float64(q.Chained), qs)
		for reason, n := range q.Drops {
			ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(n), qs, reason)
		}
	}
}

// collectTCP sends the TCP metrics: by namespace, from the connections
// and listeners the datapath serves, and the stack's own reset counts.
func (c *collector) collectTCP(ch chan<- prometheus.Metric) {
	d := c.d
	byNS := d.eng.TCPNamespaceStats()
	if byNS == nil {
		return
	}
	live := map[string]bool{}
	for _, n := range d.layer.Namespaces() {
		live[n.ID] = true
		if byNS[n.ID] == nil {
			byNS[n.ID] = &datapath.TCPNamespaceStats{}
		}
	}
	for id, st := range byNS {
		// The datapath forgets the counts of a namespace when it is
		// deleted: its counters go with it, and its connections (those
		// that linger: FIN-WAIT, TIME-WAIT) once none is left. A
		// namespace added again with that id counts from zero, as a new
		// series.
		ns := NamespaceName(id)
		for state, n := range st.States {
			ch <- prometheus.MustNewConstMetric(descTCPConns, prometheus.GaugeValue, float64(n), ns, state)
		}
		if !live[id] {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descTCPRetrans, prometheus.CounterValue, float64(st.Retransmits), ns)
		ch <- prometheus.MustNewConstMetric(descTCPResets, prometheus.CounterValue, float64(st.ResetsSent), ns, "sent")
		ch <- prometheus.MustNewConstMetric(descTCPResets, prometheus.CounterValue, float64(st.ResetsReceived), ns, "received")
		ch <- prometheus.MustNewConstMetric(descTCPFifoBad, prometheus.CounterValue, float64(st.FifoCorrupt), ns)
		for _, r := range []string{datapath.TCPRefusedBacklog, datapath.TCPRefusedLimit, datapath.TCPRefusedNoMemory, datapath.TCPRefusedClosing} {
			ch <- prometheus.MustNewConstMetric(descTCPRefused, prometheus.CounterValue, float64(st.Refused[r]), ns, r)
		}
	}
	if s, ok := d.eng.(dpEngine); ok {
		ts := s.TCPStats()
		ch <- prometheus.MustNewConstMetric(descTCPStackRsts, prometheus.CounterValue, float64(ts.ResetsSent), "sent")
		ch <- prometheus.MustNewConstMetric(descTCPStackRsts, prometheus.CounterValue, float64(ts.ResetsRecv), "received")
		b := ts.Buffers
		ch <- prometheus.MustNewConstMetric(descTCPBufBytes, prometheus.GaugeValue, float64(b.Bytes))
		ch <- prometheus.MustNewConstMetric(descTCPBufLimit, prometheus.GaugeValue, float64(b.Limit), "all")
		ch <- prometheus.MustNewConstMetric(descTCPBufLimit, prometheus.GaugeValue, float64(b.GroupLimit), "user")
		ch <- prometheus.MustNewConstMetric(descTCPBufClamp, prometheus.CounterValue, float64(b.Clamped))
		ch <- prometheus.MustNewConstMetric(descTCPBufHeld, prometheus.CounterValue, float64(b.Held))
		ch <- prometheus.MustNewConstMetric(descTCPOrphans, prometheus.GaugeValue, float64(ts.Orphans))
		ch <- prometheus.MustNewConstMetric(descTCPOrphRst, prometheus.CounterValue, float64(ts.OrphansReset))
		ch <- prometheus.MustNewConstMetric(descTCPAbortCl, prometheus.CounterValue, float64(ts.AbortedOnClose))
		ch <- prometheus.MustNewConstMetric(descTCPTWOver, prometheus.CounterValue, float64(ts.TimeWaitOverflow))
		ch <- prometheus.MustNewConstMetric(descTCPPMTU, prometheus.CounterValue, float64(ts.PathMTUMessages))
		ch <- prometheus.MustNewConstMetric(descTCPUnreach, prometheus.CounterValue, float64(ts.ConnectsUnreachable))
		ch <- prometheus.MustNewConstMetric(descTCPAcksLow, prometheus.CounterValue, float64(ts.AcksClamped))
		ch <- prometheus.MustNewConstMetric(descTCPAcksHeld, prometheus.CounterValue, float64(ts.AcksCoalesced), "carried")
		ch <- prometheus.MustNewConstMetric(descTCPAcksHeld, prometheus.CounterValue, float64(ts.AcksDelayed), "deadline")
	}
}
