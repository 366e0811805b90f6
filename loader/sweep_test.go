package loader

import (
	"errors"
	"os"
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
	gone := nstest.NewPair(t, nstest.Options{})
	goneID := startKilledChild(t, gone.B, ModeGeneric)
	kept := nstest.NewPair(t, nstest.Options{})
	keptID := startKilledChild(t, kept.B, ModeGeneric)
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	p, err := ebpf.NewProgramFromID(goneID)
	if err != nil {
		t.Fatalf("the killed loader's program, its namespace deleted: %v; want it held by the pinned link", err)
	}
	p.Close()
	rep, err := SweepStale("")
	if err != nil {
		t.Fatal(err)
	}
	dir := netnsPinDir(gone.B)
	if !slices.Contains(rep.Dirs, dir) || rep.Links < 1 || rep.MapPins < 1 {
		t.Fatalf("sweep %+v; want %s among its folders, with a link and map pins", rep, dir)
	}
	if _, err := os.Stat(filepath.Dir(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the namespace's pin folder left: %v", err)
	}
	waitGone(t, goneID)
	if _, err := os.Stat(filepath.Join(netnsPinDir(kept.B), PinLink)); err != nil {
		t.Fatalf("the pinned link of an interface that exists: %v", err)
	}
	if rep, err := SweepStale(""); err != nil || slices.Contains(rep.Dirs, netnsPinDir(kept.B)) {
		t.Fatalf("second sweep %+v, %v", rep, err)
	}
	if _, err := Cleanup(AttachOptions{Interface: kept.B.Link, Netns: netnsPath(kept.B), NetnsName: kept.B.Name}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, keptID)
}
