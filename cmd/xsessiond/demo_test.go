package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestDemo runs the quickstart with the datapath.
func TestDemo(t *testing.T) {
	nstest.RequirePrivileged(t)
	var out bytes.Buffer
	if err := runDemo(t.Context(), &out, time.Second, 16); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !bytes.Contains(out.Bytes(), []byte("demo passed")) || !bytes.Contains(out.Bytes(), []byte("rtt p50")) {
		t.Fatalf("demo output:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}

// TestDemoInterrupted: Ctrl-C (or SIGTERM) in the middle of the demo ends
// it through its clean-up, as the README promises the rig goes away as the
// demo ends: both namespaces, the daemon's pins and its lock file are gone
// when it exits, and it says it was interrupted (exit status 1).
func TestDemoInterrupted(t *testing.T) {
	nstest.RequirePrivileged(t)
	xs, _ := binaries(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startProcess(t, xs, "demo", "--duration", "60s")
			rig := p.waitLine(t, "rig: host A ", 30*time.Second)
			m := regexp.MustCompile(`^rig: host A (\S+) .* host B (\S+) `).FindStringSubmatch(rig)
			if m == nil {
				t.Fatalf("rig line %q", rig)
			}
			p.waitLine(t, "client: kernel UDP socket", 30*time.Second)
			p.cmd.Process.Signal(sig)
			select {
			case <-p.exited:
			case <-time.After(15 * time.Second):
				t.Fatalf("the demo did not end within 15 s of %v", sig)
			}
			if code := p.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(p.output(), "demo interrupted") {
				t.Errorf("exit status %d, output:\n%s", code, p.output())
			}
			for _, ns := range m[1:] {
				if _, err := os.Stat(filepath.Join("/run/netns", ns)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("netns %s left behind (%v)", ns, err)
				}
			}
			if _, err := os.Stat(filepath.Join("/sys/fs/bpf/xsessiond", m[2])); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the pins of netns %s left behind (%v)", m[2], err)
			}
		})
	}
}
