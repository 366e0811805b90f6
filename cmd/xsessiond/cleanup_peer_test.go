package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// peerUDPSegmentation reports whether h's veth end's UDP segmentation
// offload is on.
func peerUDPSegmentation(t *testing.T, h *nstest.Host) bool {
	t.Helper()
	return h.FeatureOn(t, "tx-udp-segmentation")
}

// TestCleanupRestoresPeerUDPSegmentation: a daemon in generic mode on a
// veth turns the peer's UDP segmentation offload off while it runs; one
// SIGKILLed leaves it off, and `xsessiond cleanup` on its interface turns
// it back on (and says so), as the daemon's own stop would have.
func TestCleanupRestoresPeerUDPSegmentation(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	if !peerUDPSegmentation(t, rig.A) {
		t.Fatal("A's tx-udp-segmentation off before the daemon: nothing to test")
	}
	xs, _ := binaries(t)
	sock := filepath.Join(t.TempDir(), "api.sock")
	d := startProcess(t, xs, "run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	if peerUDPSegmentation(t, rig.A) {
		t.Fatal("A's tx-udp-segmentation still on with the daemon in generic mode on B's veth")
	}
	d.cmd.Process.Kill()
	<-d.exited
	if peerUDPSegmentation(t, rig.A) {
		t.Fatal("A's tx-udp-segmentation on after SIGKILL: nothing to test")
	}
	out, err := exec.Command(xs, "cleanup", "--netns", rig.B.Name, "--iface", rig.B.Link).CombinedOutput()
	t.Logf("cleanup: %s", out)
	if err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "turned the veth peer's tx-udp-segmentation back on") {
		t.Errorf("cleanup did not say it turned the peer's offload back on: %s", out)
	}
	if !peerUDPSegmentation(t, rig.A) {
		t.Error("A's tx-udp-segmentation still off after cleanup")
	}
	out, err = exec.Command(xs, "cleanup", "--netns", rig.B.Name, "--iface", rig.B.Link).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nothing to clean up") {
		t.Errorf("second cleanup: %v: %s", err, out)
	}
}

// TestRunRestoresPeerUDPSegmentationAfterKill: a daemon SIGKILLed leaves
// the veth peer's UDP segmentation offload off; the next daemon on the
// interface takes that over, and its clean stop turns the offload back
// on, as the first one's would have.
func TestRunRestoresPeerUDPSegmentationAfterKill(t *testing.T) {
	rig, xs, run := killedGenericDaemon(t)
	d := startProcess(t, xs, run...)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	if peerUDPSegmentation(t, rig.A) {
		t.Fatal("A's tx-udp-segmentation on with the second daemon running")
	}
	if code := d.stop(t); code != 0 {
		t.Errorf("xsessiond exited %d", code)
	}
	if !peerUDPSegmentation(t, rig.A) {
		t.Error("A's tx-udp-segmentation still off after the second daemon's clean stop")
	}
}

// TestNativeRunRestoresPeerUDPSegmentationAfterKill: a daemon SIGKILLed
// in generic mode leaves the veth peer's UDP segmentation offload off; a
// daemon started next in native mode (which needs it off only while its
// program is attached, as the kernel sees to) turns it back on, so that
// it is on after that daemon's clean stop. Before, it stayed off.
func TestNativeRunRestoresPeerUDPSegmentationAfterKill(t *testing.T) {
	rig, xs, run := killedGenericDaemon(t)
	d := startProcess(t, xs, append(run, "--xdp-mode", "native")...)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	if code := d.stop(t); code != 0 {
		t.Fatalf("the native daemon's stop: exit %d", code)
	}
	if !peerUDPSegmentation(t, rig.A) {
		t.Error("A's tx-udp-segmentation still off after a native daemon ran and stopped")
	}
}

// killedGenericDaemon starts a daemon in generic mode on host B's veth of
// a new rig and SIGKILLs it, which leaves host A's tx-udp-segmentation
// off, and returns the rig, the binary and the daemon's run arguments.
func killedGenericDaemon(t *testing.T) (*nstest.Pair, string, []string) {
	t.Helper()
	rig := nstest.NewPair(t, nstest.Options{})
	if !peerUDPSegmentation(t, rig.A) {
		t.Fatal("A's tx-udp-segmentation off before the daemon: nothing to test")
	}
	xs, _ := binaries(t)
	sock := filepath.Join(t.TempDir(), "api.sock")
	run := []string{"run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock}
	d := startProcess(t, xs, run...)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	d.cmd.Process.Kill()
	<-d.exited
	if peerUDPSegmentation(t, rig.A) {
		t.Fatal("A's tx-udp-segmentation on after SIGKILL: nothing to test")
	}
	return rig, xs, run
}
