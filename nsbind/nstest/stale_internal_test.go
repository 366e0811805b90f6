package nstest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestPairSkipsStaleName: a namespace name this process is about to use,
// left under /run/netns by an earlier process of the same pid, is skipped:
// the rig comes up under the next name, and the stale entry is left alone.
func TestPairSkipsStaleName(t *testing.T) {
	RequirePrivileged(t)
	stale := fmt.Sprintf("xs%d-%d-a", os.Getpid(), rigSeq.Load()+1)
	path := filepath.Join(netnsDir, stale)
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	p, err := NewPairNoTest(Options{})
	if err != nil {
		t.Fatalf("rig with a stale namespace name in the way: %v", err)
	}
	defer p.Close()
	if p.A.Name == stale {
		t.Fatalf("rig took the stale name %s", stale)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale entry %s: %v", stale, err)
	}
}
