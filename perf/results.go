package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/xsessiond/xsessiond/daemon"
)

// Status values of a result row.
const (
	StatusOK           = "ok"
	StatusNotAvailable = "not available"
	StatusError        = "error"
	StatusInterrupted  = "interrupted"
)

// Result is one scenario row: every figure as median/min/max over the
// repetitions, and the repetitions themselves.
type Result struct {
	Scenario
	Status string `json:"status"`
	Note   string `json:"note,omitempty"`

	PPS     Summary `json:"pps"`      // delivered packets (or messages, replies) per second
	Gbps    Summary `json:"gbps"`     // delivered payload bits per second / 1e9
	SentPPS Summary `json:"sent_pps"` // offered by the generator (or writer, or client)
	Loss    Summary `json:"loss"`     // packets: sent − delivered over the whole repetition
	LossPct Summary `json:"loss_pct"` // 100 × loss / sent
	// Counted is the loss the drop counters explain; Unexplained the rest
	// (receive rows; drops.go says which counters).
	Counted     Summary `json:"loss_counted"`
	Unexplained Summary `json:"loss_unexplained"`
	// CPUNs is the whole machine's busy CPU time (/proc/stat user + nice +
	// system + irq + softirq + steal) over the window per delivered
	// packet, generator included.
	CPUNs Summary `json:"cpu_ns_per_pkt"`
	// RxCPUNs is CPUNs with the generator-alone cost taken out:
	// (busy − gen-only ns/pkt × sent) / delivered, using the median of the
	// gen-only row of the same group. Receive rows only.
	RxCPUNs Summary `json:"rx_cpu_ns_per_pkt"`
	ProcNs  Summary `json:"proc_ns_per_pkt"` // this process's user+system time per delivered packet
	Util    Summary `json:"util"`            // busy share of all CPUs in the window

	// TCP rows. SrvCPUNs is the server process's CPU time (host B's
	// side: the server and, for xsessiond, the daemon in its process)
	// per transaction or connection; the bulk rows give CPU per GB
	// moved instead, in ms: CPUPerGB the whole machine's (client
	// included), SrvCPUPerGB the server process's. Errors are connection
	// errors of client and server; Exact counts the repetitions whose
	// totals matched on both ends (transactions, or bytes).
	SrvCPUNs    Summary `json:"server_cpu_ns_per_txn"`
	CPUPerGB    Summary `json:"cpu_ms_per_gb"`
	SrvCPUPerGB Summary `json:"server_cpu_ms_per_gb"`
	Errors      Summary `json:"errors"`
	Exact       int     `json:"exact_reps"`

	P50us  Summary    `json:"p50_us"` // echo and TCP request/response only
	P99us  Summary    `json:"p99_us"`
	P999us Summary    `json:"p999_us"`
	CDF    []CDFPoint `json:"cdf,omitempty"` // echo only: all repetitions pooled
	// SocketP50us and SocketP99us (echo only) are the round trips to the
	// replies' arrival at the client's socket, by the kernel's receive
	// timestamp: the echo without the client's own wake-up and read.
	SocketP50us Summary `json:"socket_p50_us"`
	SocketP99us Summary `json:"socket_p99_us"`

	Reps []Rep `json:"reps"`
}

// computeFigures fills a result's figures from its repetitions.
func computeFigures(r *Result) {
	n := len(r.Reps)
	pps, gbps, sent := make([]float64, n), make([]float64, n), make([]float64, n)
	loss, lossPct, cpu, proc, util := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	var p50, p99, p999, sockP50, sockP99, counted, unexplained []float64
	var srv, perGB, srvPerGB, errs []float64
	r.Exact = 0
	var pooled []time.Duration
	for i, rep := range r.Reps {
		secs := float64(rep.WindowNs) / 1e9
		pps[i] = float64(rep.Delivered) / secs
		gbps[i] = pps[i] * float64(r.Payload) * 8 / 1e9
		sent[i] = float64(rep.Sent) / secs
		l := float64(rep.TotalSent) - float64(rep.TotalDelivered)
		loss[i] = l
		lossPct[i] = math.NaN()
		if rep.TotalSent > 0 {
			lossPct[i] = 100 * l / float64(rep.TotalSent)
		}
		cpu[i], proc[i] = math.NaN(), math.NaN()
		if v, ok := PerPacket(time.Duration(rep.BusyNs), rep.Delivered); ok {
			cpu[i] = v
		}
		if v, ok := PerPacket(time.Duration(rep.ProcNs), rep.Delivered); ok {
			proc[i] = v
		}
		util[i] = rep.Util
		if isTCP(r.Kind) {
			errs = append(errs, float64(rep.Errors))
			if rep.TotalSent == rep.TotalDelivered {
				r.Exact++
			}
			if isBulk(r.Kind) {
				// Delivered counts bytes.
				pps[i], cpu[i], proc[i] = math.NaN(), math.NaN(), math.NaN()
				gbps[i] = float64(rep.Delivered) * 8 / secs / 1e9
				if rep.Delivered > 0 {
					perGB = append(perGB, float64(rep.BusyNs)/float64(rep.Delivered)*1e3)
					srvPerGB = append(srvPerGB, float64(rep.SrvNs)/float64(rep.Delivered)*1e3)
				}
			} else if v, ok := PerPacket(time.Duration(rep.SrvNs), rep.Delivered); ok {
				srv = append(srv, v)
			}
		}
		if (r.Kind == KindReceive || r.Kind == KindGenOnly) && rep.SrvNs > 0 {
			if v, ok := PerPacket(time.Duration(rep.SrvNs), rep.Delivered); ok {
				srv = append(srv, v)
			}
		}
		if (r.Kind == KindReceive || r.Kind == KindEcho) && rep.Drops != nil {
			counted = append(counted, float64(rep.Counted))
			unexplained = append(unexplained, float64(rep.Unexplained))
		}
		if (r.Kind == KindEcho || r.Kind == KindTCPRR || r.Kind == KindTCPCRR) && len(rep.Samples) > 0 {
			p50 = append(p50, us(Percentile(rep.Samples, 0.50)))
			p99 = append(p99, us(Percentile(rep.Samples, 0.99)))
			p999 = append(p999, us(Percentile(rep.Samples, 0.999)))
			pooled = append(pooled, rep.Samples...)
		}
		if len(rep.SocketSamples) > 0 {
			sockP50 = append(sockP50, us(Percentile(rep.SocketSamples, 0.50)))
			sockP99 = append(sockP99, us(Percentile(rep.SocketSamples, 0.99)))
		}
	}
	r.PPS, r.Gbps, r.SentPPS = Summarize(pps), Summarize(gbps), Summarize(sent)
	r.Loss, r.LossPct = Summarize(loss), Summarize(lossPct)
	r.CPUNs, r.ProcNs, r.Util = Summarize(cpu), Summarize(proc), Summarize(util)
	r.P50us, r.P99us, r.P999us = Summarize(p50), Summarize(p99), Summarize(p999)
	r.SocketP50us, r.SocketP99us = Summarize(sockP50), Summarize(sockP99)
	r.Counted, r.Unexplained = Summarize(counted), Summarize(unexplained)
	r.SrvCPUNs, r.CPUPerGB, r.SrvCPUPerGB, r.Errors = Summarize(srv), Summarize(perGB), Summarize(srvPerGB), Summarize(errs)
	if len(pooled) > 0 {
		slices.Sort(pooled)
		r.CDF = CDF(pooled, 200)
	}
}

// applyGenCost fills RxCPUNs of the receive rows from the gen-only row of
// their group, when that row measured something. Not for the XDP
// generator's rows: its gen-only row includes host B building a socket
// buffer for every frame (to drop it as another host's), which an XDP
// receiver in native mode never does, so taking it out would count the
// generator's cost too high and the receivers' too low.
func applyGenCost(results []Result) {
	gen := map[string]float64{}
	for _, r := range results {
		if r.Kind == KindGenOnly && r.Status == StatusOK && r.CPUNs.N > 0 && r.Gen != genXDP {
			gen[r.Group] = r.CPUNs.Median
		}
	}
	for i := range results {
		r := &results[i]
		g, ok := gen[r.Group]
		if r.Kind != KindReceive || r.Status != StatusOK || !ok {
			continue
		}
		v := make([]float64, len(r.Reps))
		for j, rep := range r.Reps {
			v[j] = math.NaN()
			if c, ok := ReceiverCost(time.Duration(rep.BusyNs), rep.Sent, rep.Delivered, g); ok {
				v[j] = c
			}
		}
		r.RxCPUNs = Summarize(v)
	}
}

// RatioRow compares xsessiond with the baseline of its group, figure by
// figure: xsessiond's median / the baseline's median. A figure is null
// when either side has no number.
type RatioRow struct {
	Group     string              `json:"group"`
	Baseline  string              `json:"baseline"`
	Available bool                `json:"available"`
	Note      string              `json:"note,omitempty"`
	Ratios    map[string]*float64 `json:"xsessiond_over_baseline"`
	// Turns compares the latency of the two rows repetition by
	// repetition (they take turns: runGroup); nil for rows without
	// latency samples.
	Turns *Turns `json:"turns,omitempty"`
}

// Turns counts the repetitions in which xsessiond's percentile was at or
// below the baseline's repetition of the same turn.
type Turns struct {
	N       int `json:"n"`
	P50AtOr int `json:"p50_at_or_below"`
	P99AtOr int `json:"p99_at_or_below"`
	// The same, of the echo's round trips to the client's socket, for the
	// SocketN turns where both rows have them.
	SocketN       int `json:"socket_n,omitempty"`
	SocketP50AtOr int `json:"socket_p50_at_or_below,omitempty"`
	SocketP99AtOr int `json:"socket_p99_at_or_below,omitempty"`
}

// String is the turns as results.md gives them.
func (t *Turns) String() string {
	if t == nil {
		return ""
	}
	s := fmt.Sprintf("turn by turn, p50 at or below in %d of %d, p99 in %d", t.P50AtOr, t.N, t.P99AtOr)
	if t.SocketN > 0 {
		s += fmt.Sprintf("; at A's socket p50 in %d of %d, p99 in %d", t.SocketP50AtOr, t.SocketN, t.SocketP99AtOr)
	}
	return s
}

// turns compares x's repetitions with b's, the ith with the ith, for the
// repetitions of both that have latency samples (sorted).
func turns(x, b *Result) *Turns {
	var t Turns
	for i := range min(len(x.Reps), len(b.Reps)) {
		xr, br := &x.Reps[i], &b.Reps[i]
		if !countTurn(xr.Samples, br.Samples, &t.N, &t.P50AtOr, &t.P99AtOr) {
			continue
		}
		countTurn(xr.SocketSamples, br.SocketSamples, &t.SocketN, &t.SocketP50AtOr, &t.SocketP99AtOr)
	}
	if t.N == 0 {
		return nil
	}
	return &t
}

// countTurn counts one turn of sorted samples xs against bs: n, and p50
// and p99 when xs's is at or below bs's. False when either has none.
func countTurn(xs, bs []time.Duration, n, p50, p99 *int) bool {
	if len(xs) == 0 || len(bs) == 0 {
		return false
	}
	*n++
	if Percentile(xs, 0.50) <= Percentile(bs, 0.50) {
		*p50++
	}
	if Percentile(xs, 0.99) <= Percentile(bs, 0.99) {
		*p99++
	}
	return true
}

// baselineOf is the implementation xsessiond is compared with in a kind.
func baselineOf(k Kind) string {
	if k == KindCutThrough {
		return ImplSocketpair
	}
	return ImplKernel
}

// Ratios compares every xsessiond row with its group's baseline.
func Ratios(results []Result) []RatioRow {
	var rows []RatioRow
	for _, x := range results {
		if x.Impl != ImplXsessiond {
			continue
		}
		base := baselineOf(x.Kind)
		row := RatioRow{Group: x.Group, Baseline: base, Ratios: map[string]*float64{}, Available: x.Status == StatusOK}
		var b *Result
		for i := range results {
			if results[i].Group == x.Group && results[i].Impl == base {
				b = &results[i]
			}
		}
		switch {
		case x.Status != StatusOK:
			row.Note = "xsessiond " + x.Status
			if x.Note != "" {
				row.Note += ": " + x.Note
			}
		case b == nil || b.Status != StatusOK:
			row.Available = false
			row.Note = "no baseline"
		}
		figs := []struct {
			name string
			get  func(*Result) Summary
		}{
			{"pps", func(r *Result) Summary { return r.PPS }},
			{"gbps", func(r *Result) Summary { return r.Gbps }},
			{"cpu_ns_per_pkt", func(r *Result) Summary { return r.CPUNs }},
			{"rx_cpu_ns_per_pkt", func(r *Result) Summary { return r.RxCPUNs }},
			{"loss_pct", func(r *Result) Summary { return r.LossPct }},
			{"server_cpu_ns_per_txn", func(r *Result) Summary { return r.SrvCPUNs }},
			{"cpu_ms_per_gb", func(r *Result) Summary { return r.CPUPerGB }},
			{"server_cpu_ms_per_gb", func(r *Result) Summary { return r.SrvCPUPerGB }},
			{"p50_us", func(r *Result) Summary { return r.P50us }},
			{"p99_us", func(r *Result) Summary { return r.P99us }},
			{"p999_us", func(r *Result) Summary { return r.P999us }},
			{"socket_p50_us", func(r *Result) Summary { return r.SocketP50us }},
			{"socket_p99_us", func(r *Result) Summary { return r.SocketP99us }},
		}
		for _, f := range figs {
			var v *float64
			if row.Available {
				if q := Ratio(f.get(&x), f.get(b)); !math.IsNaN(q) {
					v = &q
				}
			}
			row.Ratios[f.name] = v
		}
		if row.Available {
			row.Turns = turns(&x, b)
		}
		rows = append(rows, row)
	}
	return rows
}

// HostInfo describes the machine a report was measured on.
type HostInfo struct {
	Kernel   string `json:"kernel"`
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
}

// RunConfig is the command line of a report.
type RunConfig struct {
	Quick      bool   `json:"quick"`
	TCPOnly    bool   `json:"tcp_only,omitempty"`
	Reps       int    `json:"reps"`
	Warmup     string `json:"warmup"`
	Window     string `json:"window"`
	Queues     int    `json:"queues"`
	Flows      int    `json:"flows"`
	Rate       uint64 `json:"rate"`
	EchoRate   uint64 `json:"echo_rate"`
	GenThreads int    `json:"gen_threads"`
	Gen        string `json:"gen"` // --gen; each receive row's generator is its scenario's gen
	// ServerCPU is the CPU of the echo and TCP rows' server process, the
	// client's process on the others meanwhile; -1: not placed.
	ServerCPU int `json:"server_cpu"`
	// Steer is --steer: with the rows placed, each host's receive work
	// on its own CPUs and host B's CPU time the server CPU's busy time.
	Steer bool `json:"steer,omitempty"`
	// PlaceUDP is --place-udp: the UDP receive and gen-only rows placed
	// too, host B on the server's CPU.
	PlaceUDP bool `json:"place_udp,omitempty"`
	// PeerOffload: host A's tx checksum offload and TSO were left on
	// (--peer-offload).
	PeerOffload bool `json:"peer_offload,omitempty"`
	// XsDaemonProcess is --xs-daemon-process: xsessiond's rows ran the
	// daemon in a process of its own beside the app's.
	XsDaemonProcess bool `json:"xs_daemon_process"`
	// XsSchedPolicy is --xs-sched-policy: the scheduling policy of the
	// daemon's process ("" when the daemon ran in the app's).
	XsSchedPolicy string `json:"xs_sched_policy,omitempty"`
}

// Report is the results file.
type Report struct {
	Started time.Time  `json:"started"`
	Elapsed string     `json:"elapsed"`
	Host    HostInfo   `json:"host"`
	Config  RunConfig  `json:"config"`
	Method  []string   `json:"method"`
	Results []Result   `json:"results"`
	Ratios  []RatioRow `json:"ratios"`
	TCP     []TCPGoal  `json:"tcp_goals,omitempty"`
}

// methodNotes say how each figure is made; they go into both outputs.
var methodNotes = []string{
	"Rig: two network namespaces joined by a veth pair (host A sends, host B receives), queues as listed.",
	"Generators (the gen column; --gen, by default xdp on one queue and packet on more, packet everywhere with --place-udp): xdp runs an XDP program that returns XDP_TX with BPF_F_TEST_XDP_LIVE_FRAMES in host A (test runs of ~200 ms each; each run sets up a page pool, ~20 ms of idle wall time here), so veth hands every frame to host B's NAPI as an XDP frame, as a NIC with an XDP driver would: no socket buffer in A, and none for an XDP program in B (xsessiond is then attached in native mode, unless --xs-xdp-mode says otherwise; the kernel's receiver gets GRO on at B's veth, which gives veth the NAPI that takes XDP frames, and builds its socket buffer around the frame). veth puts an XDP frame on the peer's queue of the sending CPU, not by flow hash, so it serves one-queue rows. packet is an AF_PACKET TPACKET_V2 tx ring with PACKET_QDISC_BYPASS: socket buffers through A's veth, host B's receive (and, for an XDP program, a copy of each frame into a page) running in the generator's sendto. Both: frames built once, flows differ in UDP source port; each generator goroutine gets a P of its own (GOMAXPROCS one higher while it runs), so the receiver under test has the Ps it would have without it.",
	"Receive and gen-only rows are not placed unless --place-udp: on veth the generator's transmit runs host B's receive (the kernel's UDP input, or the XDP program and its AF_XDP copy) in its own softirq, on the generator's CPU (B's NAPI for XDP frames, scheduled by the generator's test run), and the receiver under test runs on any CPU. With --place-udp, host B is on the server's CPU (RPS on B's veth, in native XDP mode B's NAPI threaded there, and this process, where the receiver runs, with GOMAXPROCS as many as its CPUs) and the generator's threads on the others, as two hosts would be.",
	"Delivered: datagrams read by the app (kernel, xsessiond), frames dropped by the XDP program (xdp-drop), or frames sent (gen-only).",
	"CPU ns/pkt: whole-machine busy time from /proc/stat (user+nice+system+irq+softirq+steal) over the window / delivered, generator included; other load on the machine counts too.",
	"gen-only: generator into host B with nothing attached and frames addressed to another MAC, dropped by B's kernel at IP input (PACKET_OTHERHOST; for XDP frames after building a socket buffer around each); its CPU ns per sent packet (generator + veth hand-over + that drop) is the generator-alone cost.",
	"rx ns/pkt: (busy − gen-only ns/pkt × sent) / delivered, with the gen-only median of the same payload/queues/flows; not for the xdp generator's rows, whose gen-only row includes B's socket buffer per frame, which native XDP never builds. With --place-udp the gen-only row's own B side (its frames taken up to IP input on B's CPU, across CPUs) can cost more than an XDP program's, so rx ns/pkt can come out below zero for the XDP_DROP floor; B CPU ns/pkt is then the receive side's measure.",
	"B CPU ns/pkt (--place-udp): the busy time of host B's CPU (/proc/stat) per delivered packet: B's receive softirqs and the receiver under test, which run there; – when the rows are not placed.",
	"Loss: sent − delivered over the whole repetition, after the receiver has drained (until delivered + counted drops reach sent, for at most the drain time: 1 s).",
	"Loss counted: the drops counters explain, read before and after the repetition: the veth ends' (A tx_dropped in the echo rows: the hand-over refused the datagram, which the packet generator of the receive rows sends again; an XDP frame B's ring had no room for is in both A's tx_dropped and B's rx_dropped and counted as B's; B rx_dropped: B's backlog, less the frames A's tx_dropped counted too, or in native mode a failed XDP redirect, which includes an AF_XDP socket's rx_dropped, fill ring empty and rx ring full), B's UDP InErrors (full socket buffers, bad checksums) and NoPorts, in the echo rows the same of A for the replies (A rx_dropped less B tx_dropped), xsessiond's per-queue drop reasons (fifo full, no session, bad checksum, ...), and with its XDP program in generic mode its AF_XDP sockets' rx_dropped and rx ring full (a generic redirect the socket refused has no device counter). Unexplained: loss − counted, 0 when every loss has a counter; the harness prints each repetition's counters.",
	"proc ns/pkt: this process's own user+system time per delivered packet (getrusage), less sensitive to other load; softirq work the kernel does outside the process is not in it.",
	"xsessiond is the daemon (package daemon, as xsessiond run starts it) on host B's veth end, in a process of its own beside its app's on the same CPUs (--xs-daemon-process=false: in the app's process) (AF_XDP in copy mode as veth has no zero-copy; its XDP program in the daemon's default mode, generic on a one-queue veth and native with several, and native for XDP frames, unless --xs-xdp-mode says otherwise), with apps attached through the app library over its control socket; the receiving app counts datagrams with ReadBatch, in place in its listener's rx fifo, without copying payloads.",
	"Cut-through: socketpair writes and reads one message per system call; xsessiond's writer writes one datagram per Write on its app library connection and its reader takes up to 64 per ReadBatch in place, both sleeping only when the fifo is full or empty.",
	"Echo: kernel UDP sockets in host A, with A's tx checksum offload off (so an AF_XDP receiver sees complete UDP checksums); the same for both implementations. The echo server runs as a process of its own (perf echoserve) started in B's namespace: the kernel echo, or the daemon and the echo app for xsessiond; the client stays in the harness's process, its sender writing each request at its due time (the i-th at i/rate, sleeping in nanosleep(2) with a timer slack of 1 ns on a thread and a P of its own), its receiver in Go's poller. During the echo rows the server process runs on one CPU (--server-cpu, by default the last) and the harness's threads on the others, with as many Ps, for both implementations, as with two hosts, and with --steer (the default) each host's receive work steered to its own CPUs (see TCP B CPU); --server-cpu -1 lets both use every CPU.",
	"TCP: a kernel TCP client in host A (Go net, one goroutine per connection; connect/request/close: 4 goroutines each on a thread in A's namespace, host A's ephemeral port range 1024–65535 with tcp_tw_reuse; both hosts' kernel sockets with the congestion control --tcp-cc names, by default cubic, Linux's, whatever the machine's default) against a server in host B that is one Go function on a net.Listener: net.Listen's (kernel) or app.Listen's (xsessiond: the daemon in a process of its own beside the server's, on the same CPU, or with --xs-daemon-process=false in the server's process; app fifos at the daemon's default size, 64 KiB per direction, in the request/response rows, and 1 MiB per direction in the bulk rows, as a bulk program sizes its socket buffers: --xs-tcp-bulk-fifo). The server runs as a process of its own (perf tcpserve) started in B's namespace, placed as for the echo rows (--server-cpu).",
	"TCP B CPU: with the rows placed and --steer (the default), all the busy time of the server's CPU (/proc/stat user+nice+system+irq+softirq+steal over the window) per transaction, connection or GB: the server process (for xsessiond, and the daemon's process beside it with its workers and gVisor's goroutines), B's receive softirqs and B's NAPI threads. On veth a transmit runs the peer's receive in the sender's softirq, which put each host's receive on the other's CPU; --steer moves it back: receive packet steering on A's veth to the client's CPUs and on B's veth to the server's, and, while xsessiond's XDP program is attached in native mode, B's NAPI threaded on the server's CPU (in generic mode the program runs in the receive softirq RPS put there), as a NIC's interrupt would place each host's receive. Without --steer: the server process's user+system time (getrusage, read by the process itself at both ends of the window), and for xsessiond the daemon's process's (read by that process). The log line gives both. Machine CPU: /proc/stat busy time over the window, client included.",
	"TCP exact: the repetitions whose totals match at both ends (transactions the client completed = requests the server answered; bytes written = bytes read, after the sender closed and the receiver read to the end). Errors: failed connects, resets and timeouts of client and server.",
	"Each figure: median [min–max] over the repetitions. The rows of a group (the kernel, xsessiond, their generator alone) take turns: the first repetition of each, then the second of each, and so on. For the echo and TCP request/response rows the ratio table's note counts the turns in which xsessiond's p50 and p99 were at or below the baseline's in the same turn.",
}

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

func fmtSummary(s Summary, scale float64, prec int) string {
	if s.N == 0 {
		return "–"
	}
	f := func(v float64) string { return fmt.Sprintf("%.*f", prec, v*scale) }
	if s.N == 1 {
		return f(s.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", f(s.Median), f(s.Min), f(s.Max))
}

func fmtRatio(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *v)
}

// WriteMarkdown writes the summary tables.
func WriteMarkdown(w io.Writer, rep *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# xsessiond perf results\n\n")
	fmt.Fprintf(&b, "Started %s, took %s. Host: %s, %d CPUs (%s). Repetitions: %d, window %s after %s warm-up.\n\n",
		rep.Started.Format(time.RFC3339), rep.Elapsed, rep.Host.Kernel, rep.Host.CPUs, rep.Host.CPUModel,
		rep.Config.Reps, rep.Config.Window, rep.Config.Warmup)
	if rep.Config.ServerCPU >= 0 {
		fmt.Fprintf(&b, "Echo and TCP rows: the server process on CPU %d, the client's on the others", rep.Config.ServerCPU)
		if rep.Config.Steer {
			fmt.Fprintf(&b, "; each host's receive work steered to its own CPUs, host B's CPU time all of CPU %d's busy time", rep.Config.ServerCPU)
		}
		if rep.Config.PlaceUDP {
			fmt.Fprintf(&b, ". UDP receive and gen-only rows placed too (--place-udp): host B on CPU %d, the generator on the others", rep.Config.ServerCPU)
		}
		fmt.Fprintf(&b, ".\n\n")
	} else {
		fmt.Fprintf(&b, "Echo and TCP rows: server and client on any CPU.\n\n")
	}
	if rep.Config.XsDaemonProcess {
		policy := rep.Config.XsSchedPolicy
		if policy == "" {
			policy = daemon.SchedKeep
		}
		fmt.Fprintf(&b, "xsessiond's rows: the daemon in a process of its own beside the app's, on the same CPUs, the app attached over the daemon's control socket, as xsessiond run and an app run (--xs-daemon-process), its threads' scheduling policy %s (--xs-sched-policy); a TCP server's CPU time is both processes'.\n\n", policy)
	} else {
		fmt.Fprintf(&b, "xsessiond's rows: the daemon in the app's process (--xs-daemon-process=false), one Go runtime for both.\n\n")
	}
	for _, m := range rep.Method {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	section := func(title string, kinds ...Kind) []Result {
		var rows []Result
		for _, r := range rep.Results {
			if slices.Contains(kinds, r.Kind) {
				rows = append(rows, r)
			}
		}
		if len(rows) > 0 {
			fmt.Fprintf(&b, "\n## %s\n\n", title)
		}
		return rows
	}
	status := func(r Result) string {
		if r.Status == StatusOK {
			return ""
		}
		s := "**" + r.Status + "**"
		if r.Note != "" {
			s += ": " + r.Note
		}
		return s
	}
	if rows := section("UDP receive", KindGenOnly, KindReceive); len(rows) > 0 {
		b.WriteString("| group | impl | gen | Mpps | Gbit/s | offered Mpps | loss % | loss counted | unexplained | CPU ns/pkt | rx ns/pkt | B CPU ns/pkt | proc ns/pkt | CPU util | note |\n")
		b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, r := range rows {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Group, r.Impl, r.Gen,
				fmtSummary(r.PPS, 1e-6, 3), fmtSummary(r.Gbps, 1, 2), fmtSummary(r.SentPPS, 1e-6, 3),
				fmtSummary(r.LossPct, 1, 2), fmtSummary(r.Counted, 1, 0), fmtSummary(r.Unexplained, 1, 0),
				fmtSummary(r.CPUNs, 1, 0), fmtSummary(r.RxCPUNs, 1, 0), fmtSummary(r.SrvCPUNs, 1, 0),
				fmtSummary(r.ProcNs, 1, 0), fmtPct(r.Util), status(r))
		}
	}
	if rows := section("UDP echo latency", KindEcho); len(rows) > 0 {
		b.WriteString("| group | impl | rate/s | replies/s | p50 µs | p99 µs | p99.9 µs | at A's socket: p50 µs | p99 µs | loss % | CPU ns/rtt | note |\n")
		b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, r := range rows {
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Group, r.Impl, r.Rate,
				fmtSummary(r.PPS, 1, 0), fmtSummary(r.P50us, 1, 1), fmtSummary(r.P99us, 1, 1), fmtSummary(r.P999us, 1, 1),
				fmtSummary(r.SocketP50us, 1, 1), fmtSummary(r.SocketP99us, 1, 1),
				fmtSummary(r.LossPct, 1, 2), fmtSummary(r.CPUNs, 1, 0), status(r))
		}
	}
	if rows := section("Cut-through between two local apps", KindCutThrough); len(rows) > 0 {
		b.WriteString("| group | impl | M msg/s | Gbit/s | CPU ns/msg | note |\n| --- | --- | --- | --- | --- | --- |\n")
		for _, r := range rows {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.Group, r.Impl,
				fmtSummary(r.PPS, 1e-6, 3), fmtSummary(r.Gbps, 1, 2), fmtSummary(r.CPUNs, 1, 0), status(r))
		}
	}
	exact := func(r Result) string {
		if len(r.Reps) == 0 {
			return "–"
		}
		if r.Exact == len(r.Reps) {
			return "yes"
		}
		return fmt.Sprintf("**%d of %d**", r.Exact, len(r.Reps))
	}
	if rows := section("TCP request/response and connect/request/close", KindTCPRR, KindTCPCRR); len(rows) > 0 {
		b.WriteString("| group | impl | conns | txn/s | p50 µs | p99 µs | B CPU ns/txn | machine CPU ns/txn | client proc ns/txn | exact | errors | note |\n")
		b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, r := range rows {
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Group, r.Impl, r.Flows,
				fmtSummary(r.PPS, 1, 0), fmtSummary(r.P50us, 1, 1), fmtSummary(r.P99us, 1, 1),
				fmtSummary(r.SrvCPUNs, 1, 0), fmtSummary(r.CPUNs, 1, 0), fmtSummary(r.ProcNs, 1, 0),
				exact(r), fmtSummary(r.Errors, 1, 0), status(r))
		}
	}
	if rows := section("TCP bulk", KindTCPRecv, KindTCPSend); len(rows) > 0 {
		b.WriteString("| group | impl | direction | Gbit/s | B CPU ms/GB | machine CPU ms/GB | exact | errors | note |\n")
		b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, r := range rows {
			dir := "A → B"
			if r.Kind == KindTCPSend {
				dir = "B → A"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Group, r.Impl, dir,
				fmtSummary(r.Gbps, 1, 3), fmtSummary(r.SrvCPUPerGB, 1, 0), fmtSummary(r.CPUPerGB, 1, 0),
				exact(r), fmtSummary(r.Errors, 1, 0), status(r))
		}
	}
	if goals := TCPGoals(rep.Results); len(goals) > 0 {
		b.WriteString("\n## TCP goals (xsessiond against the kernel of the same run)\n\n")
		b.WriteString("| group | goal | rate xsessiond/kernel | B CPU xsessiond/kernel | met |\n| --- | --- | --- | --- | --- |\n")
		for _, g := range goals {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", g.Group, g.Goal, fmtRatio(g.Rate), fmtRatio(g.CPU), g.Met)
		}
	}
	if len(rep.Ratios) > 0 {
		b.WriteString("\n## xsessiond / baseline\n\n")
		b.WriteString("| group | baseline | pps | Gbit/s | CPU ns/pkt | rx ns/pkt | B CPU | p50 | p99 | p99.9 | at A's socket: p50 | p99 | note |\n")
		b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, q := range rep.Ratios {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", q.Group, q.Baseline,
				fmtRatio(q.Ratios["pps"]), fmtRatio(q.Ratios["gbps"]), fmtRatio(q.Ratios["cpu_ns_per_pkt"]),
				fmtRatio(q.Ratios["rx_cpu_ns_per_pkt"]), fmtRatio(q.Ratios["server_cpu_ns_per_txn"]),
				fmtRatio(q.Ratios["p50_us"]), fmtRatio(q.Ratios["p99_us"]),
				fmtRatio(q.Ratios["p999_us"]), fmtRatio(q.Ratios["socket_p50_us"]), fmtRatio(q.Ratios["socket_p99_us"]),
				joinNotes(q.Note, q.Turns.String()))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeFile creates dir/name and fills it with write.
func writeFile(dir, name string, write func(io.Writer) error) (err error) {
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	return write(f)
}

func fmtPct(s Summary) string {
	if s.N == 0 {
		return "–"
	}
	return fmtSummary(s, 100, 0) + "%"
}

// joinNotes joins the non-empty notes with "; ".
func joinNotes(notes ...string) string {
	var keep []string
	for _, n := range notes {
		if n != "" {
			keep = append(keep, n)
		}
	}
	return strings.Join(keep, "; ")
}
