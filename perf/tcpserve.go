package main

// The TCP server of the TCP scenarios runs in a process of its own in host
// B (perf tcpserve), so that its CPU time is host B's side alone: the
// server's goroutines and, for xsessiond, the daemon's workers and gVisor
// stack, which run in the same process. The serving code is one function
// on a net.Listener for both implementations: the kernel's (net.Listen) and
// xsessiond's (app.Listen).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/datapath"
)

// TCP server modes, one per TCP scenario kind.
const (
	tcpModeRR   = "rr"   // request/response: read tcpReqSize bytes, write them back, until EOF
	tcpModeCRR  = "crr"  // one request/response per connection, then wait for the client's close
	tcpModeRecv = "recv" // read and count until EOF (bulk receive: A sends to B)
	tcpModeSend = "send" // write until told to stop, then close (bulk send: B sends to A)
)

// tcpBulkChunk is the buffer each bulk writer writes and each bulk reader
// reads into.
const tcpBulkChunk = 64 << 10

// tcpServer serves one TCP scenario on a listener. Its counters may be read
// from any goroutine.
type tcpServer struct {
	mode string
	// engine reads xsessiond's engine counters; nil for the kernel.
	engine func() datapath.Stats
	// reads reads the xsessiond app's read counters; nil for the kernel.
	reads func() app.ReadStats
	// daemon is the daemon's process (--xs-daemon-process), whose CPU
	// time counts with this process's; nil: none.
	daemon *xsDaemonProcess
	// accepted, closed: connections; txns: requests answered (rr, crr);
	// rxBytes, txBytes: payload bytes read and written.
	accepted, closed, txns, rxBytes, txBytes, errs atomic.Uint64
	stopSend                                       atomic.Bool // send mode: stop writing and close
	quitting                                       atomic.Bool // the listener is being closed
	wg                                             sync.WaitGroup

	errMu   sync.Mutex
	lastErr error // the last connection error (guarded by errMu)
}

func (s *tcpServer) fail(err error) {
	s.errs.Add(1)
	s.errMu.Lock()
	s.lastErr = err
	s.errMu.Unlock()
}

// serve accepts connections until ln is closed and handles each in its own
// goroutine; it returns once ln is closed (nil) or Accept failed otherwise.
// Handlers may still run: wait for them with wg.
func (s *tcpServer) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.quitting.Load() {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		s.accepted.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.handle(c); err != nil {
				s.fail(err)
			}
			if err := c.Close(); err != nil {
				s.fail(fmt.Errorf("close: %w", err))
			}
			s.closed.Add(1)
		}()
	}
}

// handle serves one connection as the mode says; it allocates only its
// buffer.
func (s *tcpServer) handle(c net.Conn) error {
	switch s.mode {
	case tcpModeRR, tcpModeCRR:
		buf := make([]byte, tcpReqSize)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				if err == io.EOF {
					return nil
				}
				return fmt.Errorf("read request: %w", err)
			}
			s.rxBytes.Add(uint64(len(buf)))
			if _, err := c.Write(buf); err != nil {
				return fmt.Errorf("write response: %w", err)
			}
			s.txBytes.Add(uint64(len(buf)))
			s.txns.Add(1)
			if s.mode == tcpModeCRR {
				// The client closes first (its side holds TIME-WAIT);
				// anything more before its FIN is an error.
				n, err := c.Read(buf)
				if n > 0 {
					return fmt.Errorf("crr: %d bytes after the response", n)
				}
				if err != io.EOF {
					return fmt.Errorf("crr: wait for close: %w", err)
				}
				return nil
			}
		}
	case tcpModeRecv:
		buf := make([]byte, tcpBulkChunk)
		for {
			n, err := c.Read(buf)
			s.rxBytes.Add(uint64(n))
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("bulk read: %w", err)
			}
		}
	case tcpModeSend:
		buf := make([]byte, tcpBulkChunk)
		for i := range buf {
			buf[i] = byte(i)
		}
		for !s.stopSend.Load() {
			n, err := c.Write(buf)
			s.txBytes.Add(uint64(n))
			if err != nil {
				return fmt.Errorf("bulk write: %w", err)
			}
		}
		return nil
	}
	return fmt.Errorf("unknown mode %q", s.mode)
}

// tcpStats is what the server process reports of itself.
type tcpStats struct {
	Accepted uint64 `json:"accepted"`
	Closed   uint64 `json:"closed"`
	Txns     uint64 `json:"txns"`
	RxBytes  uint64 `json:"rx_bytes"`
	TxBytes  uint64 `json:"tx_bytes"`
	Errors   uint64 `json:"errors"`
	LastErr  string `json:"last_error,omitempty"`
	// CPUNs is the process's user+system time so far (all its threads:
	// the server and, for xsessiond, the daemon in it), and with the
	// daemon in a process of its own that process's too, DaemonCPUNs.
	CPUNs       int64 `json:"cpu_ns"`
	DaemonCPUNs int64 `json:"daemon_cpu_ns,omitempty"`
	// Worker is xsessiond's engine's loop counters summed over its
	// workers (none for the kernel).
	Worker workerLoops `json:"worker"`
	// Reads are the xsessiond app's reads that found nothing: spins,
	// spins that found data, sleeps (app.ReadStats; zero for the kernel).
	Reads app.ReadStats `json:"reads"`
}

// workerLoops are the engine's worker loop counters.
type workerLoops struct {
	Loops  uint64 `json:"loops"`
	Sleeps uint64 `json:"sleeps"`
	Spins  uint64 `json:"spins"`
	Naps   uint64 `json:"naps"`
	// RingFull and FillEmpty are the kernel's AF_XDP counters summed over
	// the queues: frames dropped because an rx ring was full, and
	// receives that found the fill ring empty.
	RingFull  uint64 `json:"rx_ring_full"`
	FillEmpty uint64 `json:"rx_fill_ring_empty"`
}

func (s *tcpServer) stats() tcpStats {
	st := tcpStats{Accepted: s.accepted.Load(), Closed: s.closed.Load(), Txns: s.txns.Load(),
		RxBytes: s.rxBytes.Load(), TxBytes: s.txBytes.Load(), Errors: s.errs.Load(), CPUNs: procCPU().Nanoseconds()}
	if s.daemon != nil {
		// The daemon's process counts as this one's part of host B.
		d, _ := s.daemon.cpu()
		st.DaemonCPUNs = d.Nanoseconds()
		st.CPUNs += st.DaemonCPUNs
	}
	if s.engine != nil {
		es := s.engine()
		t := es.Totals
		st.Worker = workerLoops{Loops: t.Loops, Sleeps: t.Sleeps, Spins: t.Spins, Naps: t.Naps}
		for _, q := range es.Queues {
			if q.XSK != nil {
				st.Worker.RingFull += q.XSK.RxRingFull
				st.Worker.FillEmpty += q.XSK.RxFillRingEmptyDescs
			}
		}
	}
	if s.reads != nil {
		st.Reads = s.reads()
	}
	s.errMu.Lock()
	if s.lastErr != nil {
		st.LastErr = s.lastErr.Error()
	}
	s.errMu.Unlock()
	return st
}

// tcpServeMain is `perf tcpserve`: the TCP server of one scenario
// repetition, started by the harness inside host B's network namespace.
// It listens (kernel: net.Listen; xsessiond: the daemon in this process on
// --iface and an app's Listen), prints "ready", then answers one line per
// command read from stdin:
//
//	stats          -> stats JSON (tcpStats)
//	prof FILE      -> ok      (start a CPU profile into FILE)
//	unprof         -> ok      (stop it)
//	stopsend       -> ok      (send mode: the writers stop and close)
//	quit           -> final JSON, once the listener is closed and every connection done (or 10 s passed)
//
// An error is a line "error MESSAGE"; stdin closing is quit.
func tcpServeMain(args []string) int {
	fs := flag.NewFlagSet("tcpserve", flag.ContinueOnError)
	impl := fs.String("impl", ImplKernel, "kernel or xsessiond")
	mode := fs.String("mode", tcpModeRR, "rr, crr, recv or send")
	listen := fs.String("listen", "", "IPv4:port to listen on")
	iface := fs.String("iface", "", "xsessiond: the interface the daemon serves")
	netns := fs.String("netns", "", "xsessiond: the interface's netns name (this process runs in it)")
	queues := fs.Int("queues", 1, "xsessiond: queues of the interface")
	xsJSON := fs.String("xs", "{}", "xsessiond: XsessiondOptions as JSON")
	cc := fs.String("cc", "", "kernel: the sockets' TCP congestion control (empty = the kernel's default)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	return childMain(func(in io.Reader, reply func(string, ...any)) error {
		return runTCPServe(*impl, *mode, *listen, *iface, *netns, *queues, *xsJSON, *cc, in, reply)
	})
}

// tcpListener is the listener the server serves, and what closes what it
// needed.
type tcpListener struct {
	ln     net.Listener
	close  func() error          // closes what the listener needed (the app and daemon)
	engine func() datapath.Stats // xsessiond's engine counters; nil for the kernel
	reads  func() app.ReadStats  // the xsessiond app's reads; nil for the kernel
	daemon *xsDaemonProcess      // the daemon's process (--xs-daemon-process); nil: none
}

func listenTCP(impl, mode, addr, iface, netns string, queues int, xsJSON, cc string) (*tcpListener, error) {
	switch impl {
	case ImplKernel:
		lc := net.ListenConfig{Control: ccControl(cc)}
		ln, err := lc.Listen(context.Background(), "tcp4", addr)
		if err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
		return &tcpListener{ln: ln, close: func() error { return nil }}, nil
	case ImplXsessiond:
		o := XsessiondOptions{}
		if err := json.Unmarshal([]byte(xsJSON), &o); err != nil {
			return nil, fmt.Errorf("--xs: %w", err)
		}
		ao := app.Options{Name: "perf-tcp"}
		if mode == tcpModeRecv || mode == tcpModeSend {
			ao.RxFifoSize, ao.TxFifoSize = o.TCPBulkFifo, o.TCPBulkFifo
		}
		x, err := startXsDaemonRef(iface, netns, queues, o)
		if err != nil {
			return nil, err
		}
		a, err := attachTo(x.socket(), o.AppSpin, ao)
		if err != nil {
			return nil, errors.Join(err, x.close())
		}
		ln, err := a.Listen("tcp://" + addr)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("listen: %w", err), a.Close(), x.close())
		}
		d, _ := x.(*xsDaemonProcess)
		return &tcpListener{ln: ln, close: func() error { return errors.Join(a.Close(), x.close()) }, engine: x.stats,
			reads: a.ReadStats, daemon: d}, nil
	}
	return nil, fmt.Errorf("unknown implementation %q", impl)
}

func runTCPServe(impl, mode, addr, iface, netns string, queues int, xsJSON, cc string, in io.Reader, reply func(string, ...any)) (err error) {
	switch mode {
	case tcpModeRR, tcpModeCRR, tcpModeRecv, tcpModeSend:
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	l, err := listenTCP(impl, mode, addr, iface, netns, queues, xsJSON, cc)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.close()) }()
	s := &tcpServer{mode: mode, engine: l.engine, reads: l.reads, daemon: l.daemon}
	serveErr := make(chan error, 1)
	go pprof.Do(context.Background(), pprof.Labels("part", "server"), func(context.Context) { serveErr <- s.serve(l.ln) })
	reply("ready")
	var prof profile
	defer func() { err = errors.Join(err, prof.stop()) }()
	var stopDaemon func() error // the daemon's process's profile, when one runs
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		switch cmd {
		case "stats":
			b, _ := json.Marshal(s.stats())
			reply("%s", b)
		case "prof":
			err := prof.start(arg)
			if err == nil && l.daemon != nil {
				if stopDaemon, err = l.daemon.profile(daemonFile(arg)); err != nil {
					err = errors.Join(err, prof.stop())
				}
			}
			replyErr(reply, err)
		case "unprof":
			err := prof.stop()
			if stopDaemon != nil {
				err = errors.Join(err, stopDaemon())
				stopDaemon = nil
			}
			replyErr(reply, err)
		case "stopsend":
			s.stopSend.Store(true)
			reply("ok")
		case "quit":
			return s.quit(l.ln, serveErr, reply)
		default:
			reply("error unknown command %q", cmd)
		}
	}
	return s.quit(l.ln, serveErr, reply)
}

// tcpQuitWait bounds how long quit waits for open connections.
const tcpQuitWait = 10 * time.Second

// quit closes the listener, waits for the connections (at most
// tcpQuitWait) and replies with the final counters.
func (s *tcpServer) quit(ln net.Listener, serveErr chan error, reply func(string, ...any)) error {
	s.quitting.Store(true)
	s.stopSend.Store(true)
	err := ln.Close()
	if serr := <-serveErr; serr != nil {
		err = errors.Join(err, serr)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(tcpQuitWait):
		err = errors.Join(err, fmt.Errorf("%d connections still open after %v", s.accepted.Load()-s.closed.Load(), tcpQuitWait))
	}
	b, _ := json.Marshal(s.stats())
	if err != nil {
		return err
	}
	reply("%s", b)
	return nil
}
