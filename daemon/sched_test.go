package daemon

import (
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// threadPolicies is ThreadPolicies of this process.
func threadPolicies(t *testing.T) map[int]uint32 {
	t.Helper()
	pols, err := ThreadPolicies(0)
	if err != nil {
		t.Fatal(err)
	}
	return pols
}

// lockedThreads starts n goroutines, each on a thread of its own that no
// other goroutine runs on, and returns their thread ids and what ends them.
func lockedThreads(n int, before func(tid int)) (tids []int, stop func()) {
	var wg sync.WaitGroup
	quit := make(chan struct{})
	ids := make(chan int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			tid := unix.Gettid()
			if before != nil {
				before(tid)
			}
			ids <- tid
			<-quit
		}()
	}
	for i := 0; i < n; i++ {
		tids = append(tids, <-ids)
	}
	return tids, func() { close(quit); wg.Wait() }
}

func TestSetSchedPolicy(t *testing.T) {
	if err := CheckSchedPolicy("fifo"); err == nil {
		t.Fatal("CheckSchedPolicy(fifo): no error")
	}
	if err := SetSchedPolicy("rr"); err == nil {
		t.Fatal("SetSchedPolicy(rr): no error")
	}
	older, stopOlder := lockedThreads(4, nil)
	defer stopOlder()
	if err := SetSchedPolicy(SchedKeep); err != nil {
		t.Fatal(err)
	}
	for tid, p := range threadPolicies(t) {
		if p != unix.SCHED_NORMAL {
			t.Fatalf("SchedKeep: thread %d has policy %d", tid, p)
		}
	}
	if err := SetSchedPolicy(SchedBatch); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := setThreadsPolicy(unix.SCHED_BATCH, unix.SCHED_NORMAL); err != nil {
			t.Error(err)
		}
		for tid, p := range threadPolicies(t) {
			if p == unix.SCHED_BATCH {
				t.Errorf("thread %d still SCHED_BATCH after the test", tid)
			}
		}
	}()
	// Threads the runtime starts afterwards inherit it.
	newer, stopNewer := lockedThreads(4, nil)
	defer stopNewer()
	pols := threadPolicies(t)
	for _, tid := range append(older, newer...) {
		if pols[tid] != unix.SCHED_BATCH {
			t.Errorf("thread %d: policy %d, want SCHED_BATCH (%d)", tid, pols[tid], unix.SCHED_BATCH)
		}
	}
	for tid, p := range pols {
		if p != unix.SCHED_BATCH {
			t.Errorf("thread %d: policy %d, want SCHED_BATCH", tid, p)
		}
	}
}

// A thread the operator put under another policy keeps it, and its nice
// value stays.
func TestSetThreadPolicyKeepsOthers(t *testing.T) {
	tids, stop := lockedThreads(1, nil)
	defer stop()
	tid := tids[0]
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, 5); err != nil {
		t.Fatal(err)
	}
	if err := setThreadPolicy(tid, unix.SCHED_NORMAL, unix.SCHED_BATCH); err != nil {
		t.Fatal(err)
	}
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		t.Fatal(err)
	}
	if a.Policy != unix.SCHED_BATCH || a.Nice != 5 {
		t.Fatalf("after batch: policy %d nice %d, want %d and 5", a.Policy, a.Nice, unix.SCHED_BATCH)
	}
	if err := setThreadPolicy(tid, unix.SCHED_BATCH, unix.SCHED_IDLE); err != nil {
		t.Fatal(err)
	}
	if err := setThreadPolicy(tid, unix.SCHED_NORMAL, unix.SCHED_BATCH); err != nil {
		t.Fatal(err)
	}
	if a, err = unix.SchedGetAttr(tid, 0); err != nil {
		t.Fatal(err)
	}
	if a.Policy != unix.SCHED_IDLE {
		t.Fatalf("a SCHED_IDLE thread got policy %d", a.Policy)
	}
}
