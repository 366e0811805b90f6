package main

// The TCP scenarios: a kernel TCP client in host A (Go net, the same in
// every row) against a TCP server in host B that is one function
// (tcpServer.serve) on either the kernel's listener or xsessiond's, running
// in a process of its own (perf tcpserve) so that its CPU time is B's side
// alone.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

const (
	// tcpReqSize is the request and the response of the request/response
	// scenarios.
	tcpReqSize = 64
	// tcpDialTimeout bounds each connect of the client.
	tcpDialTimeout = 5 * time.Second
	// tcpFinishTimeout bounds how long the client waits for its
	// connections to end after the window (a response in flight, the
	// rest of a bulk transfer).
	tcpFinishTimeout = 10 * time.Second
	// tcpSettle bounds the wait for the server's counters to reach the
	// client's once the client is done.
	tcpSettle = 5 * time.Second
	// The TCP repetitions take turns through tcpPorts ports from
	// tcpPortBase.
	tcpPortBase = 9100
	tcpPorts    = 512
)

// isTCP reports whether k is a TCP scenario kind.
func isTCP(k Kind) bool {
	return k == KindTCPRR || k == KindTCPCRR || k == KindTCPRecv || k == KindTCPSend
}

// isBulk reports whether k measures bytes rather than transactions.
func isBulk(k Kind) bool { return k == KindTCPRecv || k == KindTCPSend }

// tcpClient is the kernel TCP client in host A: conns connections (or, for
// connect/request/close, conns goroutines each opening one connection after
// another), counting what completed and timing each transaction.
type tcpClient struct {
	kind  Kind
	conns int
	cc    string // the sockets' congestion control ("" = the kernel's default)
	base  time.Time

	winStart, winEnd atomic.Int64 // ns since base; winEnd 0 = open
	stop             atomic.Bool
	done             atomic.Uint64 // transactions (rr) or connections (crr) completed
	winDone          atomic.Uint64 // of them, those started in the window
	bytes            atomic.Uint64 // bulk: bytes written (recv) or read (send)
	errs             atomic.Uint64
	wg               sync.WaitGroup

	errMu   sync.Mutex
	lastErr error // guarded by errMu

	open    []net.Conn        // rr and bulk: the connections, dialled at start
	samples [][]time.Duration // one per goroutine, read after wg.Wait
}

func newTCPClient(kind Kind, conns int, cc string) *tcpClient {
	c := &tcpClient{kind: kind, conns: max(1, conns), cc: cc, base: time.Now()}
	c.winStart.Store(1<<63 - 1)
	c.samples = make([][]time.Duration, c.conns)
	for i := range c.samples {
		c.samples[i] = make([]time.Duration, 0, 1<<14)
	}
	return c
}

func (c *tcpClient) fail(err error) {
	c.errs.Add(1)
	c.errMu.Lock()
	c.lastErr = err
	c.errMu.Unlock()
}

func (c *tcpClient) inWindow(ts int64) bool {
	end := c.winEnd.Load()
	return ts >= c.winStart.Load() && (end == 0 || ts < end)
}

// start dials (inside host h) and starts the client's goroutines.
func (c *tcpClient) start(h *nstest.Host, addr string) error {
	if c.kind == KindTCPCRR {
		for i := range c.conns {
			c.wg.Add(1)
			// Each connect must make its socket in host A: the goroutine
			// runs on a thread in A's namespace for its whole life.
			go func() {
				defer c.wg.Done()
				if err := h.Do(func() error { c.crr(i, addr); return nil }); err != nil {
					c.fail(err)
				}
			}()
		}
		return nil
	}
	err := h.Do(func() error {
		d := net.Dialer{Timeout: tcpDialTimeout, Control: ccControl(c.cc)}
		for range c.conns {
			conn, err := d.Dial("tcp4", addr)
			if err != nil {
				return fmt.Errorf("tcp client: %w", err)
			}
			c.open = append(c.open, conn)
		}
		return nil
	})
	if err != nil {
		c.closeConns()
		return err
	}
	for i, conn := range c.open {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			var err error
			switch c.kind {
			case KindTCPRR:
				err = c.rr(i, conn)
			case KindTCPRecv:
				err = c.bulkWrite(conn)
			case KindTCPSend:
				err = c.bulkRead(conn)
			}
			if err != nil {
				c.fail(err)
			}
		}()
	}
	return nil
}

// transaction counts one completed transaction started at t0.
func (c *tcpClient) transaction(i int, t0 time.Time) {
	ts := int64(t0.Sub(c.base))
	c.done.Add(1)
	if c.inWindow(ts) {
		c.winDone.Add(1)
		c.samples[i] = append(c.samples[i], time.Since(t0))
	}
}

// rr sends a request and waits for its response, one at a time, until
// stopped.
func (c *tcpClient) rr(i int, conn net.Conn) error {
	req, resp := make([]byte, tcpReqSize), make([]byte, tcpReqSize)
	for j := range req {
		req[j] = byte(i + j)
	}
	for !c.stop.Load() {
		t0 := time.Now()
		if _, err := conn.Write(req); err != nil {
			return fmt.Errorf("rr write: %w", err)
		}
		if _, err := io.ReadFull(conn, resp); err != nil {
			return fmt.Errorf("rr read: %w", err)
		}
		if string(resp) != string(req) {
			return errors.New("rr: response differs from request")
		}
		c.transaction(i, t0)
	}
	return nil
}

// crr opens a connection, sends a request, reads the response and closes,
// one after another, until stopped. A failed connection is counted and the
// next one tried.
func (c *tcpClient) crr(i int, addr string) {
	req, resp := make([]byte, tcpReqSize), make([]byte, tcpReqSize)
	d := net.Dialer{Timeout: tcpDialTimeout, Control: ccControl(c.cc)}
	for !c.stop.Load() {
		t0 := time.Now()
		if err := c.crrOne(&d, addr, req, resp); err != nil {
			c.fail(err)
			time.Sleep(time.Millisecond)
			continue
		}
		c.transaction(i, t0)
	}
}

func (c *tcpClient) crrOne(d *net.Dialer, addr string, req, resp []byte) error {
	conn, err := d.Dial("tcp4", addr)
	if err != nil {
		return fmt.Errorf("crr dial: %w", err)
	}
	conn.SetDeadline(time.Now().Add(tcpFinishTimeout))
	if _, err = conn.Write(req); err == nil {
		_, err = io.ReadFull(conn, resp)
	}
	if cerr := conn.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("crr: %w", err)
	}
	return nil
}

// bulkWrite writes until stopped, then closes its sending side and waits
// for the server to close (it does once it read everything).
func (c *tcpClient) bulkWrite(conn net.Conn) error {
	buf := make([]byte, tcpBulkChunk)
	for i := range buf {
		buf[i] = byte(i)
	}
	for !c.stop.Load() {
		n, err := conn.Write(buf)
		c.bytes.Add(uint64(n))
		if err != nil {
			return fmt.Errorf("bulk write: %w", err)
		}
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		return fmt.Errorf("bulk close write: %w", err)
	}
	conn.SetReadDeadline(time.Now().Add(tcpFinishTimeout))
	if n, err := io.Copy(io.Discard, conn); err != nil || n != 0 {
		return fmt.Errorf("bulk wait for the server's close: %d bytes, %v", n, err)
	}
	return nil
}

// bulkRead reads and counts until the server closes.
func (c *tcpClient) bulkRead(conn net.Conn) error {
	buf := make([]byte, tcpBulkChunk)
	for {
		n, err := conn.Read(buf)
		c.bytes.Add(uint64(n))
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("bulk read: %w", err)
		}
	}
}

// finish stops the client and waits (at most tcpFinishTimeout) for its
// goroutines: a transaction in flight completes, a bulk sender's data is
// read to the end. The connections are closed when it returns.
func (c *tcpClient) finish() error {
	c.stop.Store(true)
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-time.After(tcpFinishTimeout):
		err = fmt.Errorf("tcp client: not done %v after the window", tcpFinishTimeout)
		for _, conn := range c.open {
			conn.SetDeadline(time.Now())
		}
		<-done
	}
	c.closeConns()
	return err
}

func (c *tcpClient) closeConns() {
	for _, conn := range c.open {
		conn.Close()
	}
	c.open = nil
}

// pooledSamples is every goroutine's samples, sorted; call after finish.
func (c *tcpClient) pooledSamples() []time.Duration {
	var all []time.Duration
	for _, s := range c.samples {
		all = append(all, s...)
	}
	slices.Sort(all)
	return all
}

// tuneTCPClientHost widens host A's ephemeral port range and lets its
// connects reuse ports in TIME-WAIT: the connect/request/close client
// closes first, so its side holds every TIME-WAIT, and at thousands of
// connections per second the default range runs out within the rows of a
// run. The same for both implementations.
func tuneTCPClientHost(h *nstest.Host) error {
	return h.Do(func() error {
		for _, kv := range [][2]string{
			{"/proc/sys/net/ipv4/ip_local_port_range", "1024 65535"},
			{"/proc/sys/net/ipv4/tcp_tw_reuse", "1"},
		} {
			if err := os.WriteFile(kv[0], []byte(kv[1]), 0o644); err != nil {
				return fmt.Errorf("tcp client host: %w", err)
			}
		}
		return nil
	})
}

// ccControl returns the Control function of a net.Dialer or
// net.ListenConfig that makes cc the congestion control of each socket
// (TCP_CONGESTION; nil for cc "", the kernel's default). The rig sets it on
// every kernel TCP socket of both hosts, so that the TCP rows do not
// depend on the machine's default: the sender's congestion control
// decides the bulk rows (host A's in bulk receive, the kernel server's in
// bulk send; xsessiond's sender is gVisor's). An accepted connection
// keeps its listener's. Per socket, root may choose any congestion
// control the kernel has; the namespace's default can only be one of
// net.ipv4.tcp_allowed_congestion_control, which on some hosts leaves
// Linux's own default, cubic, out.
func ccControl(cc string) func(network, address string, rc syscall.RawConn) error {
	if cc == "" {
		return nil
	}
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = setCongestion(int(fd), cc) }); err != nil {
			return err
		}
		return serr
	}
}

func setCongestion(fd int, cc string) error {
	if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc); err != nil {
		return fmt.Errorf("tcp congestion control %q: %w (net.ipv4.tcp_available_congestion_control lists what the kernel has)", cc, err)
	}
	return nil
}

// checkCongestion reports whether a TCP socket takes cc, so that a row
// fails before it starts when it does not.
func checkCongestion(cc string) error {
	if cc == "" {
		return nil
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tcp congestion control %q: %w", cc, err)
	}
	defer unix.Close(fd)
	return setCongestion(fd, cc)
}

// tcpRep runs one repetition of a TCP scenario.
func (r *runner) tcpRep(ctx context.Context, s Scenario, rep, reps int) (out Rep, err error) {
	p, err := r.rigs.get(s.Queues)
	if err != nil {
		return Rep{}, err
	}
	if err := tuneTCPClientHost(p.A); err != nil {
		return Rep{}, err
	}
	if err := checkCongestion(r.tcpCC); err != nil {
		return Rep{}, err
	}
	// A port of its own for each repetition: a server that closed first
	// (bulk send) leaves TIME-WAIT on its port in B's kernel, where
	// xsessiond's daemon reserves the ports it serves.
	port := tcpPortBase + uint16(r.tcpReps%tcpPorts)
	r.tcpReps++
	restore, err := r.serverPin.place(p)
	if err != nil {
		return Rep{}, err
	}
	defer func() { err = errors.Join(err, restore()) }()
	child, err := startTCPChild(p, s, port, r.tcpCC, xsOptions, r.serverPin.serverCPUs())
	if err != nil {
		return Rep{}, fmt.Errorf("start %s: %w", s.Impl, err)
	}
	quit := false
	defer func() {
		if !quit {
			err = errors.Join(err, child.kill())
		}
	}()
	unplace, err := r.serverPin.placed(p, s.Impl)
	if err != nil {
		return Rep{}, err
	}
	defer func() { err = errors.Join(err, unplace()) }()
	cl := newTCPClient(s.Kind, s.Flows, r.tcpCC)
	addr := netip.AddrPortFrom(p.B.IPv4, port).String()
	if err := cl.start(p.A, addr); err != nil {
		return Rep{}, err
	}
	finished := false
	defer func() {
		if !finished {
			cl.finish()
		}
	}()
	// Bulk rows count bytes; the server's side is read from its process.
	var childErr error
	var lastChild tcpStats
	childStat := func(get func(tcpStats) uint64) func() uint64 {
		return func() uint64 {
			st, err := child.stats()
			if err != nil {
				childErr = err
				return get(lastChild)
			}
			lastChild = st
			return get(st)
		}
	}
	sent, delivered := cl.done.Load, cl.done.Load
	switch s.Kind {
	case KindTCPRecv:
		sent, delivered = cl.bytes.Load, childStat(func(st tcpStats) uint64 { return st.RxBytes })
	case KindTCPSend:
		sent, delivered = childStat(func(st tcpStats) uint64 { return st.TxBytes }), cl.bytes.Load
	}
	if err := sleepCtx(ctx, r.timing.Warmup); err != nil {
		return Rep{}, err
	}
	profiling, err := r.startTCPProfile(child, s, rep)
	if err != nil {
		return Rep{}, err
	}
	cs0, err := child.stats()
	if err != nil {
		return Rep{}, err
	}
	cl.winStart.Store(int64(time.Since(cl.base)))
	a, b, err := r.watch(ctx, s, rep, reps, sent, delivered)
	cl.winEnd.Store(int64(time.Since(cl.base)))
	cs1, serr := child.stats()
	err = errors.Join(err, serr, childErr)
	if profiling {
		_, perr := child.call("unprof")
		err = errors.Join(err, perr)
	}
	if err != nil {
		return Rep{}, err
	}
	if s.Kind == KindTCPSend {
		if _, err := child.call("stopsend"); err != nil {
			return Rep{}, err
		}
	}
	finished = true
	ferr := cl.finish()
	// The server counts a transaction, or the end of a connection, a
	// moment after the client saw it: wait until its counters reach the
	// client's.
	var settled tcpStats
	for end := time.Now().Add(tcpSettle); ; {
		if settled, err = child.stats(); err != nil {
			return Rep{}, err
		}
		if tcpServerCaughtUp(s.Kind, cl, settled) || !time.Now().Before(end) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// B's NAPI goes back to softirq while the XDP program is still there.
	if err := unplace(); err != nil {
		return Rep{}, err
	}
	quit = true
	final, qerr := child.quit()
	if qerr != nil {
		// The counters as they were once the client was done.
		final = settled
	}
	out, err = windowRep(a, b)
	if err != nil {
		return Rep{}, err
	}
	out.SrvProcNs = cs1.CPUNs - cs0.CPUNs
	out.SrvDaemonNs = cs1.DaemonCPUNs - cs0.DaemonCPUNs
	out.SrvNs = out.SrvProcNs
	if r.serverPin != nil && r.serverPin.steering {
		busy, err := BusyBetween(a.srv, b.srv)
		if err != nil {
			return Rep{}, err
		}
		out.SrvNs = busy.Nanoseconds()
	}
	out.WorkerLoops, out.WorkerSleeps = cs1.Worker.Loops-cs0.Worker.Loops, cs1.Worker.Sleeps-cs0.Worker.Sleeps
	out.RxRingFull, out.FillEmpty = cs1.Worker.RingFull-cs0.Worker.RingFull, cs1.Worker.FillEmpty-cs0.Worker.FillEmpty
	if r.stats != nil && s.Impl == ImplXsessiond {
		w0, w1, r0, r1 := cs0.Worker, cs1.Worker, cs0.Reads, cs1.Reads
		r.stats(fmt.Sprintf("%s rep %d: in the window worker spins %d naps %d sleeps %d; app read spins %d spin-hits %d sleeps %d",
			s.Name, rep, w1.Spins-w0.Spins, w1.Naps-w0.Naps, w1.Sleeps-w0.Sleeps, r1.Spins-r0.Spins, r1.SpinHits-r0.SpinHits, r1.Sleeps-r0.Sleeps))
	}
	switch s.Kind {
	case KindTCPRR, KindTCPCRR:
		out.TotalSent, out.TotalDelivered = cl.done.Load(), final.Txns
		out.Samples, out.winReplies = cl.pooledSamples(), cl.winDone.Load()
	case KindTCPRecv:
		out.TotalSent, out.TotalDelivered = cl.bytes.Load(), final.RxBytes
	case KindTCPSend:
		out.TotalSent, out.TotalDelivered = final.TxBytes, cl.bytes.Load()
	}
	out.Breakdown = Drops{}
	cl.errMu.Lock()
	if n := cl.errs.Load(); n > 0 {
		out.Breakdown[fmt.Sprintf("tcp-client-errors (last: %v)", cl.lastErr)] = n
	}
	cl.errMu.Unlock()
	if final.Errors > 0 {
		out.Breakdown[fmt.Sprintf("tcp-server-errors (last: %s)", final.LastErr)] = final.Errors
	}
	if n := child.stderr.count("port is in use"); n > 0 {
		out.Breakdown["tcp-server-log-port-in-use"] = uint64(n)
	}
	out.Errors = cl.errs.Load() + final.Errors
	if r.loss != nil {
		r.loss(fmt.Sprintf("%s rep %d: %s", s.Name, rep, tcpLine(s.Kind, out)))
	}
	return out, errors.Join(ferr, qerr)
}

// tcpServerCaughtUp reports whether the server's counters have reached
// what the client completed.
func tcpServerCaughtUp(k Kind, cl *tcpClient, st tcpStats) bool {
	switch k {
	case KindTCPRR, KindTCPCRR:
		return st.Txns >= cl.done.Load() && st.Closed == st.Accepted
	case KindTCPRecv:
		return st.RxBytes >= cl.bytes.Load() && st.Closed == st.Accepted
	}
	return st.Closed == st.Accepted
}

// tcpLine is one TCP repetition's totals for the log.
func tcpLine(k Kind, rep Rep) string {
	unit := "transactions"
	switch {
	case k == KindTCPCRR:
		unit = "connections"
	case isBulk(k):
		unit = "bytes"
	}
	procs := fmt.Sprintf("server process %v", time.Duration(rep.SrvProcNs))
	if rep.SrvDaemonNs > 0 {
		procs = fmt.Sprintf("server and daemon processes %v, the daemon's %v", time.Duration(rep.SrvProcNs), time.Duration(rep.SrvDaemonNs))
	}
	return fmt.Sprintf("%s sent %d, received %d (exact: %v); host B CPU %v (%s) in the window; worker loops %d, sleeps %d, xsk rx_ring_full %d, rx_fill_ring_empty %d in the window; errors %d %s",
		unit, rep.TotalSent, rep.TotalDelivered, rep.TotalSent == rep.TotalDelivered,
		time.Duration(rep.SrvNs), procs, rep.WorkerLoops, rep.WorkerSleeps, rep.RxRingFull, rep.FillEmpty, rep.Errors, rep.Breakdown)
}

// startTCPProfile starts the server process's CPU profile for the window
// of the first repetition of each xsessiond TCP row, when --cpuprofile asks
// for profiles (the file as startProfile names it).
func (r *runner) startTCPProfile(child *tcpChild, s Scenario, rep int) (bool, error) {
	if r.cpuProfile == "" || rep != 1 || s.Impl != ImplXsessiond {
		return false, nil
	}
	path, err := filepath.Abs(profileFile(r.cpuProfile, s.Group, r.profiled))
	if err != nil {
		return false, fmt.Errorf("cpu profile: %w", err)
	}
	r.profiled++
	if _, err := child.call("prof " + path); err != nil {
		return false, err
	}
	return true, nil
}

// TCPGoal is one TCP group's xsessiond row held against its goal: request/
// response and connect/request/close at least the kernel's rate at no more
// than 0.7× its B-side CPU per transaction; bulk at least half the kernel's
// Gbit/s.
type TCPGoal struct {
	Group string   `json:"group"`
	Goal  string   `json:"goal"`
	Rate  *float64 `json:"rate_ratio"` // xsessiond / kernel: transactions/s, or Gbit/s
	CPU   *float64 `json:"cpu_ratio"`  // xsessiond / kernel: B CPU per transaction, or per GB
	Met   string   `json:"met"`        // yes, no, or n/a
}

// TCPGoals compares every TCP xsessiond row with the kernel row of its
// group.
func TCPGoals(results []Result) []TCPGoal {
	var goals []TCPGoal
	for _, x := range results {
		if !isTCP(x.Kind) || x.Impl != ImplXsessiond {
			continue
		}
		var k *Result
		for i := range results {
			if results[i].Group == x.Group && results[i].Impl == ImplKernel {
				k = &results[i]
			}
		}
		g := TCPGoal{Group: x.Group, Met: "n/a"}
		ratio := func(f func(*Result) Summary) *float64 {
			if k == nil || k.Status != StatusOK || x.Status != StatusOK {
				return nil
			}
			if v := Ratio(f(&x), f(k)); v == v {
				return &v
			}
			return nil
		}
		if isBulk(x.Kind) {
			g.Goal = "Gbit/s ≥ 0.5× kernel"
			g.Rate = ratio(func(r *Result) Summary { return r.Gbps })
			g.CPU = ratio(func(r *Result) Summary { return r.SrvCPUPerGB })
			if g.Rate != nil {
				g.Met = yesNo(*g.Rate >= 0.5)
			}
		} else {
			g.Goal = "rate ≥ kernel at B CPU/txn ≤ 0.7× kernel"
			g.Rate = ratio(func(r *Result) Summary { return r.PPS })
			g.CPU = ratio(func(r *Result) Summary { return r.SrvCPUNs })
			if g.Rate != nil && g.CPU != nil {
				g.Met = yesNo(*g.Rate >= 1 && *g.CPU <= 0.7)
			}
		}
		goals = append(goals, g)
	}
	return goals
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// tcpQuickLines are --quick's TCP summary lines, one per group:
//
//	tcp tcprr64-c1: rate xsessiond/kernel = X.XX, B CPU xsessiond/kernel = Y.YY (goal: ...; met: no)
func tcpQuickLines(results []Result) []string {
	var lines []string
	for _, g := range TCPGoals(results) {
		lines = append(lines, fmt.Sprintf("tcp %s: rate xsessiond/kernel = %s, B CPU xsessiond/kernel = %s (goal: %s; met: %s)",
			g.Group, fmtRatio(g.Rate), fmtRatio(g.CPU), g.Goal, g.Met))
	}
	return lines
}
