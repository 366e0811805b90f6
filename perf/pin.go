package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// echoPin places the echo rows as two hosts would be: the echo server
// process (either implementation) on one CPU, the client (this process)
// on the others. Both share the machine's CPUs otherwise, and then the
// kernel keeps waking the server's threads on the CPU where the client's
// threads queue, and the client's where the server's do.
type echoPin struct {
	server unix.CPUSet // the echo server process's CPU
	client unix.CPUSet // this process's CPUs during an echo row
	all    unix.CPUSet // this process's CPUs otherwise
	procs  int         // GOMAXPROCS otherwise
}

// newEchoPin returns the placement with the echo server on cpu (-2: the
// last CPU this process may run on), or nil for cpu -1 and on a machine
// that gives this process fewer than two CPUs.
func newEchoPin(cpu int) (*echoPin, error) {
	if cpu == -1 {
		return nil, nil
	}
	var p echoPin
	if err := unix.SchedGetaffinity(0, &p.all); err != nil {
		return nil, fmt.Errorf("echo CPU: %w", err)
	}
	if p.all.Count() < 2 {
		return nil, nil
	}
	if cpu == -2 {
		for c := range len(p.all) * 64 {
			if p.all.IsSet(c) {
				cpu = c
			}
		}
	}
	if cpu < 0 || !p.all.IsSet(cpu) {
		return nil, fmt.Errorf("--echo-cpu %d: not a CPU this process may use", cpu)
	}
	p.server.Set(cpu)
	p.client = p.all
	p.client.Clear(cpu)
	return &p, nil
}

// cpu returns the server's CPU.
func (p *echoPin) cpu() int {
	for c := range len(p.server) * 64 {
		if p.server.IsSet(c) {
			return c
		}
	}
	return -1
}

// onClient moves every thread of this process off the server's CPU and
// sets GOMAXPROCS to the CPUs left, until the returned function puts both
// back.
func (p *echoPin) onClient() (restore func() error, err error) {
	p.procs = runtime.GOMAXPROCS(0)
	if err := setThreads(&p.client); err != nil {
		return nil, errors.Join(err, setThreads(&p.all))
	}
	runtime.GOMAXPROCS(p.client.Count())
	return func() error {
		runtime.GOMAXPROCS(p.procs)
		return setThreads(&p.all)
	}, nil
}

// setThreads sets the CPU affinity of every thread of this process. A
// thread made meanwhile takes its maker's, set already or set here.
func setThreads(set *unix.CPUSet) error {
	for range 3 { // a thread that came between the listing and the sets
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("threads: %w", err)
		}
		changed := false
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			var cur unix.CPUSet
			if unix.SchedGetaffinity(tid, &cur) == nil && cur == *set {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("thread %d: %w", tid, err)
			}
			changed = true
		}
		if !changed {
			return nil
		}
	}
	return nil
}

// startOn runs start (which forks a process) on a thread that runs on
// cpus meanwhile: the process inherits them, and its Go runtime sizes
// GOMAXPROCS by them. The thread's own CPUs are put back after.
func startOn(cpus *unix.CPUSet, start func() error) error {
	if cpus == nil {
		return start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var was unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		return fmt.Errorf("start on CPUs: %w", err)
	}
	if err := unix.SchedSetaffinity(0, cpus); err != nil {
		return fmt.Errorf("start on CPUs: %w", err)
	}
	err := start()
	return errors.Join(err, unix.SchedSetaffinity(0, &was))
}
