package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// Steering each host's network work to its own CPUs (the placed rows).
//
// A veth does its receiver's work on the sender's CPU: a frame one end
// transmits is taken up by the other end's stack in a softirq of the CPU
// that sent it. With the server placed on one CPU and the client on the
// other, that put host A's TCP on host B's CPU whenever B sent: B's
// acknowledgements made A's TCP send its next segments from B's CPU, and
// in the bulk receive row half of B's CPU was softirq, most of it A's.
// It also put B's receive path on A's CPU whenever A sent: the kernel
// server's IP and TCP, or the XDP program and the AF_XDP copy of
// xsessiond's, ran in A's transmit. Two hosts do neither.
//
// So a placed row steers each host's receive work to its own CPUs, as a
// NIC's interrupt would land it there:
//   - Receive packet steering (rps_cpus of every rx queue) on A's veth to
//     the client's CPUs and on B's veth to the server's, for what the
//     kernel stack receives (the kernel server's requests, A's replies and
//     acknowledgements).
//   - For xsessiond, B's veth NAPI threaded (its sysfs "threaded"), each
//     NAPI thread on the server's CPU (threadNAPI), for what XDP takes:
//     with the XDP program attached, a veth receives in NAPI, which RPS
//     does not move; a threaded NAPI runs its polls, the XDP program and
//     the AF_XDP copy in a kernel thread, which can be placed.
//
// Host B's CPU time is then all of the server CPU's busy time (/proc/stat),
// not the server process's alone: the kernel server's IP and TCP run in
// softirqs there, and xsessiond's NAPI in a kernel thread.

// hostSteer is one host's saved receive steering, put back by restore.
type hostSteer struct {
	h   *nstest.Host
	rps map[string]string // rx queue -> rps_cpus before
}

// steer sets the rows' receive packet steering on p's hosts and returns
// what puts it back. A nil sp (no placement), or one without --steer,
// does nothing.
func (sp *serverPin) steer(p *nstest.Pair) (restore func() error, err error) {
	if sp == nil || !sp.steering {
		return func() error { return nil }, nil
	}
	var done []*hostSteer
	restore = func() error {
		var errs []error
		for _, s := range done {
			errs = append(errs, s.restore())
		}
		return errors.Join(errs...)
	}
	for _, hs := range []struct {
		h    *nstest.Host
		cpus *unix.CPUSet
	}{{p.A, &sp.client}, {p.B, &sp.server}} {
		s, err := steerHost(hs.h, cpuMask(hs.cpus))
		if s != nil {
			done = append(done, s)
		}
		if err != nil {
			return nil, errors.Join(err, restore())
		}
	}
	return restore, nil
}

// steerHost sets rps_cpus of every rx queue of h's veth end to mask; it
// returns what was there before (also on a partial failure, so that it
// can be put back).
func steerHost(h *nstest.Host, mask string) (*hostSteer, error) {
	s := &hostSteer{h: h, rps: map[string]string{}}
	err := inSysfs(h, func(dir string) error {
		queues, err := filepath.Glob(filepath.Join(dir, "queues", "rx-*", "rps_cpus"))
		if err != nil || len(queues) == 0 {
			return fmt.Errorf("%s: no rps_cpus in sysfs (a kernel without CONFIG_RPS?); --steer=false measures without steering", h.Link)
		}
		for _, q := range queues {
			old, err := swapSysfs(q, mask)
			if err != nil {
				return err
			}
			s.rps[filepath.Base(filepath.Dir(q))] = old
		}
		return nil
	})
	return s, err
}

// restore puts back what steerHost changed.
func (s *hostSteer) restore() error {
	return inSysfs(s.h, func(dir string) error {
		var errs []error
		for q, old := range s.rps {
			if _, err := swapSysfs(filepath.Join(dir, "queues", q, "rps_cpus"), old); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
}

// threadNAPI makes the NAPI of h's veth end threaded and puts its threads
// on the server's CPU. A veth has NAPI only while an XDP program is
// attached (the kernel refuses "threaded" otherwise), so this runs once
// the server is up, and the returned function, which puts "threaded"
// back (once, however often it is called), runs before it stops: with
// "threaded" left set, the NAPI of the next XDP program would be threaded
// from the start. A nil sp does nothing.
func (sp *serverPin) threadNAPI(h *nstest.Host) (restore func() error, err error) {
	if sp == nil {
		return func() error { return nil }, nil
	}
	var old string
	if err := inSysfs(h, func(dir string) (err error) {
		old, err = swapSysfs(filepath.Join(dir, "threaded"), "1")
		return err
	}); err != nil {
		return nil, fmt.Errorf("%s: threaded NAPI: %w; --steer=false measures without steering", h.Link, err)
	}
	var once sync.Once
	restore = func() (err error) {
		once.Do(func() {
			err = inSysfs(h, func(dir string) error {
				_, err := swapSysfs(filepath.Join(dir, "threaded"), old)
				return err
			})
		})
		return err
	}
	n, err := sp.pinNAPI(h.Link)
	if err == nil && n == 0 {
		err = fmt.Errorf("%s: no NAPI thread to place (the XDP program's receive would run on the client's CPU); --steer=false measures without steering", h.Link)
	}
	if err != nil {
		return nil, errors.Join(err, restore())
	}
	return restore, nil
}

// swapSysfs writes val to the sysfs file path and returns what it held.
func swapSysfs(path, val string) (old string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(val), 0); err != nil {
		return "", fmt.Errorf("write %q to %s: %w", val, path, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// inSysfs runs fn with the sysfs directory of h's veth end. A sysfs shows
// the network devices of the namespace it was mounted from, so fn runs on
// a thread of its own, in a mount namespace of its own, in h's network
// namespace, with a sysfs mounted there; the thread is not given back to
// the runtime (it ends with its goroutine).
func inSysfs(h *nstest.Host, fn func(dir string) error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("sysfs of %s: unshare mount namespace: %w", h.Name, err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return fmt.Errorf("sysfs of %s: private mounts: %w", h.Name, err)
			}
			if err := netns.Set(h.NS); err != nil {
				return fmt.Errorf("sysfs of %s: enter namespace: %w", h.Name, err)
			}
			dir, err := os.MkdirTemp("", "xs-perf-sysfs-")
			if err != nil {
				return err
			}
			defer os.Remove(dir)
			if err := unix.Mount("sysfs", dir, "sysfs", 0, ""); err != nil {
				return fmt.Errorf("sysfs of %s: mount: %w", h.Name, err)
			}
			defer unix.Unmount(dir, unix.MNT_DETACH)
			return fn(filepath.Join(dir, "class", "net", h.Link))
		}()
	}()
	return <-errc
}

// cpuMask formats set as a sysfs CPU mask: 32-bit hex words, most
// significant first, separated by commas ("2", "ffffffff,00000001").
func cpuMask(set *unix.CPUSet) string {
	n := len(set) * 64
	words := make([]uint32, (n+31)/32)
	for c := range n {
		if set.IsSet(c) {
			words[c/32] |= 1 << (c % 32)
		}
	}
	last := 0
	for i, w := range words {
		if w != 0 {
			last = i
		}
	}
	var b strings.Builder
	for i := last; i >= 0; i-- {
		if i == last {
			fmt.Fprintf(&b, "%x", words[i])
		} else {
			fmt.Fprintf(&b, ",%08x", words[i])
		}
	}
	return b.String()
}

// pinNAPI puts every NAPI thread of the veth named link (threads named
// "napi/LINK-ID", their names cut to 15 bytes) on the server's CPU, and
// returns how many it found. B's NAPI threads exist while the XDP program
// is attached, so this runs once the server is up. A nil sp does nothing.
func (sp *serverPin) pinNAPI(link string) (int, error) {
	if sp == nil {
		return 0, nil
	}
	pids, err := napiThreads(link)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, pid := range pids {
		if err := unix.SchedSetaffinity(pid, &sp.server); err != nil {
			if errors.Is(err, unix.ESRCH) {
				continue
			}
			return n, fmt.Errorf("NAPI thread %d of %s: %w", pid, link, err)
		}
		n++
	}
	return n, nil
}

// napiThreads lists the kernel threads named "napi/LINK-ID" (names are
// cut to 15 bytes): the NAPI threads of the veths named link.
func napiThreads(link string) ([]int, error) {
	prefix := "napi/" + link + "-"
	if len(prefix) > 15 {
		prefix = prefix[:15]
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(comm)), prefix) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}
