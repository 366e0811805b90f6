package app

import (
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A read that finds its fifos empty yields its CPU (sched_yield) a few
// times, looking again after each, before it sleeps on the app's events.
//
// Where the producer (the daemon's worker, or the peer app of a
// cut-through session) shares the reader's CPU, the yield runs it at
// once: it delivers what came meanwhile, and the reader finds it without
// sleeping. A sleep and its wake-up cost the reader far more: the event
// goroutine's wake-up through the runtime's poller, the reader's
// goroutine, and a context switch each way. On a 2-vCPU VM, with the
// app's process and the daemon's worker on one CPU, 64-byte cut-through
// ran at 2.40–2.89 M msg/s with the spin against 1.08–1.21 without, and
// an echo app of 64-byte datagrams at 10,000/s slept about once per burst
// of its client instead of once per request, with a p50 of 55.0–58.4 µs
// against 65.0–74.4 in one period of the VM and no change in another
// (docs/perf: "A read that found nothing yields before it sleeps").
//
// A yield that ran nobody is futile: it returned in about the time of
// the system call alone. The shortest yield the App has timed stands for
// that time; one that took less than spinFutileFactor times it counts as
// futile, and the read sleeps after spinMaxFutile futile yields: on a
// host where the producer runs on another CPU, the spin costs that many
// system calls per sleep, and it never holds a CPU another thread of the
// host asked for. Otherwise it goes on until Options.ReadSpin has passed
// or spinMaxYields yields were made.
//
// The spin backs off where it does not pay: after spinMissMax spins in a
// row that found nothing (a request/response peer further away than the
// spin lasts), the next spinBackoff reads sleep without one. So do the
// reads after a second yield within spinStolenWindow that took spinStolen
// or longer (the first ends its spin only): a CPU-bound thread
// of any program held the CPU through it (Linux runs it for its slice,
// 0.75 ms and more), and each yield hands it another slice, while a
// sleeping reader's wake-up preempts it. With such a thread on the echo
// server's CPU, an echo at 10,000/s had a p50 of 1.75–1.82 ms where the
// kernel's had 0.20–0.23 ms; with the backoff here and in the worker's
// spin, 0.32–0.36 ms (medians of two runs each; docs/perf: "A CPU shared
// with a busy program").
//
// One read of an App spins at a time; the others sleep at once. A
// spinning read holds a P of the Go scheduler, which the app's other
// goroutines may want: with 32 TCP connections, each read spinning in
// turn, and the daemon's goroutines in the same process, the spin halved
// the request rate. The spinner also lets them run (runtime.Gosched)
// before each yield.
const (
	// DefaultReadSpin is Options.ReadSpin's default.
	DefaultReadSpin  = 50 * time.Microsecond
	spinFutileFactor = 3
	spinMaxFutile    = 2
	spinMaxYields    = 64
	spinMissMax      = 8  // spins in a row that found nothing ...
	spinBackoff      = 64 // ... make this many reads sleep without one
	// spinStolen: a yield this long ran another thread that held the CPU
	// through it (a CPU-bound program sharing it), as the worker's spin
	// sees it (datapath: yieldStolen).
	spinStolen = 500 * time.Microsecond
	// spinStolenWindow: a stolen yield within this time of the last makes
	// the next spinBackoff reads sleep; a single one only ends its spin. A
	// thread that ran once for a few milliseconds (a host's housekeeping)
	// is gone by the next read, and a sleeping read costs the reply a
	// wake-up (datapath: stolenBackoff).
	spinStolenWindow = 50 * time.Millisecond
)

// spinEpoch is the origin of App.lastStolen's monotonic times.
var spinEpoch = time.Now()

// ReadStats counts what the App's reads did when they found nothing to
// read.
type ReadStats struct {
	Spins    uint64 // spins started (Options.ReadSpin)
	SpinHits uint64 // spins that ended with something to read
	Sleeps   uint64 // sleeps on the app's events, after a spin or without one
	// SpinsStolen counts the spins whose yield another thread held the
	// CPU through; the reads after one sleep without spinning for a while.
	SpinsStolen uint64
}

// readStats are the App's ReadStats.
type readStats struct{ spins, hits, sleeps, stolen atomic.Uint64 }

// ReadStats returns the counts of the App's reads that found nothing to
// read since Attach.
func (a *App) ReadStats() ReadStats {
	return ReadStats{Spins: a.reads.spins.Load(), SpinHits: a.reads.hits.Load(), Sleeps: a.reads.sleeps.Load(), SpinsStolen: a.reads.stolen.Load()}
}

// spinsFor reports whether a read of e that found nothing spins before it
// sleeps: not for a TCP session over the datapath. Its bytes come through
// the daemon's gVisor: the worker injects the segment, gVisor's processor
// goroutine takes it, the connection's pump copies it into the fifo, each
// a hand-over in the daemon's process; a read's yields, where the daemon
// shares the app's CPU, pay a switch between the two processes each
// without hastening them. With the perf harness's TCP server on one CPU
// (go run ./perf --tcp --quick, three rounds taking turns with the build
// before, 2026-12-05 09:35–09:37 UTC), request/response over one
// connection did 0.51–0.52 of the kernel's rate at 2.49–2.61× its B CPU
// per transaction with the spin, 0.56–0.62 at 1.87–2.06 without; over 32
// connections 0.68–0.71 at 1.44–1.47 against 0.81–0.87 at 1.17–1.24;
// connect/request/close and bulk within the rounds' spread. The worker's
// own spin off (--xs-spin 1ns) changed nothing: it does not spin after
// TCP work (datapath/poll.go). Datagram sessions and cut-through streams
// keep the spin: there the other side answers on its own, without a
// pipeline of goroutines in between.
func (e *end) spinsFor() bool { return !e.datapath || e.dgram }

// spinner times one read's yields; the zero value is ready. Use as
//
//	for sp := (spinner{}); sp.next(a); {
//		if ready() { sp.hit(a); ... }
//	}
//
// Every way out of the loop ends the spin: next reporting false, or hit.
type spinner struct {
	start  time.Time
	yields int
	futile int
	held   bool // this spinner holds a.spinning
	stolen bool // a yield was stolen (spinStolen): the spin ends
}

// next yields the CPU once and reports whether the caller should look
// again (false: sleep). It reports false at once when a's spin is off or
// another read of a spins now.
func (s *spinner) next(a *App) bool {
	if a.readSpin <= 0 {
		return false
	}
	if s.yields == 0 {
		if a.spinSkip.Load() > 0 {
			a.spinSkip.Add(-1)
			return false
		}
		if !a.spinning.CompareAndSwap(false, true) {
			return false
		}
		s.held = true
		s.start = time.Now()
		a.reads.spins.Add(1)
	} else if s.stolen || s.futile >= spinMaxFutile || s.yields >= spinMaxYields || time.Since(s.start) >= a.readSpin {
		if s.held && a.spinMiss.Add(1) >= spinMissMax {
			a.spinMiss.Store(0)
			a.spinSkip.Store(spinBackoff)
		}
		s.end(a)
		return false
	}
	s.yields++
	// The app's other goroutines first (gVisor's, in a process that runs
	// the daemon too; the app's other readers), then the host's threads.
	runtime.Gosched()
	t0 := time.Now()
	_, _, _ = unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	d := time.Since(t0)
	if a.yieldFloor.note(d) {
		s.futile++
	}
	stolenAt := a.stolenAt
	if stolenAt == 0 {
		stolenAt = spinStolen
	}
	if d >= stolenAt {
		// Another thread held the CPU all through: this spin ends after
		// the caller's look. If it did so before, within spinStolenWindow,
		// it may again: the next spinBackoff reads sleep at once, where a
		// wake-up reaches them, instead of handing it another slice.
		s.stolen = true
		a.reads.stolen.Add(1)
		now := int64(time.Since(spinEpoch)) + 1
		if last := a.lastStolen.Swap(now); last != 0 && now-last < int64(spinStolenWindow) {
			a.spinSkip.Store(spinBackoff)
		}
	}
	return true
}

// hit ends a spin that found something to read.
func (s *spinner) hit(a *App) {
	a.reads.hits.Add(1)
	a.spinMiss.Store(0)
	s.end(a)
}

// end lets another read of a spin.
func (s *spinner) end(a *App) {
	if s.held {
		s.held = false
		a.spinning.Store(false)
	}
}

// yieldFloor is the shortest yield an App timed: about a sched_yield
// that switched to nobody.
type yieldFloor struct{ ns atomic.Int64 }

// note records a yield of d and reports whether it was futile.
func (f *yieldFloor) note(d time.Duration) bool {
	ns := int64(d)
	floor := f.ns.Load()
	if floor == 0 || ns < floor {
		f.ns.Store(ns) // racing stores keep one of two short times
		floor = ns
	}
	return ns < spinFutileFactor*floor
}
