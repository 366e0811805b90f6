package datapath

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The CPUs the workers run on (Config.CPUs).
//
// On a host with a NIC queue per CPU, a worker belongs on the CPU that
// takes its queue's interrupts, or on one beside it: the frames it reads
// were just written there, and the scheduler cannot move it to a CPU
// another worker or the queue's softirq needs. The operator sets the
// queues' interrupt affinity (/proc/irq/N/smp_affinity_list) and gives
// the daemon the same list, worker q on CPUs[q % len(CPUs)].
//
// A worker runs on a locked OS thread but lets go of it for a moment
// after a sleep that gave gVisor work (worker.run), so the pinning goes
// with the worker, not with a thread: the worker confines each thread it
// locks to its CPU and puts the thread's own mask back before it lets
// the thread go, so no other goroutine of the process ends up confined
// to that CPU. A mask cannot be set from outside for the same reason:
// taskset on a worker's thread would stay behind when the worker moves.

// CheckCPUs reports whether every CPU of cpus is one this process may run
// on (its main thread's affinity mask): New checks Config.CPUs so.
func CheckCPUs(cpus []int) error {
	if len(cpus) == 0 {
		return nil
	}
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(os.Getpid(), &allowed); err != nil {
		return fmt.Errorf("cpus: read this process's CPU mask: %w", err)
	}
	for _, c := range cpus {
		if c < 0 || !allowed.IsSet(c) {
			return fmt.Errorf("cpus: CPU %d is not one this process may run on (%s): %w", c, cpuList(&allowed), ErrInvalidConfig)
		}
	}
	return nil
}

// ParseCPUList reads a list of CPUs as the kernel writes them, "2-5,8",
// keeping its order: the CPUs of Config.CPUs. A CPU listed twice, a range
// that runs backwards and a CPU past the largest the kernel's masks hold
// are errors.
func ParseCPUList(s string) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	var set unix.CPUSet
	limit := len(set) * 64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		switch {
		case err != nil || a < 0 || b < 0:
			return nil, fmt.Errorf("cpus %q: %q is no CPU or range of CPUs (want a list such as 2-5,8): %w", s, part, ErrInvalidConfig)
		case b < a:
			return nil, fmt.Errorf("cpus %q: the range %q runs backwards: %w", s, part, ErrInvalidConfig)
		case b >= limit:
			return nil, fmt.Errorf("cpus %q: CPU %d is past the largest, %d: %w", s, b, limit-1, ErrInvalidConfig)
		}
		for c := a; c <= b; c++ {
			if seen[c] {
				return nil, fmt.Errorf("cpus %q: CPU %d is listed twice: %w", s, c, ErrInvalidConfig)
			}
			seen[c] = true
			out = append(out, c)
		}
	}
	return out, nil
}

// cpuList writes set as the kernel's CPU lists are written: "0-3,6".
func cpuList(set *unix.CPUSet) string {
	var b strings.Builder
	for c, n := 0, len(set)*64; c < n; c++ {
		if !set.IsSet(c) {
			continue
		}
		end := c
		for end+1 < n && set.IsSet(end+1) {
			end++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(c))
		if end > c {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(end))
		}
		c = end
	}
	return b.String()
}

// cpuPin is a worker's pinning to its CPU.
type cpuPin struct {
	cpu    int         // the CPU; -1: not pinned
	pinned bool        // the locked thread is confined to cpu
	warned bool        // a failure to pin was logged
	mask   unix.CPUSet // the locked thread's own mask, put back by unpin
}

// pin confines the calling thread, which the worker has locked, to its
// CPU, keeping the thread's mask for unpin. A failure (a cpuset that
// changed since the Engine started) leaves the worker unpinned and is
// logged once.
func (w *worker) pin() {
	p := &w.cpus
	if p.cpu < 0 {
		return
	}
	var one unix.CPUSet
	one.Set(p.cpu)
	err := unix.SchedGetaffinity(0, &p.mask)
	if err == nil {
		err = unix.SchedSetaffinity(0, &one)
	}
	if err != nil {
		if !p.warned {
			p.warned = true
			w.e.log.Warn("worker runs unpinned", "queue", w.q, "cpu", p.cpu, "err", err)
		}
		w.pinnedCPU.Store(-1)
		return
	}
	p.pinned = true
	w.pinnedCPU.Store(int32(p.cpu))
}

// unpin puts the locked thread's own mask back before the worker lets go
// of the thread.
func (w *worker) unpin() {
	p := &w.cpus
	if !p.pinned {
		return
	}
	p.pinned = false
	if err := unix.SchedSetaffinity(0, &p.mask); err != nil && !p.warned {
		p.warned = true
		w.e.log.Warn("worker's thread keeps its CPU", "queue", w.q, "cpu", p.cpu, "err", err)
	}
}
