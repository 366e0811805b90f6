package daemon

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Scheduling policy of the daemon's process.
//
// Where the daemon shares a CPU with the apps it serves (one CPU for a
// container and its sidecar, a small VM), every signal between them is a
// wake-up on that CPU, and under Linux's normal policy (SCHED_OTHER) the
// woken thread usually preempts the one that woke it: an app that writes
// the replies of 32 connections wakes the worker at the first, and the
// worker runs for that one reply before the app writes the second. Under
// SCHED_BATCH the daemon's threads, once woken, wait for the thread on
// the CPU to block, yield or use up its slice, so the app writes all its
// replies and the worker takes them in one loop; the daemon's own
// hand-overs (worker to gVisor's goroutines) batch the same way. Its
// threads keep their share of the CPU: the policy changes when a woken
// thread runs, not how much.
//
// The price is latency beside any other busy thread: woken by a frame,
// a worker under SCHED_BATCH does not preempt a CPU-bound program on its
// CPU but waits for that program's slice to end. So the default is the
// policy the daemon was started with (SchedKeep), and SchedBatch is for
// a host that gives the daemon and its apps CPUs of their own.
//
// Measured with the daemon in a process of its own beside the app, both
// on one CPU (go run ./perf --quick, four rounds in both orders,
// 2026-12-04): SCHED_BATCH against the normal policy, ratios to the
// kernel of the same run: 32 connections' request/response 0.58–0.66 at
// 1.59–1.84× the kernel's CPU per transaction against 0.52–0.60 at
// 1.81–2.08×, connect/request/close 0.52–0.58 against 0.37–0.53; one
// connection 0.72–0.76 at 2.73–3.60× against 0.73–0.80 at 2.65–3.34×;
// bulk and UDP within their spread. The echo at 10,000/s with a CPU-bound
// thread on the server's CPU: p50 1.62–1.66 ms under SCHED_BATCH,
// 0.32–0.36 ms under the normal policy, the kernel's 0.22–0.27 (docs/perf,
// "A CPU shared with a busy program").

// The values of SetSchedPolicy's policy (xsessiond run --sched-policy).
const (
	// SchedKeep leaves the threads the policy the process started with:
	// the default.
	SchedKeep = "keep"
	// SchedBatch sets SCHED_BATCH on every thread of the process that has
	// the normal policy.
	SchedBatch = "batch"
)

// CheckSchedPolicy reports whether policy is one SetSchedPolicy takes
// ("" is SchedKeep).
func CheckSchedPolicy(policy string) error {
	switch policy {
	case SchedBatch, SchedKeep, "":
		return nil
	}
	return fmt.Errorf("scheduling policy %q: want %s or %s", policy, SchedBatch, SchedKeep)
}

// SetSchedPolicy gives every thread of this process under the normal
// policy the scheduling policy named (SchedBatch), or leaves them as they
// are (SchedKeep or ""); a thread under another policy (a real-time one, or
// SCHED_IDLE, that the daemon was started with) keeps it. A
// policy is a thread's, and Go runs any goroutine on any of its threads,
// so it is the whole process's: set it only in a process that is the
// daemon's alone (xsessiond run), not in an app that embeds the daemon.
// Threads the runtime starts later inherit it from the thread that
// starts them. Setting SCHED_BATCH needs no privilege.
func SetSchedPolicy(policy string) error {
	if err := CheckSchedPolicy(policy); err != nil {
		return err
	}
	if policy != SchedBatch {
		return nil // SchedKeep
	}
	return setThreadsPolicy(unix.SCHED_NORMAL, unix.SCHED_BATCH)
}

// setThreadsPolicy gives every thread of the process that has the policy
// from the policy to instead; one with another policy (given by the
// operator: chrt, a real-time policy) keeps it. A thread started while
// the list is read inherits the policy of the thread that started it,
// which may not have had it yet, so the list is read again until a pass
// finds no thread it had not looked at.
func setThreadsPolicy(from, to int) error {
	seen := map[int]bool{}
	for pass := 0; pass < 10; pass++ {
		pols, err := ThreadPolicies(0)
		if err != nil {
			return fmt.Errorf("scheduling policy: %w", err)
		}
		fresh := 0
		for tid, pol := range pols {
			if seen[tid] {
				continue
			}
			seen[tid] = true
			fresh++
			if pol != uint32(from) {
				continue
			}
			if err := setThreadPolicy(tid, from, to); err != nil && err != unix.ESRCH { // ESRCH: it has exited
				return fmt.Errorf("scheduling policy of thread %d: %w", tid, err)
			}
		}
		if fresh == 0 {
			return nil
		}
	}
	return fmt.Errorf("scheduling policy: threads kept starting while it was set")
}

// setThreadPolicy gives one thread the policy to if it has the policy
// from, keeping its nice value (sched_setattr(2) sets both).
func setThreadPolicy(tid, from, to int) error {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return err
	}
	if a.Policy != uint32(from) {
		return nil
	}
	a.Policy, a.Flags = uint32(to), 0
	return unix.SchedSetAttr(tid, a, 0)
}

// ThreadPolicies returns the scheduling policy (a unix.SCHED_* value) of
// each thread of process pid (0: this one) by thread id: what chrt -p
// tells of each. A thread that exits while they are read is left out.
func ThreadPolicies(pid int) (map[int]uint32, error) {
	dir := "/proc/self/task"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid) + "/task"
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[int]uint32{}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		a, err := unix.SchedGetAttr(tid, 0)
		if err == unix.ESRCH {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("thread %d: %w", tid, err)
		}
		out[tid] = a.Policy
	}
	return out, nil
}
