package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestXsessiondOnRig runs one short repetition of each xsessiond
// implementation (receive at two payloads and queue counts, echo,
// cut-through) at rates they keep up with on an idle machine, and checks
// the counts (a receive loss must be counted by a drop counter) and that
// no file descriptor or goroutine is left behind (leakcheck: sets of
// descriptors and goroutines, polled until they settle).
func TestXsessiondOnRig(t *testing.T) {
	nstest.RequirePrivileged(t)
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true})
	rg := &rigs{}
	defer rg.Close()
	var stats []string
	pin, err := newServerPin(-2) // the echo row as go run ./perf places it (nil on one CPU)
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{rigs: rg, prog: newProgress(io.Discard), port: defaultPort, genThreads: 2,
		timing:    Timing{Warmup: 100 * time.Millisecond, Window: 300 * time.Millisecond, Drain: 2 * time.Second},
		stats:     func(l string) { stats = append(stats, l) },
		serverPin: pin}
	for _, s := range []Scenario{
		{Name: "xs-rx-q1", Kind: KindReceive, Impl: ImplXsessiond, Payload: 64, Queues: 1, Flows: 4, Rate: 20000},
		{Name: "xs-rx-q2", Kind: KindReceive, Impl: ImplXsessiond, Payload: 1472, Queues: 2, Flows: 8, Rate: 20000},
		{Name: "xs-echo", Kind: KindEcho, Impl: ImplXsessiond, Payload: 64, Queues: 2, Flows: 1, Rate: 2000},
		{Name: "xs-ct", Kind: KindCutThrough, Impl: ImplXsessiond, Payload: 64, Queues: 2, Flows: 1},
	} {
		rep, err := r.runRep(t.Context(), s, 1, 1)
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		t.Logf("%s: window sent %d delivered %d, total sent %d delivered %d, samples %d",
			s.Name, rep.Sent, rep.Delivered, rep.TotalSent, rep.TotalDelivered, len(rep.Samples))
		if rep.Sent == 0 || rep.Delivered == 0 || rep.WindowNs <= 0 {
			t.Errorf("%s: empty window %+v", s.Name, rep)
		}
		switch {
		case s.Kind == KindReceive || s.Kind == KindEcho:
			// A loaded machine may drop some; every drop must be counted
			// (echo: requests and replies, over the whole repetition).
			// The repetition waited (up to Drain) until sent = delivered +
			// counted; what is still on its way after that is unexplained
			// and fails here.
			t.Logf("%s: %s", s.Name, lossLine(rep))
			if rep.Drops == nil || rep.Unexplained != 0 || rep.TotalSent != rep.TotalDelivered+rep.Counted {
				t.Errorf("%s: sent %d, delivered %d, counted drops %d (%s): %d unexplained", s.Name,
					rep.TotalSent, rep.TotalDelivered, rep.Counted, rep.Drops, rep.Unexplained)
			}
		case rep.TotalSent != rep.TotalDelivered:
			t.Errorf("%s: sent %d, delivered %d at a low rate", s.Name, rep.TotalSent, rep.TotalDelivered)
		}
		if s.Kind == KindEcho && (len(rep.Samples) == 0 || uint64(len(rep.Samples)) != rep.winReplies || rep.winReplies > rep.TotalDelivered) {
			t.Errorf("echo: %d samples for %d replies in the window, %d in all", len(rep.Samples), rep.winReplies, rep.TotalDelivered)
		}
	}
	for _, l := range stats {
		t.Log(l)
	}
	// One line of engine counters after each receive and echo repetition.
	if len(stats) != 3 || !strings.Contains(stats[0], "delivered") || !strings.HasPrefix(stats[2], "xs-echo") || !strings.Contains(stats[2], "app kicks") {
		t.Errorf("engine counters after the receive and echo repetitions: %q", stats)
	}
	if err := rg.Close(); err != nil {
		t.Fatal(err)
	}
	leaks.Check(t)
}

// TestDaemonProcessOnRig runs xsessiond's rows with the daemon in a
// process of its own (--xs-daemon-process, the default) and in the app's
// process: a UDP receive row (the daemon beside or in the harness), the
// echo (beside or in the echo server) and the TCP request/response and
// connect/request/close rows (beside or in the TCP server). Every datagram
// and transaction is accounted for, the engine's counters come through,
// and with the daemon in its own process a TCP row counts the daemon's
// CPU time with the server's.
func TestDaemonProcessOnRig(t *testing.T) {
	nstest.RequirePrivileged(t)
	for _, own := range []bool{true, false} {
		t.Run(fmt.Sprintf("own-process=%v", own), func(t *testing.T) { daemonRowsOnRig(t, own) })
	}
}

func daemonRowsOnRig(t *testing.T, own bool) {
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true})
	saved := xsOptions
	xsOptions.DaemonProcess = own
	defer func() { xsOptions = saved }()
	rg := &rigs{}
	defer rg.Close()
	var stats []string
	pin, err := newServerPin(-2)
	if err != nil {
		t.Fatal(err)
	}
	prof := filepath.Join(t.TempDir(), "cpu.pprof")
	r := &runner{rigs: rg, prog: newProgress(io.Discard), port: defaultPort, genThreads: 2, tcpCC: "reno",
		timing:     Timing{Warmup: 100 * time.Millisecond, Window: 300 * time.Millisecond, Drain: 2 * time.Second},
		stats:      func(l string) { stats = append(stats, l) },
		serverPin:  pin,
		cpuProfile: prof}
	rows := []Scenario{
		{Name: "xs-rx", Kind: KindReceive, Impl: ImplXsessiond, Payload: 64, Queues: 1, Flows: 4, Rate: 20000},
		{Name: "xs-echo", Kind: KindEcho, Impl: ImplXsessiond, Payload: 64, Queues: 1, Flows: 1, Rate: 2000},
	}
	for _, s := range tcpScenarios() {
		if s.Impl == ImplXsessiond && (s.Kind == KindTCPRR || s.Kind == KindTCPCRR) && s.Flows <= 4 {
			rows = append(rows, s)
		}
	}
	if len(rows) != 4 {
		t.Fatalf("%d rows, want receive, echo, TCP request/response over one connection and connect/request/close", len(rows))
	}
	for _, s := range rows {
		rep, err := r.runRep(t.Context(), s, 1, 1)
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		switch s.Kind {
		case KindReceive, KindEcho:
			t.Logf("%s: %s", s.Name, lossLine(rep))
			if rep.Delivered == 0 || rep.Drops == nil || rep.Unexplained != 0 || rep.TotalSent != rep.TotalDelivered+rep.Counted {
				t.Errorf("%s: sent %d, delivered %d, counted drops %d (%s): %d unexplained", s.Name,
					rep.TotalSent, rep.TotalDelivered, rep.Counted, rep.Drops, rep.Unexplained)
			}
		default:
			t.Logf("%s: %s", s.Name, tcpLine(s.Kind, rep))
			if rep.TotalDelivered == 0 || rep.TotalSent != rep.TotalDelivered || rep.Errors != 0 {
				t.Errorf("%s: sent %d, received %d, %d errors", s.Name, rep.TotalSent, rep.TotalDelivered, rep.Errors)
			}
			if rep.WorkerLoops == 0 {
				t.Errorf("%s: no worker loops read from the daemon", s.Name)
			}
			if own && (rep.SrvDaemonNs <= 0 || rep.SrvProcNs <= rep.SrvDaemonNs) {
				t.Errorf("%s: the daemon's process %v of the server's and its %v in the window", s.Name,
					time.Duration(rep.SrvDaemonNs), time.Duration(rep.SrvProcNs))
			}
			if !own && rep.SrvDaemonNs != 0 {
				t.Errorf("%s: a daemon process's CPU %v with the daemon in the server's", s.Name, time.Duration(rep.SrvDaemonNs))
			}
		}
	}
	for _, l := range stats {
		t.Log(l)
	}
	// --cpuprofile: the receive row's and the first TCP row's profiles,
	// and with the daemon in its own process the daemon's beside each.
	for _, f := range []string{prof, profileFile(prof, rows[2].Group, 1)} {
		want := []string{f}
		if own {
			want = append(want, daemonFile(f))
		}
		for _, w := range want {
			if fi, err := os.Stat(w); err != nil || fi.Size() == 0 {
				t.Errorf("profile %s: %v", filepath.Base(w), err)
			}
		}
		if _, err := os.Stat(daemonFile(f)); !own && err == nil {
			t.Errorf("a daemon profile %s with the daemon in the app's process", filepath.Base(daemonFile(f)))
		}
	}
	// The engine's counters after the receive and the echo repetitions.
	if len(stats) < 2 || !strings.Contains(stats[0], "delivered") || !strings.HasPrefix(stats[1], "xs-echo") || !strings.Contains(stats[1], "app kicks") {
		t.Errorf("engine counters after the receive and echo repetitions: %q", stats)
	}
	if err := rg.Close(); err != nil {
		t.Fatal(err)
	}
	leaks.Check(t)
}

// TestCaptureOnRig runs the xsessiond echo with --xs-capture: the capture
// process writes a pcapng file holding a request and a reply frame for
// every datagram the daemon echoed, and its summary line says so.
func TestCaptureOnRig(t *testing.T) {
	nstest.RequirePrivileged(t)
	file := filepath.Join(t.TempDir(), "echo.pcapng")
	saved := xsOptions
	xsOptions.Capture = file
	defer func() { xsOptions = saved }()
	var notes []string
	xsCaptureNote = func(l string) { notes = append(notes, l) }
	defer func() { xsCaptureNote = nil }()
	rg := &rigs{}
	defer rg.Close()
	r := &runner{rigs: rg, prog: newProgress(io.Discard), port: defaultPort,
		timing: Timing{Warmup: 100 * time.Millisecond, Window: 300 * time.Millisecond, Drain: 2 * time.Second}}
	rep, err := r.runRep(t.Context(), Scenario{Name: "xs-echo-cap", Kind: KindEcho, Impl: ImplXsessiond, Payload: 64, Queues: 1, Flows: 1, Rate: 2000}, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) != 1 || !strings.HasPrefix(notes[0], "capture: ") {
		t.Fatalf("capture notes %q", notes)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ng, err := pcapgo.NewNgReader(f, pcapgo.NgReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	frames := 0
	for {
		if _, _, err := ng.ReadPacketData(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
		frames++
	}
	want := fmt.Sprintf("capture: %d frames written, 0 lost", frames)
	t.Logf("%s; echo sent %d delivered %d", notes[0], rep.TotalSent, rep.TotalDelivered)
	// A request lost before the daemon has no frame; a reply lost after
	// it (host A's socket buffer on a loaded machine) has both.
	if rep.TotalDelivered == 0 || uint64(frames) < 2*rep.TotalDelivered || uint64(frames) > 2*rep.TotalSent || !strings.HasPrefix(notes[0], want) {
		t.Fatalf("%d frames in the file for %d echoes; note %q", frames, rep.TotalDelivered, notes[0])
	}
}

// TestStartXsErrorPaths: a daemon or listener that cannot start returns
// its error and undoes what it did (it used to close a nil result and
// panic).
func TestStartXsErrorPaths(t *testing.T) {
	nstest.RequirePrivileged(t)
	if x, err := startXsDaemon("xs-no-such0", "", 1, XsessiondOptions{}, false); err == nil || x != nil {
		t.Fatalf("daemon on a missing interface: %v, %v", x, err)
	}
	env := &Env{Do: func(fn func() error) error { return fn() }, IfName: "xs-no-such0", Queues: 1, Port: 9}
	if l, err := startXsListener(env, XsessiondOptions{}); err == nil || l != nil {
		t.Fatalf("listener on a missing interface: %v, %v", l, err)
	}
}
