package main

import (
	"io"
	"math"
	"net"
	"os"
	"strings"
	"testing"
	"time"

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
	// Both hosts' kernel TCP took the congestion control asked for (reno:
	// not the machine's default, bbr or cubic), and a name the kernel
	// does not have is an error that names it.
	p, err := rg.get(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []*nstest.Host{p.A, p.B} {
		var cc []byte
		if err := h.Do(func() (err error) {
			cc, err = os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(cc)); got != "reno" {
			t.Errorf("host %s: congestion control %q, want reno", h.Name, got)
		}
	}
	if err := setTCPCongestion(p.A, "no-such-cc"); err == nil || !strings.Contains(err.Error(), `"no-such-cc"`) {
		t.Errorf("an unknown congestion control: %v", err)
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
