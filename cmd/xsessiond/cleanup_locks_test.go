package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestCleanupStaleRemovesLocks: a daemon killed with SIGKILL leaves its
// interface's lock file in the run folder (harmless, a flock, but one per
// container interface it ever served); cleanup --stale removes those no
// daemon holds and says so, and leaves a held one.
func TestCleanupStaleRemovesLocks(t *testing.T) {
	nstest.RequirePrivileged(t)
	xs, _ := binaries(t)
	if err := os.MkdirAll(daemon.DefaultRunDir, 0o755); err != nil {
		t.Fatal(err)
	}
	stale := daemon.LockPath("", 1, 1_000_000+os.Getpid())
	if err := os.WriteFile(stale, []byte("999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(stale)
	held := daemon.LockPath("", 1, 2_000_000+os.Getpid())
	unlock, err := daemon.LockInstance(held)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	out, err := exec.Command(xs, "cleanup", "--stale").CombinedOutput()
	if err != nil {
		t.Fatalf("cleanup --stale: %v\n%s", err, out)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale lock %s is still there (%v); cleanup --stale said:\n%s", stale, err, out)
	}
	if !strings.Contains(string(out), "removed "+stale) {
		t.Errorf("cleanup --stale does not name the lock file it removed:\n%s", out)
	}
	if _, err := os.Stat(held); err != nil {
		t.Errorf("the held lock %s: %v", held, err)
	}
}
