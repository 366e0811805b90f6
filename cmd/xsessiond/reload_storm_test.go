package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopAfterReloadStorm: a SIGTERM that comes while SIGHUPs queue up
// behind a reload still stops the daemon (cleanly: it says it stops and
// detaches), as a burst of reloads from a config manager followed by a
// stop from systemd would send them.
func TestStopAfterReloadStorm(t *testing.T) {
	rig, xs, sock, cfg := configRig(t)
	var conf strings.Builder
	fmt.Fprintf(&conf, "socket: %s\ninterfaces:\n  - name: %s\n    netns: %s\nnamespaces:\n", sock, rig.B.Link, rig.B.Name)
	// Enough namespaces that a reload takes a while.
	for i := range 64 {
		fmt.Fprintf(&conf, "  - id: n%d\n    secret: %d\n    iface: %s\n    netns: %s\n", i, i+1, rig.B.Link, rig.B.Name)
	}
	if err := os.WriteFile(cfg, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startProcess(t, xs, "run", "--config", cfg)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	// Apart enough that each is delivered on its own, not merged
	// with the one before while pending.
	for range 32 {
		d.cmd.Process.Signal(syscall.SIGHUP)
		time.Sleep(time.Millisecond)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("the daemon did not stop within 10 s of a SIGTERM sent after 32 SIGHUPs")
	}
	if !strings.Contains(d.output(), "msg=stopping signal=terminated") {
		t.Errorf("the daemon did not say it stopped:\n%s", d.output())
	}
	if xdpAttachedTo(t, rig.B, rig.B.Link) {
		t.Errorf("an XDP program is still attached to %s after the stop", rig.B.Link)
	}
}
