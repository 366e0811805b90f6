package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

func TestCPUMask(t *testing.T) {
	for _, c := range []struct {
		cpus []int
		want string
	}{
		{[]int{0}, "1"},
		{[]int{1}, "2"},
		{[]int{0, 1, 2, 3}, "f"},
		{[]int{31}, "80000000"},
		{[]int{0, 33}, "2,00000001"},
		{[]int{64}, "1,00000000,00000000"},
		{nil, "0"},
	} {
		var s unix.CPUSet
		for _, c := range c.cpus {
			s.Set(c)
		}
		if got := cpuMask(&s); got != c.want {
			t.Errorf("cpuMask(%v) = %q, want %q", c.cpus, got, c.want)
		}
	}
}

// readSysfs reads a file of h's veth end's sysfs directory.
func readSysfs(t *testing.T, h *nstest.Host, name string) string {
	t.Helper()
	var v string
	if err := inSysfs(h, func(dir string) error {
		b, err := os.ReadFile(filepath.Join(dir, name))
		v = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSteer checks the placed rows' receive steering on a rig: every rx
// queue of A's veth steered to the client's CPUs and B's to the server's,
// B's NAPI threaded with its thread on the server's CPU while an XDP
// program is attached in native mode, nothing more in generic mode, and
// everything as it was afterwards.
func TestSteer(t *testing.T) {
	sp, p := placedPair(t, 2)
	rps := "queues/rx-1/rps_cpus"
	beforeA, beforeB := readSysfs(t, p.A, rps), readSysfs(t, p.B, rps)
	restore, err := sp.place(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"queues/rx-0/rps_cpus", rps} {
		if got, want := readSysfs(t, p.A, q), cpuMask(&sp.client); !sameMask(got, want) {
			t.Errorf("A %s = %q, want the client's CPUs %q", q, got, want)
		}
		if got, want := readSysfs(t, p.B, q), cpuMask(&sp.server); !sameMask(got, want) {
			t.Errorf("B %s = %q, want the server's CPU %q", q, got, want)
		}
	}

	// The kernel server: nothing more to place.
	if unplace, err := sp.placed(p, ImplKernel); err != nil {
		t.Fatal(err)
	} else if err := unplace(); err != nil {
		t.Fatal(err)
	}
	// An XDP program makes the veth receive in NAPI, which placed threads.
	x := &XDPDrop{}
	if err := x.Start(envB(p, 2, 1, 64, defaultPort)); err != nil {
		t.Fatal(err)
	}
	unplace, err := sp.placed(p, ImplXsessiond)
	if err != nil {
		x.Stop()
		t.Fatal(err)
	}
	if got := readSysfs(t, p.B, "threaded"); got != "1" {
		t.Errorf("B threaded = %q with the rows placed, want 1", got)
	}
	pids, err := napiThreads(p.B.Link)
	if err != nil || len(pids) == 0 {
		t.Errorf("B's NAPI threads: %v found, %v", pids, err)
	}
	for _, pid := range pids {
		var on unix.CPUSet
		if err := unix.SchedGetaffinity(pid, &on); err != nil {
			t.Errorf("NAPI thread %d: %v", pid, err)
		} else if on != sp.server {
			t.Errorf("NAPI thread %d on CPUs %v, want the server's alone", pid, on)
		}
	}
	if err := unplace(); err != nil {
		t.Error(err)
	}
	if err := unplace(); err != nil { // a second call does nothing
		t.Error(err)
	}
	if got := readSysfs(t, p.B, "threaded"); got != "0" {
		t.Errorf("B threaded = %q after the row, want 0", got)
	}
	if err := x.Stop(); err != nil {
		t.Error(err)
	}
	// In generic mode the program runs after receive packet steering, on
	// the server's CPU already: nothing more to place.
	g := &XDPDrop{generic: true}
	if err := g.Start(envB(p, 2, 1, 64, defaultPort)); err != nil {
		t.Fatal(err)
	}
	if unplace, err := sp.placed(p, ImplXsessiond); err != nil {
		t.Errorf("placed with a generic-mode program: %v", err)
	} else if err := unplace(); err != nil {
		t.Error(err)
	}
	if got := readSysfs(t, p.B, "threaded"); got != "0" {
		t.Errorf("B threaded = %q with a generic-mode program, want 0", got)
	}
	if err := g.Stop(); err != nil {
		t.Error(err)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if got := readSysfs(t, p.A, rps); got != beforeA {
		t.Errorf("A %s = %q after the rows, want %q as before", rps, got, beforeA)
	}
	if got := readSysfs(t, p.B, rps); got != beforeB {
		t.Errorf("B %s = %q after the rows, want %q as before", rps, got, beforeB)
	}
}

// placedPair is the placement with the server on the last CPU and a rig
// of queues queues; it skips on a machine of fewer than two CPUs.
func placedPair(t *testing.T, queues int) (*serverPin, *nstest.Pair) {
	t.Helper()
	nstest.RequirePrivileged(t)
	sp, err := newServerPin(-2)
	if err != nil {
		t.Fatal(err)
	}
	if sp == nil {
		t.Skip("fewer than two CPUs: the rows are not placed")
	}
	return sp, nstest.NewPair(t, nstest.Options{Queues: queues})
}

// sameMask compares two sysfs CPU masks, which the kernel prints zero-padded
// to the machine's CPU count ("02" for "2" on some).
func sameMask(a, b string) bool {
	norm := func(s string) string {
		s = strings.TrimLeft(strings.ReplaceAll(s, ",", ""), "0")
		return s
	}
	return norm(a) == norm(b)
}

// TestPlaceReceive checks a placed receive row: B's receive steered to the
// server's CPU, A's left alone, the generator's thread on the client's
// CPUs, and everything put back after.
func TestPlaceReceive(t *testing.T) {
	sp, p := placedPair(t, 1)
	rps := "queues/rx-0/rps_cpus"
	beforeA, beforeB := readSysfs(t, p.A, rps), readSysfs(t, p.B, rps)
	if r, err := sp.placeReceive(p); err != nil || r() != nil || sp.genCPUs() != nil {
		t.Fatalf("without --place-udp: placeReceive %v, generator CPUs %v", err, sp.genCPUs())
	}
	if got := readSysfs(t, p.B, rps); got != beforeB {
		t.Fatalf("without --place-udp B %s = %q, want %q as before", rps, got, beforeB)
	}
	sp.udp = true
	procs := runtime.GOMAXPROCS(0)
	restore, err := sp.placeReceive(p)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := readSysfs(t, p.B, rps), cpuMask(&sp.server); !sameMask(got, want) {
		t.Errorf("B %s = %q, want the server's CPU %q", rps, got, want)
	}
	if got := readSysfs(t, p.A, rps); got != beforeA {
		t.Errorf("A %s = %q in a receive row, want %q as before", rps, got, beforeA)
	}
	if got := sp.genCPUs(); got == nil || *got != sp.client {
		t.Errorf("generator CPUs %v, want the client's %v", got, sp.client)
	}
	if got := runtime.GOMAXPROCS(0); got != sp.server.Count() {
		t.Errorf("GOMAXPROCS %d in a placed receive row, want the server's CPUs, %d", got, sp.server.Count())
	}

	s := Scenario{Name: "udp64-q1-f1/gen-only", Kind: KindGenOnly, Impl: ImplGenOnly, Payload: 64, Queues: 1, Flows: 1, Rate: 1000}
	_, stop, err := startGen(p, s, otherHostMAC(p.B.MAC), defaultPort, 1, sp.genCPUs())
	if err != nil {
		t.Fatal(err)
	}
	pinned := func() bool { // a thread of this process on the client's CPUs alone
		tids, err := threadIDs()
		if err != nil {
			t.Fatal(err)
		}
		for _, tid := range tids {
			var on unix.CPUSet
			if unix.SchedGetaffinity(tid, &on) == nil && on == sp.client {
				return true
			}
		}
		return false
	}
	found := false
	for range 100 {
		if found = pinned(); found {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Error(err)
	}
	if !found {
		t.Error("no thread on the client's CPUs alone while the generator ran")
	}

	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if got := readSysfs(t, p.B, rps); got != beforeB {
		t.Errorf("B %s = %q after the row, want %q as before", rps, got, beforeB)
	}
	if got := runtime.GOMAXPROCS(0); got != procs {
		t.Errorf("GOMAXPROCS %d after the row, want %d as before", got, procs)
	}
	var none *serverPin
	if none.genCPUs() != nil {
		t.Error("no placement: the generator has CPUs")
	}
	if r, err := none.placeReceive(p); err != nil || r() != nil {
		t.Errorf("no placement: placeReceive %v", err)
	}
}
