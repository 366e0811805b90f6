package main

import (
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestMain lets the test binary be the harness's server processes: the
// harness starts its own executable as "tcpserve", "echoserve" or
// "capture" (childExe).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "tcpserve" {
		os.Exit(tcpServeMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "echoserve" {
		os.Exit(echoServeMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "capture" {
		os.Exit(captureMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "xsdaemon" {
		os.Exit(xsDaemonMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestTCPOnRig runs one short repetition of every TCP scenario on the
// kernel and on xsessiond and checks that each measured something and
// moved exactly what it counted: transactions completed by the client =
// requests answered by the server, bytes written = bytes read, no
// connection error, the server process's CPU time read, latency samples
// for every transaction of the window. No rate is checked.
func TestTCPOnRig(t *testing.T) {
	nstest.RequirePrivileged(t)
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true})
	rg := &rigs{}
	defer rg.Close()
	var lines []string
	r := &runner{rigs: rg, prog: newProgress(io.Discard), port: defaultPort, tcpCC: "reno",
		timing: Timing{Warmup: 100 * time.Millisecond, Window: 300 * time.Millisecond, Drain: 2 * time.Second},
		loss:   func(l string) { lines = append(lines, l) }}
	for _, s := range tcpScenarios() {
		if s.Kind == KindTCPRR && s.Flows > 4 {
			s.Flows = 4 // the 32-connection row, smaller
		}
		rep, err := r.runRep(t.Context(), s, 1, 1)
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		t.Logf("%s: window sent %d delivered %d in %v, %s", s.Name, rep.Sent, rep.Delivered,
			time.Duration(rep.WindowNs), tcpLine(s.Kind, rep))
		if rep.Sent == 0 || rep.Delivered == 0 || rep.WindowNs <= 0 {
			t.Errorf("%s: empty window %+v", s.Name, rep)
		}
		if rep.TotalDelivered == 0 || rep.TotalSent != rep.TotalDelivered {
			t.Errorf("%s: sent %d, received %d", s.Name, rep.TotalSent, rep.TotalDelivered)
		}
		if rep.Errors != 0 {
			t.Errorf("%s: %d connection errors: %s", s.Name, rep.Errors, rep.Breakdown)
		}
		if rep.SrvNs <= 0 {
			t.Errorf("%s: server CPU time %d ns in the window", s.Name, rep.SrvNs)
		}
		if !isBulk(s.Kind) && (len(rep.Samples) == 0 || uint64(len(rep.Samples)) != rep.winReplies || rep.Samples[0] <= 0) {
			t.Errorf("%s: %d latency samples for %d transactions in the window", s.Name, len(rep.Samples), rep.winReplies)
		}
		res := Result{Scenario: s, Status: StatusOK, Reps: []Rep{rep}}
		computeFigures(&res)
		if isBulk(s.Kind) {
			if res.Gbps.N != 1 || res.Gbps.Median <= 0 || res.SrvCPUPerGB.N != 1 || res.PPS.N != 0 {
				t.Errorf("%s: figures %+v %+v %+v", s.Name, res.Gbps, res.SrvCPUPerGB, res.PPS)
			}
		} else if res.PPS.N != 1 || res.SrvCPUNs.N != 1 || res.P99us.N != 1 || res.Exact != 1 {
			t.Errorf("%s: figures %+v %+v %+v exact %d", s.Name, res.PPS, res.SrvCPUNs, res.P99us, res.Exact)
		}
	}
	if len(lines) != 2*5 {
		t.Errorf("%d repetition lines: %q", len(lines), lines)
	}
	if err := rg.Close(); err != nil {
		t.Fatal(err)
	}
	leaks.Check(t)
}

// TestTCPServerLoopback drives the server function on a kernel listener on
// the loopback interface in each mode, as the harness's client does, and
// checks its counters.
func TestTCPServerLoopback(t *testing.T) {
	for _, mode := range []string{tcpModeRR, tcpModeCRR, tcpModeRecv, tcpModeSend} {
		t.Run(mode, func(t *testing.T) {
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s := &tcpServer{mode: mode}
			served := make(chan error, 1)
			go func() { served <- s.serve(ln) }()
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			req, resp := make([]byte, tcpReqSize), make([]byte, tcpReqSize)
			var moved uint64
			switch mode {
			case tcpModeRR, tcpModeCRR:
				n := 3
				if mode == tcpModeCRR {
					n = 1
				}
				for i := range n {
					req[0] = byte(i)
					if _, err := c.Write(req); err != nil {
						t.Fatal(err)
					}
					if _, err := io.ReadFull(c, resp); err != nil || resp[0] != byte(i) {
						t.Fatalf("response %d: %v %x", i, err, resp[:1])
					}
				}
				moved = uint64(n)
				c.Close()
			case tcpModeRecv:
				buf := make([]byte, 3*tcpBulkChunk+5)
				if _, err := c.Write(buf); err != nil {
					t.Fatal(err)
				}
				c.(*net.TCPConn).CloseWrite()
				if n, err := io.Copy(io.Discard, c); n != 0 || err != nil {
					t.Fatalf("after close write: %d bytes, %v", n, err)
				}
				moved = uint64(len(buf))
				c.Close()
			case tcpModeSend:
				buf := make([]byte, tcpBulkChunk)
				if _, err := io.ReadFull(c, buf); err != nil {
					t.Fatal(err)
				}
				s.stopSend.Store(true)
				n, err := io.Copy(io.Discard, c)
				if err != nil {
					t.Fatal(err)
				}
				moved = uint64(len(buf)) + uint64(n)
				c.Close()
			}
			deadline := time.Now().Add(10 * time.Second)
			for s.closed.Load() != 1 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			s.quitting.Store(true)
			ln.Close()
			if err := <-served; err != nil {
				t.Fatal(err)
			}
			s.wg.Wait()
			st := s.stats()
			got := map[string]uint64{tcpModeRR: st.Txns, tcpModeCRR: st.Txns, tcpModeRecv: st.RxBytes, tcpModeSend: st.TxBytes}[mode]
			if st.Accepted != 1 || st.Closed != 1 || st.Errors != 0 || got != moved || st.CPUNs <= 0 {
				t.Errorf("%s: %+v, client moved %d", mode, st, moved)
			}
		})
	}
}

// TestTCPFigures checks the figures of TCP rows: transactions per second
// and B's CPU per transaction, Gbit/s and CPU per GB from the bytes of a
// bulk row, exactness, and the goals against the kernel row.
func TestTCPFigures(t *testing.T) {
	rr := func(impl string, txns uint64, srvNs int64) Result {
		r := Result{Scenario: Scenario{Name: "g/" + impl, Group: "g", Kind: KindTCPRR, Impl: impl, Payload: 64, Flows: 1}, Status: StatusOK,
			Reps: []Rep{{WindowNs: 2e9, Sent: txns, Delivered: txns, TotalSent: txns + 10, TotalDelivered: txns + 10, SrvNs: srvNs, BusyNs: 4e9,
				Samples: []time.Duration{time.Microsecond, 3 * time.Microsecond}}}}
		computeFigures(&r)
		return r
	}
	k, x := rr(ImplKernel, 20000, 1e9), rr(ImplXsessiond, 30000, 1e9)
	if k.PPS.Median != 10000 || k.SrvCPUNs.Median != 50000 || x.SrvCPUNs.Median != 1e9/30000.0 || k.Exact != 1 || k.P99us.Median != 3 {
		t.Errorf("rr figures: %+v %+v %+v exact %d", k.PPS, k.SrvCPUNs, x.SrvCPUNs, k.Exact)
	}
	bulk := func(impl string, bytes uint64, exact bool) Result {
		total := bytes
		if !exact {
			total++
		}
		r := Result{Scenario: Scenario{Name: "b/" + impl, Group: "b", Kind: KindTCPRecv, Impl: impl, Payload: tcpBulkChunk, Flows: 1}, Status: StatusOK,
			Reps: []Rep{{WindowNs: 1e9, Sent: bytes, Delivered: bytes, TotalSent: total, TotalDelivered: bytes, SrvNs: 5e8, BusyNs: 1e9, Errors: 2}}}
		computeFigures(&r)
		return r
	}
	kb, xb := bulk(ImplKernel, 1e9, true), bulk(ImplXsessiond, 4e8, false)
	if kb.Gbps.Median != 8 || kb.SrvCPUPerGB.Median != 500 || kb.CPUPerGB.Median != 1000 || kb.PPS.N != 0 || kb.Exact != 1 || xb.Exact != 0 || xb.Errors.Median != 2 {
		t.Errorf("bulk figures: %+v %+v %+v %+v exact %d/%d", kb.Gbps, kb.SrvCPUPerGB, kb.CPUPerGB, kb.PPS, kb.Exact, xb.Exact)
	}
	goals := TCPGoals([]Result{k, x, kb, xb})
	if len(goals) != 2 {
		t.Fatalf("goals: %+v", goals)
	}
	if g := goals[0]; g.Rate == nil || math.Abs(*g.Rate-1.5) > 1e-9 || g.CPU == nil || math.Abs(*g.CPU-(1/1.5)) > 1e-9 || g.Met != "yes" {
		t.Errorf("rr goal: %+v", g)
	}
	if g := goals[1]; g.Rate == nil || math.Abs(*g.Rate-0.4) > 1e-9 || g.Met != "no" {
		t.Errorf("bulk goal: %+v", g)
	}
}

// tcpCongestion is a TCP socket's congestion control (TCP_CONGESTION).
func tcpCongestion(t *testing.T, c net.Conn) string {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cc string
	var gerr error
	if err := rc.Control(func(fd uintptr) { cc, gerr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return strings.TrimRight(cc, "\x00")
}

// The TCP rows' kernel sockets take the congestion control asked for, on
// both ends (the accepted one from its listener), also one the namespace
// could not make its default (not in net.ipv4.tcp_allowed_congestion_control,
// as cubic is not where bbr is the default), and a name the kernel does not
// have is an error that names it.
func TestCongestionPerSocket(t *testing.T) {
	ccs := []string{"reno"}
	avail, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if err != nil {
		t.Fatal(err)
	}
	allowed, err := os.ReadFile("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(strings.Fields(string(avail)), func(cc string) bool {
		return !slices.Contains(strings.Fields(string(allowed)), cc)
	}); i >= 0 {
		nstest.RequirePrivileged(t) // CAP_NET_ADMIN chooses a restricted one
		ccs = append(ccs, strings.Fields(string(avail))[i])
	} else {
		t.Logf("every congestion control is allowed here (%s): only reno checked", strings.TrimSpace(string(allowed)))
	}
	for _, cc := range ccs {
		lc := net.ListenConfig{Control: ccControl(cc)}
		ln, err := lc.Listen(t.Context(), "tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("%s: %v", cc, err)
		}
		d := net.Dialer{Control: ccControl(cc)}
		c, err := d.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatalf("%s: %v", cc, err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatalf("%s: %v", cc, err)
		}
		if got, peer := tcpCongestion(t, c), tcpCongestion(t, s); got != cc || peer != cc {
			t.Errorf("asked for %s: the client's socket has %s, the accepted one %s", cc, got, peer)
		}
		c.Close()
		s.Close()
		ln.Close()
	}
	if err := checkCongestion("no-such-cc"); err == nil || !strings.Contains(err.Error(), `"no-such-cc"`) {
		t.Errorf("an unknown congestion control: %v", err)
	}
	if err := checkCongestion(""); err != nil {
		t.Errorf("the default: %v", err)
	}
}
