package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestSweepStaleLocks: the lock files that no daemon holds (a SIGKILLed
// daemon's: a clean stop removes its own) are removed, a held one and
// files that are not locks are left, and the held lock still holds.
func TestSweepStaleLocks(t *testing.T) {
	dir := t.TempDir()
	stale := LockPath(dir, 4026531840, 9001)
	if err := os.WriteFile(stale, []byte("12345\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	held := LockPath(dir, 4026531840, 9002)
	unlock, err := LockInstance(held)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	other := filepath.Join(dir, "api.sock.other")
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	removed, err := SweepStaleLocks(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{stale}) {
		t.Errorf("removed %q, want just %q", removed, stale)
	}
	for _, p := range []string{held, other} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v (it should be left)", p, err)
		}
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale lock is still there: %v", err)
	}
	if _, err := LockInstance(held); !errors.Is(err, ErrInstanceRunning) {
		t.Errorf("the held lock after the sweep: %v, want %v", err, ErrInstanceRunning)
	}
	// A folder that is not there has nothing stale.
	if removed, err := SweepStaleLocks(filepath.Join(dir, "none")); err != nil || len(removed) > 0 {
		t.Errorf("a missing folder: removed %q, %v", removed, err)
	}
}
