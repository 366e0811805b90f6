package main

import (
	"bytes"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// threadSets returns the CPU affinity of each thread of this process.
func threadSets(t *testing.T) map[int]unix.CPUSet {
	t.Helper()
	tids, err := threadIDs()
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]unix.CPUSet{}
	for _, tid := range tids {
		var s unix.CPUSet
		if unix.SchedGetaffinity(tid, &s) == nil {
			out[tid] = s
		}
	}
	return out
}

// TestServerPin checks the echo and TCP rows' placement: while the client's side is
// on, every thread of this process is off the server's CPU and GOMAXPROCS
// counts the CPUs left; a process started with startOn runs on the
// server's CPU alone; afterwards both are as they were.
func TestServerPin(t *testing.T) {
	if p, err := newServerPin(-1); p != nil || err != nil {
		t.Fatalf("newServerPin(-1) = %v, %v; want no placement", p, err)
	}
	if _, err := newServerPin(1 << 20); err == nil {
		t.Fatal("a CPU this process may not use was accepted")
	}
	p, err := newServerPin(-2)
	if err != nil {
		t.Fatal(err)
	}
	if p == nil {
		t.Skip("fewer than two CPUs: the rows are not placed")
	}
	procs := runtime.GOMAXPROCS(0)
	restore, err := p.onClient()
	if err != nil {
		t.Fatal(err)
	}
	for tid, s := range threadSets(t) {
		if s != p.client {
			t.Errorf("thread %d on %v, want the client's CPUs", tid, s)
		}
	}
	if got := runtime.GOMAXPROCS(0); got != p.client.Count() {
		t.Errorf("GOMAXPROCS %d on the client's side, want %d", got, p.client.Count())
	}
	var out bytes.Buffer
	cmd := exec.Command("cat", "/proc/self/status")
	cmd.Stdout = &out
	if err := startOn(&p.server, cmd.Start); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	want := "Cpus_allowed_list:\t" + strconv.Itoa(p.cpu)
	if !strings.Contains(out.String(), want+"\n") {
		t.Errorf("the started process's status has no %q:\n%s", want, out.String())
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	for tid, s := range threadSets(t) {
		if s != p.all {
			t.Errorf("thread %d on %v after the rows, want every CPU it had", tid, s)
		}
	}
	if got := runtime.GOMAXPROCS(0); got != procs {
		t.Errorf("GOMAXPROCS %d after the rows, want %d", got, procs)
	}
}
