package datapath

import (
	"os"
	"runtime"
	"sync"
)

// A worker runs on a locked OS thread and holds a P of the Go scheduler
// whenever it is not blocked in poll: while it works, while it spins and
// while it naps (a nanosleep of IdleNap, which the runtime hands off only
// when sysmon next looks, 20 µs to 10 ms later). With as many workers as
// GOMAXPROCS (a NIC with a queue per CPU), nothing else in the process
// (gVisor's goroutines, the TCP pumps, the control plane) could run while
// they nap, though the CPUs are idle. So running Engines keep one P beyond
// their workers: GOMAXPROCS becomes at least workers + 1 (reserveProcs),
// and goes back when they close. They add no more than that: each P more
// than the CPUs lets the runtime wake one more thread to look for work,
// and on a 2-vCPU VM one more P (a P for each of 1 worker and 2 CPUs)
// raised the echo's p99 at 10,000/s from 195–226 to 276–312 µs
// (go run ./perf --only echo64-q1-f1, three rounds).
//
// A GOMAXPROCS set in the environment is the operator's choice and is
// left as it is.

// procs is this process's reservation.
var procs procTable

// procTable is the process's reservation of Ps for workers.
type procTable struct {
	sync.Mutex
	base     int // GOMAXPROCS before the first reservation
	reserved int // workers of running Engines
}

// baseProcs is GOMAXPROCS as it was before the workers' reservation.
func baseProcs() int {
	procs.Lock()
	defer procs.Unlock()
	if procs.reserved > 0 {
		return procs.base
	}
	return runtime.GOMAXPROCS(0)
}

// reserveProcs notes n more workers, raising GOMAXPROCS to at least the
// workers of all running Engines plus one, and returns what takes them
// back (once).
func reserveProcs(n int) (release func()) {
	if n <= 0 || os.Getenv("GOMAXPROCS") != "" {
		return func() {}
	}
	procs.Lock()
	if procs.reserved == 0 {
		procs.base = runtime.GOMAXPROCS(0)
	}
	procs.reserved += n
	procs.set()
	procs.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			procs.Lock()
			defer procs.Unlock()
			procs.reserved -= n
			procs.set()
		})
	}
}

// set makes GOMAXPROCS what the reservation asks. procs is locked.
func (p *procTable) set() {
	want := max(p.base, p.reserved+1) // base alone with no workers
	if runtime.GOMAXPROCS(0) != want {
		runtime.GOMAXPROCS(want)
	}
}
