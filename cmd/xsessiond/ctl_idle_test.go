package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// startIdleRigDaemon starts the daemon binary on host B's interface of a
// rig, closing control connections with no app that send nothing for
// idle, and returns its control socket.
func startIdleRigDaemon(t *testing.T, idle string) string {
	t.Helper()
	rig := nstest.NewPair(t, nstest.Options{})
	if err := xsktest.DisableTxOffload(rig.A); err != nil {
		t.Fatal(err)
	}
	xs, _ := binaries(t)
	sock := filepath.Join(t.TempDir(), "api.sock")
	d := startProcess(t, xs, "run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock, "--idle-timeout", idle)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	return sock
}

// TestCaptureOutlastsIdleTimeout: a capture runs for its --duration even
// when that is longer than the daemon's control.idle_timeout: the
// capture's connection is not an idle one, and the CLI exits 0 rather
// than saying that the daemon ended the capture. The file it writes is its
// owner's alone.
func TestCaptureOutlastsIdleTimeout(t *testing.T) {
	sock := startIdleRigDaemon(t, "2s")
	xs, _ := binaries(t)
	file := filepath.Join(t.TempDir(), "c.pcapng")
	out, err := exec.Command(xs, "ctl", "--socket", sock, "capture", "--duration", "5s", "-w", file).CombinedOutput()
	if err != nil {
		t.Fatalf("capture --duration 5s with a 2s idle timeout: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "frames captured") {
		t.Errorf("capture printed no count:\n%s", out)
	}
	if fi, err := os.Stat(file); err != nil || fi.Size() == 0 {
		t.Errorf("capture file: %v", err)
	} else if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("capture file mode %v, want -rw------- (it holds every app's payloads)", m)
	}
}

// TestTopOutlastsIdleTimeout: top --once with an --interval longer than
// the daemon's control.idle_timeout prints its frame and exits 0.
func TestTopOutlastsIdleTimeout(t *testing.T) {
	sock := startIdleRigDaemon(t, "2s")
	xs, _ := binaries(t)
	out, err := exec.Command(xs, "ctl", "--socket", sock, "top", "--once", "--interval", "5s").CombinedOutput()
	if err != nil {
		t.Fatalf("top --once --interval 5s with a 2s idle timeout: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "QUEUE") {
		t.Errorf("top printed no frame:\n%s", out)
	}
}
