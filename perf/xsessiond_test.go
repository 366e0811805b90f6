package main

import (
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

func heapFifo(t *testing.T, size uint32) *fifo.Fifo {
	t.Helper()
	seg, err := fifo.NewHeapSegment("test", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	f, err := seg.AllocFifo(size)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestConsumeDgrams: whole records are counted and released, also when
// they wrap around the end of the fifo, and nothing is allocated.
func TestConsumeDgrams(t *testing.T) {
	f := heapFifo(t, 4096)
	if _, _, _, err := consumeDgrams(f); !errors.Is(err, fifo.ErrEmpty) {
		t.Fatalf("empty fifo: %v", err)
	}
	h := &fifo.DgramHeader{Family: 4, RemotePort: 1}
	var wantN, wantB uint64
	// Sizes chosen so that records wrap the 4096-byte fifo several times.
	for round, size := range []int{1, 64, 200, 1000, 333, 1472, 7, 900} {
		queued := 0
		for f.MaxEnqueue() >= fifo.DgramRecordSize(size) && queued < 3 {
			if err := f.EnqueueDgram(h, make([]byte, size)); err != nil {
				t.Fatal(err)
			}
			queued++
		}
		wantN += uint64(queued)
		wantB += uint64(queued * size)
		n, b, rel, err := consumeDgrams(f)
		if err != nil || n != uint64(queued) || b != uint64(queued*size) || rel != queued*fifo.DgramRecordSize(size) {
			t.Fatalf("round %d: consumed %d datagrams %d bytes released %d (%v), queued %d of %d bytes", round, n, b, rel, err, queued, size)
		}
		if f.MaxDequeue() != 0 {
			t.Fatalf("round %d: %d bytes left", round, f.MaxDequeue())
		}
	}
	if err := f.EnqueueDgram(h, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		_ = f.EnqueueDgram(h, nil)
		_, _, _, _ = consumeDgrams(f)
	})
	if allocs != 0 {
		t.Errorf("consumeDgrams allocates %.1f times per call", allocs)
	}
}

// TestConsumeDgramsCorrupt: a record whose length runs past what is
// queued is not consumed and is reported.
func TestConsumeDgramsCorrupt(t *testing.T) {
	f := heapFifo(t, 4096)
	rec := make([]byte, fifo.DgramHeaderSize+8)
	binary.NativeEndian.PutUint32(rec[fifo.DgramOffLen:], 4000) // more than is queued
	if _, err := f.Enqueue(rec); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := consumeDgrams(f); !errors.Is(err, fifo.ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
	if f.MaxDequeue() != len(rec) {
		t.Fatalf("%d bytes queued after a refused record, want %d", f.MaxDequeue(), len(rec))
	}
}

func TestU32At(t *testing.T) {
	// The region 0, 1, ..., 7 split after its third byte: reads before,
	// across and after the split.
	all := []byte{0, 1, 2, 3, 4, 5, 6, 7}
	a, b := all[:3], all[3:]
	for off := 0; off+4 <= len(all); off++ {
		if got, want := u32At(a, b, off), binary.NativeEndian.Uint32(all[off:]); got != want {
			t.Errorf("u32At(%d) = %#x, want %#x", off, got, want)
		}
	}
}

// TestXsessiondOnRig runs one short repetition of each xsessiond
// implementation (receive at two payloads and queue counts, echo,
// cut-through) at rates they keep up with, and checks the counts and that
// no file descriptor or goroutine is left behind (leakcheck: sets of
// descriptors and goroutines, polled until they settle).
func TestXsessiondOnRig(t *testing.T) {
	nstest.RequirePrivileged(t)
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true})
	rg := &rigs{}
	defer rg.Close()
	var stats []string
	r := &runner{rigs: rg, prog: newProgress(io.Discard), port: defaultPort, genThreads: 2,
		timing: Timing{Warmup: 100 * time.Millisecond, Window: 300 * time.Millisecond, Drain: 2 * time.Second},
		stats:  func(l string) { stats = append(stats, l) }}
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
		if rep.TotalSent != rep.TotalDelivered {
			t.Errorf("%s: sent %d, delivered %d at a low rate", s.Name, rep.TotalSent, rep.TotalDelivered)
		}
		if s.Kind == KindEcho && (len(rep.Samples) == 0 || uint64(len(rep.Samples)) != rep.TotalDelivered) {
			t.Errorf("echo: %d samples for %d replies", len(rep.Samples), rep.TotalDelivered)
		}
	}
	for _, l := range stats {
		t.Log(l)
	}
	if len(stats) != 2 || !strings.Contains(stats[0], "delivered") {
		t.Errorf("engine counters after the receive repetitions: %q", stats)
	}
	if err := rg.Close(); err != nil {
		t.Fatal(err)
	}
	leaks.Check(t)
}
