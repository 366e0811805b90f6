package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"gonum.org/v1/plot"

	"github.com/xsessiond/xsessiond/daemon"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "gen":
			os.Exit(remoteGenMain(os.Args[2:]))
		case "recv":
			os.Exit(remoteRecvMain(os.Args[2:]))
		case "tcpserve":
			os.Exit(tcpServeMain(os.Args[2:]))
		case "echoserve":
			os.Exit(echoServeMain(os.Args[2:]))
		case "capture":
			os.Exit(captureMain(os.Args[2:]))
		case "xsdaemon":
			os.Exit(xsDaemonMain(os.Args[2:]))
		}
	}
	os.Exit(rigMain(os.Args[1:]))
}

// options is the command line of the rig mode.
type options struct {
	quick      bool
	tcp        bool   // only the TCP scenarios
	only       string // regular expression on scenario names
	reps       int
	timing     Timing
	queues     int
	flows      int
	rate       uint64
	echoRate   uint64
	serverCPU  int
	steer      bool
	placeUDP   bool
	peerOff    bool // --peer-offload
	tcpCC      string
	payloads   []int
	out        string
	genThreads int
	genKind    string
	cpuProfile string
	xsStats    bool
	xs         XsessiondOptions
}

func parseRigFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("perf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `usage: go run ./perf [flags]          run every scenario on a netns rig
       go run ./perf gen  [flags]     generator alone, on a real interface (two-machine runs)
       go run ./perf recv [flags]     one receiver alone, on a real interface (two-machine runs)
       perf tcpserve [flags]          the TCP scenarios' server process (the harness starts it in host B)
       perf echoserve [flags]         the echo scenarios' server process (the harness starts it in host B)
       perf capture --socket S -w F   the --xs-capture process (the harness starts it)
       perf xsdaemon [flags]          the daemon's process beside an xsessiond app's (the app's process starts it)

flags of the rig mode:
`)
		fs.PrintDefaults()
	}
	var o options
	var payloads string
	fs.StringVar(&o.only, "only", "", "run only the scenarios whose name (group/impl, e.g. echo64-q1-f1/xsessiond) matches this regular expression")
	fs.BoolVar(&o.quick, "quick", false, "only UDP 64-byte receive and the TCP rows, xsessiond and the kernel baseline, one repetition; ends with the ratio lines")
	fs.BoolVar(&o.tcp, "tcp", false, "only the TCP scenarios (request/response, connect/request/close, bulk receive and send), kernel and xsessiond")
	fs.IntVar(&o.reps, "reps", 3, "repetitions of each scenario")
	fs.DurationVar(&o.timing.Window, "duration", 2*time.Second, "measurement window of each repetition")
	fs.DurationVar(&o.timing.Warmup, "warmup", 300*time.Millisecond, "load before each window")
	fs.IntVar(&o.queues, "queues", 2, "N: queues of the multi-queue scenarios (veth rx/tx queues)")
	fs.IntVar(&o.flows, "flows", 16, "F: flows (UDP source ports) of the multi-flow scenarios")
	fs.Uint64Var(&o.rate, "rate", 0, "generator rate in packets/s for receive scenarios; 0 = flat out")
	fs.Uint64Var(&o.echoRate, "echo-rate", 10000, "requests/s of the echo latency scenarios")
	fs.IntVar(&o.serverCPU, "server-cpu", -2, "CPU of the server process of the echo and TCP scenarios (either implementation), this process on the other CPUs meanwhile, as with two hosts; -2 = the last CPU (no placement with fewer than 2), -1 = no placement")
	fs.BoolVar(&o.placeUDP, "place-udp", false, "with the rows placed and --steer, place the UDP receive and gen-only rows too: host B (its receive softirqs and this process, where the receiver runs) on the server's CPU, the generator on the others; B CPU ns/pkt is then that CPU's busy time per packet")
	fs.BoolVar(&o.steer, "steer", true, "with the rows placed (--server-cpu), steer each host's receive work to its own CPUs (RPS on both veths; B's NAPI threaded on the server's CPU while xsessiond's XDP program is attached in native mode) and count host B's CPU as all the busy time of the server's CPU; false: neither, B's CPU the server process's")
	fs.BoolVar(&o.peerOff, "peer-offload", false, "keep host A's tx checksum offload and TSO on, as a container's veth has them: A's TCP then sends segments of up to 64 KiB, which the kernel server receives whole and xsessiond in generic XDP mode as chains of AF_XDP descriptors (native mode turns A's TSO off); by default both are off, as from a wire")
	fs.StringVar(&o.tcpCC, "tcp-cc", "cubic", "TCP congestion control of both hosts' kernel sockets in the TCP rows, set on each socket (Linux's default, cubic, unless the machine sets another; empty = the machine's default, net.ipv4.tcp_congestion_control)")
	fs.StringVar(&o.genKind, "gen", genAuto, "generator of the UDP receive rows: packet (an AF_PACKET transmit ring: socket buffers through host A's veth, host B's receive in the generator's send), xdp (XDP frames from test runs of an XDP program in host A, taken by host B's NAPI as from a NIC with an XDP driver: GRO on at B, xsessiond attached in native mode), auto (xdp on one queue, packet on more; packet everywhere with --place-udp)")
	fs.IntVar(&o.genThreads, "gen-threads", 1, "generator threads (each its own AF_PACKET ring and share of the flows)")
	fs.StringVar(&payloads, "payloads", "64,512,1472", "UDP payload sizes of the receive scenarios")
	fs.StringVar(&o.out, "out", "perf/out", "directory for results.json, results.md and the plots")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the measurement window of the first repetition of each xsessiond 64-byte receive row and TCP row to this file\n(the first row's; later rows insert their group before the extension); goroutines are labelled part=datapath|app|gen")
	fs.IntVar(&o.xs.Batch, "xs-batch", 0, "xsessiond engine: frames per poll (0 = the engine's default, 64)")
	fs.BoolVar(&o.xs.BusyPoll, "xs-busy-poll", false, "xsessiond engine: workers poll without sleeping")
	fs.IntVar(&o.xs.Ring, "xs-ring", 0, "xsessiond engine: AF_XDP ring entries, a power of two, with twice as many UMEM frames (0 = the default)")
	fs.DurationVar(&o.xs.IdleNap, "xs-nap", 0, "xsessiond engine: Config.IdleNap (0 = the default, negative = never nap)")
	fs.DurationVar(&o.xs.IdleSpin, "xs-spin", 0, "xsessiond engine: Config.IdleSpin (0 = the default)")
	fs.DurationVar(&o.xs.IdleSpinMax, "xs-spin-max", 0, "xsessiond engine: Config.IdleSpinMax (0 = the default, negative = no adaptation)")
	fs.DurationVar(&o.xs.AppSpin, "xs-app-spin", 0, "xsessiond apps: app.Options.ReadSpin (0 = the library's default, negative = no spin)")
	fs.StringVar(&o.xs.XDPMode, "xs-xdp-mode", "", "xsessiond engine: XDP attach mode: native, generic (default: auto)")
	fs.StringVar(&o.xs.Capture, "xs-capture", "", "xsessiond: capture every frame the datapath receives and sends to this pcapng file while each receive and echo scenario runs (as xsessiond ctl capture -w FILE does; /dev/null discards)")
	fs.BoolVar(&o.xs.DaemonProcess, "xs-daemon-process", true, "xsessiond: run the daemon of the UDP receive, echo and TCP rows in a process of its own beside the app's (the harness's, the echo server's, the TCP server's), on the same CPUs, the app attaching over its control socket, as xsessiond run and an app run; false: the daemon in the app's process, one Go runtime for both (an app that embeds package daemon). --cpuprofile writes the daemon's profile beside the server's, -daemon before the extension")
	fs.StringVar(&o.xs.SchedPolicy, "xs-sched-policy", daemon.SchedKeep, "xsessiond: the scheduling policy of the daemon's process (with --xs-daemon-process), as xsessiond run --sched-policy: keep (the harness's, xsessiond run's default) or batch (SCHED_BATCH)")
	fs.BoolVar(&o.xsStats, "xs-stats", false, "print the xsessiond engine's counters after each receive and echo repetition, and the worker's and the app's idle counts after each TCP repetition")
	var rxFifo, bulkFifo int
	fs.IntVar(&rxFifo, "xs-rx-fifo", 4<<20, "xsessiond app: rx fifo bytes (a power of two)")
	fs.IntVar(&bulkFifo, "xs-tcp-bulk-fifo", 1<<20, "xsessiond TCP app in the bulk rows: rx and tx fifo bytes per connection, a power of two (0 = the daemon's default, 64 KiB)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if rxFifo < 4096 || rxFifo > 1<<30 || rxFifo&(rxFifo-1) != 0 {
		return o, errors.New("--xs-rx-fifo must be a power of two from 4096 to 1 GiB")
	}
	o.xs.RxFifo = uint32(rxFifo)
	if bulkFifo != 0 && (bulkFifo < 4096 || bulkFifo > 1<<30 || bulkFifo&(bulkFifo-1) != 0) {
		return o, errors.New("--xs-tcp-bulk-fifo must be 0 or a power of two from 4096 to 1 GiB")
	}
	o.xs.TCPBulkFifo = uint32(bulkFifo)
	if err := daemon.CheckSchedPolicy(o.xs.SchedPolicy); err != nil {
		return o, fmt.Errorf("--xs-sched-policy: %w", err)
	}
	if o.xs.Batch < 0 || o.xs.Batch > 4096 {
		return o, errors.New("--xs-batch must be 0..4096")
	}
	for _, f := range strings.Split(payloads, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 16 || n > 1472 {
			return o, fmt.Errorf("payload %q: want 16..1472", f)
		}
		o.payloads = append(o.payloads, n)
	}
	switch {
	case o.reps < 1:
		return o, errors.New("--reps must be at least 1")
	case o.timing.Window < 100*time.Millisecond:
		return o, errors.New("--duration must be at least 100ms")
	case o.queues < 1 || o.queues > 64:
		return o, errors.New("--queues must be 1..64")
	case o.flows < 1 || o.flows > 4096:
		return o, errors.New("--flows must be 1..4096")
	case o.genKind != genPacket && o.genKind != genXDP && o.genKind != genAuto:
		return o, fmt.Errorf("--gen %q: want %s, %s or %s", o.genKind, genAuto, genXDP, genPacket)
	case o.genThreads < 1 || o.genThreads > 64:
		return o, errors.New("--gen-threads must be 1..64")
	case o.echoRate < 1:
		return o, errors.New("--echo-rate must be at least 1")
	case o.serverCPU < -2:
		return o, errors.New("--server-cpu must be a CPU, -1 or -2")
	}
	if o.quick {
		o.reps = 1
	}
	o.timing.Drain = time.Second
	return o, nil
}

func rigMain(args []string) int {
	o, err := parseRigFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "perf:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, o, os.Stderr)
	if rep != nil {
		if werr := writeOutputs(o.out, rep); werr != nil {
			fmt.Fprintln(os.Stderr, "perf: write results:", werr)
			err = errors.Join(err, werr)
		} else {
			fmt.Fprintf(os.Stderr, "results in %s/{results.json,results.md,*.png}\n", o.out)
		}
	}
	if o.quick && rep != nil {
		for _, l := range tcpQuickLines(rep.Results) {
			fmt.Println(l)
		}
		if !o.tcp {
			fmt.Println(quickLine(rep.Results))
		}
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "perf: interrupted; partial results written")
		return 130
	case err != nil:
		fmt.Fprintln(os.Stderr, "perf:", err)
		return 1
	}
	return 0
}

// run measures every scenario of the plan; the rig is removed before it
// returns, also when ctx is cancelled.
func run(ctx context.Context, o options, log io.Writer) (*Report, error) {
	plan := Plan{Payloads: o.payloads, Queues: o.queues, Flows: o.flows, Rate: o.rate, EchoRate: o.echoRate, Quick: o.quick, TCPOnly: o.tcp, Gen: o.genKind}
	rep := &Report{
		Started: time.Now(),
		Host:    hostInfo(),
		Config: RunConfig{Quick: o.quick, TCPOnly: o.tcp, Reps: o.reps, Warmup: o.timing.Warmup.String(), Window: o.timing.Window.String(),
			Queues: o.queues, Flows: o.flows, Rate: o.rate, EchoRate: o.echoRate, GenThreads: o.genThreads, Gen: o.genKind},
		Method: methodNotes,
	}
	pin, err := newServerPin(o.serverCPU)
	if err != nil {
		return nil, err
	}
	rep.Config.ServerCPU = -1
	if pin != nil {
		rep.Config.ServerCPU = pin.cpu
		pin.steering = o.steer
		pin.udp = o.steer && o.placeUDP
		plan.PlaceUDP = pin.udp
		rep.Config.Steer = o.steer
		rep.Config.PlaceUDP = pin.udp
	}
	rg := &rigs{peerOffload: o.peerOff}
	rep.Config.PeerOffload = o.peerOff
	rep.Config.XsDaemonProcess = o.xs.DaemonProcess
	if o.xs.DaemonProcess {
		rep.Config.XsSchedPolicy = o.xs.SchedPolicy
	}
	defer rg.Close()
	xsOptions = o.xs
	r := &runner{rigs: rg, timing: o.timing, prog: newProgress(log), port: defaultPort, genThreads: o.genThreads, cpuProfile: o.cpuProfile, tcpCC: o.tcpCC, serverPin: pin}
	if o.xsStats {
		r.stats = r.prog.note
	}
	r.loss = r.prog.note
	xsCaptureNote = r.prog.note
	only, err := regexp.Compile(o.only)
	if err != nil {
		return nil, fmt.Errorf("--only: %w", err)
	}
	var errs []error
	for _, group := range groupRows(Scenarios(plan), only) {
		if ctx.Err() != nil {
			break
		}
		for _, res := range r.runGroup(ctx, group, o.reps) {
			if res.Status == StatusError && ctx.Err() == nil {
				errs = append(errs, fmt.Errorf("%s: %s", res.Name, res.Note))
			}
			rep.Results = append(rep.Results, res)
		}
	}
	if err := rg.Close(); err != nil {
		errs = append(errs, fmt.Errorf("remove rig: %w", err))
	}
	applyGenCost(rep.Results)
	rep.Ratios = Ratios(rep.Results)
	rep.TCP = TCPGoals(rep.Results)
	rep.Elapsed = time.Since(rep.Started).Round(time.Millisecond).String()
	return rep, errors.Join(errs...)
}

// groupRows returns the rows only matches, consecutive rows of one group
// together, in the order given.
func groupRows(rows []Scenario, only *regexp.Regexp) [][]Scenario {
	var groups [][]Scenario
	for _, s := range rows {
		if !only.MatchString(s.Name) {
			continue
		}
		if n := len(groups); n > 0 && groups[n-1][0].Group == s.Group {
			groups[n-1] = append(groups[n-1], s)
			continue
		}
		groups = append(groups, []Scenario{s})
	}
	return groups
}

// runGroup runs the repetitions of the rows of one group in turns: the
// first repetition of each row, then the second of each, and so on, so
// that the rows compared with one another see the host alike. On this
// kind of VM the host's speed drifts over seconds; with each row's
// repetitions back to back, the row that ran second saw another host.
// A row whose implementation is not available is skipped with a note; an
// error ends that row, not the others.
func (r *runner) runGroup(ctx context.Context, rows []Scenario, reps int) []Result {
	res := make([]Result, len(rows))
	for k, s := range rows {
		res[k] = Result{Scenario: s, Status: StatusOK}
	}
	for i := 1; i <= reps && ctx.Err() == nil; i++ {
		for k, s := range rows {
			if res[k].Status != StatusOK || ctx.Err() != nil {
				continue
			}
			r.prog.update(s, i, reps, 0, 0)
			rp, err := r.runRep(ctx, s, i, reps)
			if err != nil {
				res[k].Status, res[k].Note = StatusError, err.Error()
				switch {
				case errors.Is(err, ErrNotAvailable):
					res[k].Status = StatusNotAvailable
				case ctx.Err() != nil:
					res[k].Status, res[k].Note = StatusInterrupted, ""
				}
				continue
			}
			res[k].Reps = append(res[k].Reps, rp)
		}
	}
	for k := range res {
		if res[k].Status == StatusOK && len(res[k].Reps) < reps && ctx.Err() != nil {
			res[k].Status = StatusInterrupted
		}
		computeFigures(&res[k])
		r.prog.done(rowLine(res[k]))
	}
	return res
}

// rowLine is the permanent line printed when a row is done.
func rowLine(r Result) string {
	if r.Status != StatusOK {
		return fmt.Sprintf("%-28s %s: %s", r.Name, strings.ToUpper(r.Status), r.Note)
	}
	switch r.Kind {
	case KindEcho:
		return fmt.Sprintf("%-28s p50 %s µs  p99 %s µs  p99.9 %s µs  (at A's socket p50 %s µs  p99 %s µs)  loss %s%%", r.Name,
			fmtSummary(r.P50us, 1, 1), fmtSummary(r.P99us, 1, 1), fmtSummary(r.P999us, 1, 1),
			fmtSummary(r.SocketP50us, 1, 1), fmtSummary(r.SocketP99us, 1, 1), fmtSummary(r.LossPct, 1, 2))
	case KindGenOnly:
		return fmt.Sprintf("%-28s sent %s Mpps  %s ns/pkt", r.Name, fmtSummary(r.SentPPS, 1e-6, 3), fmtSummary(r.CPUNs, 1, 0))
	case KindTCPRR, KindTCPCRR:
		return fmt.Sprintf("%-28s %s/s  p50 %s µs  p99 %s µs  B %s ns each  machine %s ns each  errors %s", r.Name,
			fmtSummary(r.PPS, 1, 0), fmtSummary(r.P50us, 1, 1), fmtSummary(r.P99us, 1, 1),
			fmtSummary(r.SrvCPUNs, 1, 0), fmtSummary(r.CPUNs, 1, 0), fmtSummary(r.Errors, 1, 0))
	case KindTCPRecv, KindTCPSend:
		return fmt.Sprintf("%-28s %s Gbit/s  B %s ms/GB  machine %s ms/GB  errors %s", r.Name,
			fmtSummary(r.Gbps, 1, 3), fmtSummary(r.SrvCPUPerGB, 1, 0), fmtSummary(r.CPUPerGB, 1, 0), fmtSummary(r.Errors, 1, 0))
	}
	return fmt.Sprintf("%-28s %s Mpps  %s Gbit/s  loss %s%%  %s ns/pkt", r.Name,
		fmtSummary(r.PPS, 1e-6, 3), fmtSummary(r.Gbps, 1, 2), fmtSummary(r.LossPct, 1, 2), fmtSummary(r.CPUNs, 1, 0))
}

// quickLine is the last line of --quick: at 64 bytes, the kernel's CPU
// cost per packet over xsessiond's (the whole machine's, generator
// included), xsessiond's rate over the kernel's, the cost ratio of the
// receivers alone (rx ns/pkt: the gen-only row's cost per sent packet
// taken out), and, in placed rows, that of host B's CPU per packet. Where
// the generator costs much per packet, as on a host whose system calls and
// veth hand-over are slow, it weighs the same on both sides of the first
// ratio and pulls it towards 1; the last one is the receivers' own.
func quickLine(results []Result) string {
	var k, x *Result
	for i := range results {
		r := &results[i]
		if r.Kind == KindReceive && r.Payload == 64 {
			switch r.Impl {
			case ImplKernel:
				k = r
			case ImplXsessiond:
				x = r
			}
		}
	}
	cost, rate, rx, hostB, unexpl := "n/a", "n/a", "n/a", "n/a", "n/a"
	if k != nil && x != nil && k.Status == StatusOK && x.Status == StatusOK {
		cost = ratioText(Ratio(k.CPUNs, x.CPUNs))
		rate = ratioText(Ratio(x.PPS, k.PPS))
		if x.RxCPUNs.Median > 0 { // a receiver cheaper than nothing: noise
			rx = ratioText(Ratio(k.RxCPUNs, x.RxCPUNs))
		}
		hostB = ratioText(Ratio(k.SrvCPUNs, x.SrvCPUNs))
		unexpl = unexplainedText(k.Unexplained) + "/" + unexplainedText(x.Unexplained)
	}
	return fmt.Sprintf("udp64 cost ratio kernel/xsessiond = %s, rate ratio xsessiond/kernel = %s, receive cost ratio (generator's cost taken out) = %s, host B CPU ratio kernel/xsessiond = %s, unexplained loss kernel/xsessiond = %s",
		cost, rate, rx, hostB, unexpl)
}

// unexplainedText is the loss of a row's repetitions that no counter
// explains, the one furthest from 0: a loss with no counter (above 0), or
// counters that counted more than was lost (below 0, marked: a drop
// counted twice would hide a loss with none).
func unexplainedText(u Summary) string {
	v := u.Max
	if -u.Min > v {
		v = u.Min
	}
	if v < 0 {
		return fmt.Sprintf("%.0f (over-counted)", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// ratioText is fmtRatio of a ratio that is NaN when unknown.
func ratioText(v float64) string {
	if math.IsNaN(v) {
		return fmtRatio(nil)
	}
	return fmtRatio(&v)
}

// writeOutputs writes results.json, results.md and the plots into dir.
func writeOutputs(dir string, rep *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	errs = append(errs, writeFile(dir, "results.json", func(w io.Writer) error { return WriteJSON(w, rep) }))
	errs = append(errs, writeFile(dir, "results.md", func(w io.Writer) error { return WriteMarkdown(w, rep) }))
	plots := []struct {
		name string
		make func() (*plot.Plot, error)
	}{
		{"rate_by_payload.png", func() (*plot.Plot, error) { return RateByPayloadPlot(rep.Results, rep.Config.Queues, rep.Config.Flows) }},
		{"latency_cdf.png", func() (*plot.Plot, error) { return LatencyCDFPlot(rep.Results) }},
		{"scaling_queues.png", func() (*plot.Plot, error) { return ScalingPlot(rep.Results, 64, rep.Config.Flows) }},
	}
	for _, pl := range plots {
		p, err := pl.make()
		if err == nil {
			err = writeFile(dir, pl.name, func(w io.Writer) error { return WritePNG(w, p) })
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func hostInfo() HostInfo {
	h := HostInfo{CPUs: runtime.NumCPU()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return h
}
