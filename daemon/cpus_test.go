package daemon

import (
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// confinedTo lists the threads of this process whose CPU mask is cpu
// alone.
func confinedTo(t *testing.T, cpu int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var one unix.CPUSet
	one.Set(cpu)
	var tids []int
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var set unix.CPUSet
		if unix.SchedGetaffinity(tid, &set) == nil && set == one {
			tids = append(tids, tid)
		}
	}
	return tids
}

// TestWorkerCPUs: with the interface's CPUs set, the worker's thread is
// confined to its CPU (the stats say which). Through TCP exchanges with
// pauses between them, after each of which the worker lets go of its
// thread for a moment, no thread of the process but the worker's is left
// confined to that CPU, and none is once the daemon has closed.
func TestWorkerCPUs(t *testing.T) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(os.Getpid(), &allowed); err != nil {
		t.Fatal(err)
	}
	cpu := -1
	for c := 0; c < len(allowed)*64; c++ {
		if allowed.IsSet(c) {
			cpu = c
		}
	}
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig), func(o *Config) { o.Datapath.CPUs = []int{cpu} })
	waitFor(t, "the worker's pinning in the stats", 5*time.Second, func() bool {
		q := d.EngineStats().Queues
		return len(q) == 1 && q[0].CPU != nil && *q[0].CPU == cpu
	})
	if allowed.Count() == 1 {
		return // every thread runs on that CPU alone: nothing more to tell apart
	}

	a := attach(t, d, app.Options{Name: "pinned"})
	kc, ac := kernelToApp(t, rig, a, 7310)
	go func() { _, _ = io.Copy(ac, ac) }()
	_ = kc.SetDeadline(time.Now().Add(30 * time.Second))
	sleeps := d.EngineStats().Queues[0].Sleeps
	msg, back := make([]byte, 64), make([]byte, 64)
	seen := 0
	for i := range 60 {
		msg[0] = byte(i)
		if _, err := kc.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(kc, back); err != nil {
			t.Fatal(err)
		}
		if back[0] != byte(i) {
			t.Fatalf("exchange %d: echoed %d", i, back[0])
		}
		time.Sleep(2 * time.Millisecond) // the worker sleeps
		switch tids := confinedTo(t, cpu); len(tids) {
		case 0: // the worker between two threads
		case 1:
			seen++
		default:
			t.Fatalf("after exchange %d, threads %v are confined to CPU %d: one kept the worker's mask", i, tids, cpu)
		}
	}
	if seen == 0 {
		t.Fatalf("no thread was confined to CPU %d", cpu)
	}
	if s := d.EngineStats().Queues[0].Sleeps; s == sleeps {
		t.Fatalf("the worker never slept between the exchanges (%d sleeps)", s)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if tids := confinedTo(t, cpu); len(tids) > 0 {
		t.Fatalf("after close, threads %v are confined to CPU %d", tids, cpu)
	}
}
