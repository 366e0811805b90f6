package leakcheck

import (
	"runtime"
	"sync/atomic"
	"time"
)

// HeapPeak samples the heap every 10 ms from a collection on: stop ends the
// sampling and returns the highest HeapAlloc seen above the first, for the
// tests that bound what a flood of requests makes a process hold.
func HeapPeak() (stop func() int64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	peak.Store(base)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-quit:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return func() int64 {
		close(quit)
		<-done
		return int64(peak.Load()) - int64(base)
	}
}
