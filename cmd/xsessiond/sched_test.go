package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// processPolicies counts the scheduling policies of a process's threads.
func processPolicies(t *testing.T, pid int) map[uint32]int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint32]int{}
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		a, err := unix.SchedGetAttr(tid, 0)
		if err == unix.ESRCH {
			continue
		}
		if err != nil {
			t.Fatalf("thread %d: %v", tid, err)
		}
		out[a.Policy]++
	}
	return out
}

// TestRunSchedPolicy: xsessiond run keeps the policy it was started with
// by default; --sched-policy batch puts every thread of it under
// SCHED_BATCH, the workers' included; a policy it does not know stops it
// with an error naming the flag. Each daemon gets SIGTERM as soon as it
// said it started, and must stop cleanly (exit 0) all the same.
func TestRunSchedPolicy(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	xs, _ := binaries(t)
	for _, tc := range []struct {
		args []string
		want uint32
	}{
		{nil, unix.SCHED_NORMAL},
		{[]string{"--sched-policy", "batch"}, unix.SCHED_BATCH},
	} {
		sock := filepath.Join(t.TempDir(), "api.sock")
		d := startProcess(t, xs, append([]string{"run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock}, tc.args...)...)
		d.waitLine(t, "xsessiond started", 15*time.Second)
		pols := processPolicies(t, d.cmd.Process.Pid)
		if len(pols) != 1 || pols[tc.want] < 2 {
			t.Errorf("%v: thread policies %v (policy: count), want every thread under %d", tc.args, pols, tc.want)
		}
		if code := d.stop(t); code != 0 {
			t.Fatalf("%v: exit %d", tc.args, code)
		}
	}
	bad := startProcess(t, xs, "run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", filepath.Join(t.TempDir(), "api.sock"), "--sched-policy", "fifo")
	bad.waitLine(t, "--sched-policy", 10*time.Second)
	select {
	case <-bad.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("xsessiond run --sched-policy fifo did not exit")
	}
}
