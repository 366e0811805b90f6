package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
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

// TestInstanceLockWaitsOutASweep: a lock another holds for a moment (a
// sweep of stale locks, at every daemon's start, takes each free one) is
// no daemon's: a daemon or cleanup taking it waits the moment out, where
// it failed at once, naming the sweeper's pid as a daemon's. One held on
// is still refused.
func TestInstanceLockWaitsOutASweep(t *testing.T) {
	p := LockPath(t.TempDir(), 4026531840, 9003)
	sweep, err := takeInstanceLock(p, 0)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		sweep.release()
	}()
	unlock, err := LockInstance(p)
	if err != nil {
		t.Fatalf("a lock held for 50 ms: %v", err)
	}
	unlock()
	held, err := takeInstanceLock(p, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.release()
	if _, err := LockInstance(p); !errors.Is(err, ErrInstanceRunning) {
		t.Fatalf("a lock held on: %v, want %v", err, ErrInstanceRunning)
	}
}
