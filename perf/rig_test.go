package main

import (
	"io"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestRepsOnRig runs one short repetition of every implementation that is
// available, at a rate every receiver keeps up with on an idle machine, and
// checks the counts: every datagram a receiver did not deliver counted by
// a drop counter (a loaded machine may drop some), nothing lost by the
// echo and local pairs, the windows non-empty, the rig reused across rows. That no
// descriptor is left is checked with leakcheck (the set of descriptors,
// polled until it settles).
func TestRepsOnRig(t *testing.T) {
	nstest.RequirePrivileged(t)
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true})
	rg := &rigs{}
	defer rg.Close()
	r := &runner{rigs: rg, prog: newProgress(io.Discard), port: defaultPort, genThreads: 2,
		timing: Timing{Warmup: 100 * time.Millisecond, Window: 300 * time.Millisecond, Drain: 2 * time.Second}}
	for _, s := range []Scenario{
		{Name: "gen", Kind: KindGenOnly, Impl: ImplGenOnly, Payload: 64, Queues: 2, Flows: 8, Rate: 20000},
		{Name: "kernel", Kind: KindReceive, Impl: ImplKernel, Payload: 64, Queues: 2, Flows: 8, Rate: 20000},
		{Name: "reuseport", Kind: KindReceive, Impl: ImplKernelReuseport, Payload: 512, Queues: 2, Flows: 8, Rate: 20000},
		{Name: "xdp", Kind: KindReceive, Impl: ImplXDPDrop, Payload: 1472, Queues: 2, Flows: 8, Rate: 20000},
		{Name: "echo", Kind: KindEcho, Impl: ImplKernel, Payload: 64, Queues: 2, Flows: 1, Rate: 2000},
		{Name: "ct", Kind: KindCutThrough, Impl: ImplSocketpair, Payload: 64, Queues: 2, Flows: 1},
	} {
		rep, err := r.runRep(t.Context(), s, 1, 1)
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		t.Logf("%s: window sent %d delivered %d, total sent %d delivered %d, busy %v, samples %d",
			s.Name, rep.Sent, rep.Delivered, rep.TotalSent, rep.TotalDelivered, time.Duration(rep.BusyNs), len(rep.Samples))
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
		if s.Kind == KindEcho && (len(rep.Samples) == 0 || uint64(len(rep.Samples)) != rep.winReplies || rep.winReplies > rep.TotalDelivered || rep.Samples[0] <= 0) {
			t.Errorf("echo: %d samples for %d replies in the window, %d in all", len(rep.Samples), rep.winReplies, rep.TotalDelivered)
		}
		// Every reply has the kernel's receive timestamp, and arrived at
		// the socket before the client read it: sorted, each round trip
		// to the socket is at most the read's of the same rank.
		if s.Kind == KindEcho {
			if len(rep.SocketSamples) != len(rep.Samples) {
				t.Errorf("echo: %d round trips to the socket for %d replies", len(rep.SocketSamples), len(rep.Samples))
			}
			for i := range min(len(rep.SocketSamples), len(rep.Samples)) {
				if rep.SocketSamples[i] <= 0 || rep.SocketSamples[i] > rep.Samples[i] {
					t.Errorf("echo: round trip %d to the socket %v, to the read %v", i, rep.SocketSamples[i], rep.Samples[i])
					break
				}
			}
		}
	}
	if rg.pair == nil || rg.queues != 2 {
		t.Errorf("rig not kept: %+v", rg)
	}
	if err := rg.Close(); err != nil {
		t.Fatal(err)
	}
	leaks.Check(t)
}
