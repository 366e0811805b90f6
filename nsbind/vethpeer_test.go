package nsbind

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// udpSegmentationOn reads tx-udp-segmentation of host h's veth end with
// ethtool, as an operator would.
func udpSegmentationOn(t *testing.T, h *nstest.Host) bool {
	t.Helper()
	return h.FeatureOn(t, "tx-udp-segmentation")
}

// TestNoPeerUDPSegmentation: from host B's namespace, the peer of B's
// veth end, in host A's namespace, has its UDP segmentation offload
// turned off, the rest of its features left alone, and back on by the
// restore; its off state is left as it is (a no-op restore); an
// interface that is no veth is ErrNotVeth.
func TestNoPeerUDPSegmentation(t *testing.T) {
	nstest.RequirePrivileged(t)
	rig := nstest.NewPair(t, nstest.Options{})
	b := openNamed(t, rig.B.Name)
	if !udpSegmentationOn(t, rig.A) {
		t.Fatal("A's tx-udp-segmentation is off at the start")
	}
	featuresOf := func() string {
		out, _ := exec.Command("ip", "netns", "exec", rig.A.Name, "ethtool", "-k", rig.A.Link).CombinedOutput()
		var keep []string
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.Contains(l, "tx-udp-segmentation") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	before := featuresOf()
	restore, err := b.NoPeerUDPSegmentation(rig.B.IfIndex)
	if err != nil {
		t.Fatal(err)
	}
	if udpSegmentationOn(t, rig.A) {
		t.Error("A's tx-udp-segmentation still on")
	}
	if after := featuresOf(); after != before {
		t.Errorf("other features of A's veth changed:\nbefore\n%s\nafter\n%s", before, after)
	}
	// Off already: nothing to restore.
	again, err := b.NoPeerUDPSegmentation(rig.B.IfIndex)
	if err != nil {
		t.Fatal(err)
	}
	if err := again(); err != nil || udpSegmentationOn(t, rig.A) {
		t.Errorf("the restore of a feature found off turned it on (%v)", err)
	}
	// Renamed meanwhile: the restore finds it by its index.
	renamed := *rig.A
	renamed.Link = "veth-a2"
	for _, args := range [][]string{{"link", "set", "dev", rig.A.Link, "down"}, {"link", "set", "dev", rig.A.Link, "name", renamed.Link}, {"link", "set", "dev", renamed.Link, "up"}} {
		if out, err := exec.Command("ip", append([]string{"-n", rig.A.Name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if !udpSegmentationOn(t, &renamed) {
		t.Error("A's tx-udp-segmentation not back on")
	}
	lo, err := b.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.NoPeerUDPSegmentation(lo.Index); !errors.Is(err, ErrNotVeth) {
		t.Errorf("lo: %v, want ErrNotVeth", err)
	}
}

// TestVethPeerBesideStaleNamedFile: a file of /run/netns that is no
// namespace (one `ip netns del` has unmounted and not yet removed, as
// happens while another rig is torn down) is passed over in the search
// for the peer's namespace. Before, the failed netns id query of such a
// file read as id 0, the id of B's peer namespace, and the lookup failed
// with "not a namespace file".
func TestVethPeerBesideStaleNamedFile(t *testing.T) {
	nstest.RequirePrivileged(t)
	rig := nstest.NewPair(t, nstest.Options{})
	b := openNamed(t, rig.B.Name)
	stale := filepath.Join(NamedDir, fmt.Sprintf("0-stale-%d", os.Getpid())) // sorted first
	if err := os.WriteFile(stale, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(stale) })
	restore, err := b.NoPeerUDPSegmentation(rig.B.IfIndex)
	if err != nil {
		t.Fatal(err)
	}
	if udpSegmentationOn(t, rig.A) {
		t.Error("A's tx-udp-segmentation still on")
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
}
