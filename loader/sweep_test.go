package loader

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestSweepStale: a loader killed in a namespace that is then deleted
// leaves pins that keep its program in the kernel; SweepStale removes them
// and the program is freed. The pins of a killed loader whose interface is
// still there stay, for Cleanup (or a new daemon's takeover).
func TestSweepStale(t *testing.T) {
	// A pin root of the test's own: xsessiond run sweeps the default one
	// as it starts, and other packages' tests start it meanwhile.
	root := filepath.Join(BPFFSPath, fmt.Sprintf("xsessiond-sweep-test-%d", os.Getpid()))
	t.Cleanup(func() { os.RemoveAll(root) })
	gone := nstest.NewPair(t, nstest.Options{})
	goneID := startKilledChildAt(t, gone.B, ModeGeneric, root)
	kept := nstest.NewPair(t, nstest.Options{})
	keptID := startKilledChildAt(t, kept.B, ModeGeneric, root)
	pinDir := func(h *nstest.Host) string { return filepath.Join(root, h.Name, h.Link) }
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	p, err := ebpf.NewProgramFromID(goneID)
	if err != nil {
		t.Fatalf("the killed loader's program, its namespace deleted: %v; want it held by the pinned link", err)
	}
	p.Close()
	rep, err := SweepStale(root)
	if err != nil {
		t.Fatal(err)
	}
	dir := pinDir(gone.B)
	if !slices.Contains(rep.Dirs, dir) || rep.Links < 1 || rep.MapPins < 1 {
		t.Fatalf("sweep %+v; want %s among its folders, with a link and map pins", rep, dir)
	}
	if _, err := os.Stat(filepath.Dir(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the namespace's pin folder left: %v", err)
	}
	waitGone(t, goneID)
	if _, err := os.Stat(filepath.Join(pinDir(kept.B), PinLink)); err != nil {
		t.Fatalf("the pinned link of an interface that exists: %v", err)
	}
	if rep, err := SweepStale(root); err != nil || slices.Contains(rep.Dirs, pinDir(kept.B)) {
		t.Fatalf("second sweep %+v, %v", rep, err)
	}
	if _, err := Cleanup(AttachOptions{Interface: kept.B.Link, Netns: netnsPath(kept.B), NetnsName: kept.B.Name, PinRoot: root}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, keptID)
}

// TestSweepKeepsRenamed: the pins of an interface renamed since its
// program was attached stay: the folder is under its old name, but the
// pinned link is still on it. Once the interface is deleted they go.
func TestSweepKeepsRenamed(t *testing.T) {
	root := filepath.Join(BPFFSPath, fmt.Sprintf("xsessiond-sweep-rename-test-%d", os.Getpid()))
	t.Cleanup(func() { os.RemoveAll(root) })
	p := nstest.NewPair(t, nstest.Options{})
	id := startKilledChildAt(t, p.B, ModeGeneric, root)
	dir := filepath.Join(root, p.B.Name, p.B.Link)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", p.B.Name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("link", "set", "dev", p.B.Link, "down")
	ip("link", "set", "dev", p.B.Link, "name", "xsrenamed1")
	rep, err := SweepStale(root)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(rep.Dirs, dir) {
		t.Fatalf("sweep %+v took the renamed interface's pins", rep)
	}
	if _, err := os.Stat(filepath.Join(dir, PinLink)); err != nil {
		t.Fatalf("the renamed interface's pinned link: %v", err)
	}
	ip("link", "del", "xsrenamed1")
	if rep, err := SweepStale(root); err != nil || !slices.Contains(rep.Dirs, dir) {
		t.Fatalf("sweep after the interface was deleted: %+v, %v; want %s removed", rep, err, dir)
	}
	waitGone(t, id)
}
