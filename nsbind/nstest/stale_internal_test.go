package nstest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vishvananda/netns"
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

// TestReapStale: the rig namespaces of a process that is gone are removed
// when a rig is next made, and so is such a name left as a plain file;
// those of a live process (pid 1 here) and names not of a rig stay.
func TestReapStale(t *testing.T) {
	RequirePrivileged(t)
	// No process has a pid above the kernel's largest pid_max (2^22).
	dead := "xs4194305-1-a"
	alive := "xs1-1-b"
	other := "xs-not-a-rig"
	for _, name := range []string{dead, alive, other} {
		ns, err := newNamedNS(name)
		if err != nil {
			t.Fatal(err)
		}
		ns.Close()
		t.Cleanup(func() { netns.DeleteNamed(name) })
	}
	// A dead process's name no namespace is bound to: a plain file.
	deadFile := "xs4194305-2-b"
	if err := os.WriteFile(filepath.Join(netnsDir, deadFile), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(filepath.Join(netnsDir, deadFile)) })
	reapOnce = sync.Once{}
	reapStale()
	if _, err := os.Lstat(filepath.Join(netnsDir, deadFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s (pid gone, a plain file): still there (%v)", deadFile, err)
	}
	if _, err := os.Lstat(filepath.Join(netnsDir, dead)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s (pid gone): still there (%v)", dead, err)
	}
	for _, name := range []string{alive, other} {
		if _, err := os.Lstat(filepath.Join(netnsDir, name)); err != nil {
			t.Errorf("%s: %v, want it left", name, err)
		}
	}
}
