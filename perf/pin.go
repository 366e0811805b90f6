package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// serverPin places the echo and TCP rows as two hosts would be: the
// server process (perf echoserve or perf tcpserve, either implementation)
// on one CPU, the client (this process) on the others. Where both share
// every CPU, the kernel wakes each side's threads on the CPU of the thread
// that woke them (this VM's vCPUs share no cache), so a server's threads
// queue behind the client's, and a wake-up across CPUs costs far more than
// one on the same CPU, which favours whichever server wakes fewer threads
// across CPUs: neither happens between two hosts.
type serverPin struct {
	cpu    int         // the server process's CPU
	server unix.CPUSet // cpu alone
	client unix.CPUSet // this process's CPUs during a row
	all    unix.CPUSet // this process's CPUs otherwise
	procs  int         // GOMAXPROCS otherwise
	// steering is --steer: each host's receive work on its own CPUs
	// (steer.go), and host B's CPU time the server CPU's busy time.
	steering bool
	// udp is --place-udp (with steering): the UDP receive and gen-only
	// rows placed too (placeReceive).
	udp bool
}

// newServerPin returns the placement with the server on cpu (-2: the
// last CPU this process may run on), or nil for cpu -1 and on a machine
// that gives this process fewer than two CPUs.
func newServerPin(cpu int) (*serverPin, error) {
	if cpu == -1 {
		return nil, nil
	}
	var p serverPin
	if err := unix.SchedGetaffinity(0, &p.all); err != nil {
		return nil, fmt.Errorf("server CPU: %w", err)
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
		return nil, fmt.Errorf("--server-cpu %d: not a CPU this process may use", cpu)
	}
	p.cpu = cpu
	p.server.Set(cpu)
	p.client = p.all
	p.client.Clear(cpu)
	p.steering = true
	return &p, nil
}

// place prepares a placed row on rig p: this process on the client's
// CPUs (onClient) and each host's receive work on its own (steer). The
// returned function puts both back. A nil sp does nothing.
func (sp *serverPin) place(p *nstest.Pair) (restore func() error, err error) {
	back, err := sp.onClient()
	if err != nil {
		return nil, err
	}
	unsteer, err := sp.steer(p)
	if err != nil {
		return nil, errors.Join(err, back())
	}
	return func() error { return errors.Join(unsteer(), back()) }, nil
}

// placeReceive places a UDP receive or gen-only row as two hosts would
// be: host B on the server's CPU (its receive by receive packet steering
// on B's veth, and this process, where the receiver under test runs, with
// GOMAXPROCS as many as the server's CPUs), the generators' threads on the
// client's (genCPUs), the one part of host A's in this process. On a veth
// the generator's transmit would otherwise run B's receive (the kernel's
// UDP input, or the XDP program and the AF_XDP copy) in its own softirq,
// so that the generator's CPU carried both hosts' work and the receivers'
// rate was the generator's. The returned function puts it all back. A nil
// sp, or one without --place-udp, does nothing.
func (sp *serverPin) placeReceive(p *nstest.Pair) (restore func() error, err error) {
	if sp == nil || !sp.udp {
		return func() error { return nil }, nil
	}
	procs := runtime.GOMAXPROCS(0)
	back := func() error {
		runtime.GOMAXPROCS(procs)
		return setThreads(&sp.all)
	}
	if err := setThreads(&sp.server); err != nil {
		return nil, errors.Join(err, back())
	}
	runtime.GOMAXPROCS(sp.server.Count())
	s, err := steerHost(p.B, cpuMask(&sp.server))
	if err != nil {
		return nil, errors.Join(err, s.restore(), back())
	}
	return func() error { return errors.Join(s.restore(), back()) }, nil
}

// genCPUs is where a placed receive row's generators run (the client's
// CPUs), nil for anywhere.
func (sp *serverPin) genCPUs() *unix.CPUSet {
	if sp == nil || !sp.udp {
		return nil
	}
	return &sp.client
}

// placed finishes the placement once the server of a row is up: for
// xsessiond (and the XDP_DROP floor), whose XDP program in native mode
// made B's veth receive in NAPI, that NAPI becomes threaded with its
// threads on the server's CPU (threadNAPI). In generic mode the program
// runs in the receive softirq, after receive packet steering, which
// already puts it on the server's CPU. The returned function undoes it; it runs before the server stops.
// A nil sp does nothing.
func (sp *serverPin) placed(p *nstest.Pair, impl string) (restore func() error, err error) {
	if sp == nil || !sp.steering || (impl != ImplXsessiond && impl != ImplXDPDrop) {
		return func() error { return nil }, nil
	}
	native, err := nativeXDP(p.B)
	if err != nil || !native {
		return func() error { return nil }, err
	}
	return sp.threadNAPI(p.B)
}

// nativeXDP reports whether an XDP program runs in native (driver) mode
// on h's veth end.
func nativeXDP(h *nstest.Host) (native bool, err error) {
	err = h.Do(func() error {
		l, err := netlink.LinkByName(h.Link)
		if err != nil {
			return fmt.Errorf("%s: %w", h.Link, err)
		}
		x := l.Attrs().Xdp
		native = x != nil && x.Attached && x.AttachMode == nl.XDP_ATTACHED_DRV
		return nil
	})
	return native, err
}

// cpuIndex returns the server's CPU, -1 for a nil p.
func (p *serverPin) cpuIndex() int {
	if p == nil {
		return -1
	}
	return p.cpu
}

// serverCPUs returns the server's CPU set, nil for a nil p (anywhere).
func (p *serverPin) serverCPUs() *unix.CPUSet {
	if p == nil {
		return nil
	}
	return &p.server
}

// onClient moves every thread of this process off the server's CPU and
// sets GOMAXPROCS to the CPUs left, until the returned function puts both
// back. A nil p does nothing.
func (p *serverPin) onClient() (restore func() error, err error) {
	if p == nil {
		return func() error { return nil }, nil
	}
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
		tids, err := threadIDs()
		if err != nil {
			return err
		}
		changed := false
		for _, tid := range tids {
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

// threadIDs lists the threads of this process.
func threadIDs() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("threads: %w", err)
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
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
