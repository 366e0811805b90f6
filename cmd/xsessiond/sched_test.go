package main

import (
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

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
		byThread, err := daemon.ThreadPolicies(d.cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		pols := map[uint32]int{} // policy: threads
		for _, p := range byThread {
			pols[p]++
		}
		if len(pols) != 1 || pols[tc.want] < 2 {
			t.Errorf("%v: thread policies %v (policy: threads), want every thread under %d", tc.args, pols, tc.want)
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
