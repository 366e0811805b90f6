package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
)

// TestSoak attaches 50 apps, has each bind, open a cut-through session to
// its neighbour's listener, exchange datagrams both ways, and detach, over
// and over for a bounded time. Afterwards the daemon's goroutines and
// descriptors are back to where they were, its heap within a small slack,
// and ctl show lists nothing.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test skipped in -short mode")
	}
	d := startDaemon(t)
	const apps = 50
	dur := 12 * time.Second
	// Warm up once so the baseline includes what the first use allocates
	// for good (runtime poller, pools).
	soakRound(t, d, apps, 0)
	// leakcheck: sets of descriptors and goroutines, looked at (Diff) in
	// the same poll as the heap.
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapAlloc

	start := time.Now()
	rounds := 0
	for time.Since(start) < dur {
		soakRound(t, d, apps, rounds+1)
		if t.Failed() {
			return
		}
		rounds++
	}
	t.Logf("%d rounds of %d apps in %v", rounds, apps, time.Since(start).Round(time.Millisecond))

	waitFor(t, "the daemon to forget the apps", 5*time.Second, func() bool { return len(d.layer.Apps()) == 0 })
	var left error
	var heap uint64
	ok := false
	for range 100 {
		runtime.GC()
		left = leaks.Diff()
		runtime.ReadMemStats(&ms)
		heap = ms.HeapAlloc
		if left == nil && heap <= baseHeap+4<<20 {
			ok = true
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("heap %d KiB -> %d KiB", baseHeap>>10, heap>>10)
	if !ok {
		t.Errorf("not back to the baseline: heap %d (was %d); %v", heap, baseHeap, left)
	}
	for _, what := range []string{"apps", "sessions", "listeners", "rules"} {
		out, err := show(t, d.Socket(), what)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.TrimSpace(out); string(got) != "[]" {
			t.Errorf("ctl show %s after the soak: %s", what, got)
		}
	}
}

// soakRound runs one round: n apps attach, bind, talk, detach.
func soakRound(t *testing.T, d *Daemon, n, round int) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	as := make([]*app.App, n)
	pcs := make([]net.PacketConn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := app.Attach(ctx, app.Options{Socket: d.Socket(), Name: fmt.Sprintf("soak-%d", i), Scope: 3,
				RxFifoSize: 8 << 10, TxFifoSize: 8 << 10, SegmentSize: 256 << 10})
			if err != nil {
				errs <- err
				return
			}
			as[i] = a
			pc, err := a.ListenPacket(fmt.Sprintf("udp://0.0.0.0:%d", 10000+i))
			if err != nil {
				errs <- err
				return
			}
			pcs[i] = pc
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		for _, a := range as {
			if a != nil {
				a.Close()
			}
		}
		t.Fatalf("round %d: %v", round, err)
	default:
	}
	// Every app echoes on its listener and talks to its neighbour's.
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := as[i]
			c, err := a.Dial(ctx, fmt.Sprintf("udp://127.0.0.1:%d", 10000+(i+1)%n))
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 2048)
			for k := range 20 {
				msg := bytes.Repeat([]byte{byte(i), byte(k), byte(round)}, 1+k*10)
				if _, err := c.Write(msg); err != nil {
					errs <- fmt.Errorf("app %d write: %w", i, err)
					return
				}
				m, err := c.Read(buf)
				if err != nil {
					errs <- fmt.Errorf("app %d read: %w", i, err)
					return
				}
				if !bytes.Equal(buf[:m], msg) {
					errs <- fmt.Errorf("app %d: echo differs", i)
					return
				}
			}
		}()
	}
	// The echo side of every listener.
	var echoes sync.WaitGroup
	for i := range n {
		echoes.Add(1)
		go func() {
			defer echoes.Done()
			pc := pcs[i]
			buf := make([]byte, 2048)
			for {
				m, addr, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				if _, err := pc.WriteTo(buf[:m], addr); err != nil && !errors.Is(err, net.ErrClosed) {
					select { // a lost echo shows as its cause, not as the reader's timeout
					case errs <- fmt.Errorf("app %d echo to %v: %w", i, addr, err):
					default:
					}
				}
			}
		}()
	}
	wg.Wait()
	for _, a := range as {
		a.Close()
	}
	echoes.Wait()
	select {
	case err := <-errs:
		t.Fatalf("round %d: %v", round, err)
	default:
	}
}
