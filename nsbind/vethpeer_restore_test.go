package nsbind

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// ipRun runs ip with args and fails the test when it fails.
func ipRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// ethtoolRun runs ethtool with args in named namespace ns.
func ethtoolRun(t *testing.T, ns string, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "ethtool"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ethtool %s in %s: %v: %s", strings.Join(args, " "), ns, err, out)
	}
}

// extraNamespace adds a named namespace and deletes it when the test ends.
func extraNamespace(t *testing.T, name string) string {
	t.Helper()
	exec.Command("ip", "netns", "del", name).Run()
	ipRun(t, "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

// udpSegmentationOf reads tx-udp-segmentation of link in named namespace ns
// with ethtool.
func udpSegmentationOf(t *testing.T, ns, link string) bool {
	t.Helper()
	return udpSegmentationOn(t, &nstest.Host{Name: ns, Link: link})
}

// TestPeerUDPSegmentationRestoreFollowsMovedPeer: the peer is moved into
// another namespace while its offload is off, and a new device takes its
// index in the namespace it left. The restore turns the offload of the
// moved peer back on and leaves the newcomer, which has the same index
// in the old namespace, alone.
func TestPeerUDPSegmentationRestoreFollowsMovedPeer(t *testing.T) {
	nstest.RequirePrivileged(t)
	rig := nstest.NewPair(t, nstest.Options{})
	b := openNamed(t, rig.B.Name)
	restore, err := b.NoPeerUDPSegmentation(rig.B.IfIndex)
	if err != nil {
		t.Fatal(err)
	}
	if udpSegmentationOf(t, rig.A.Name, rig.A.Link) {
		t.Fatal("A's tx-udp-segmentation still on")
	}
	c := extraNamespace(t, rig.A.Name+"c")
	ipRun(t, "-n", rig.A.Name, "link", "set", "dev", rig.A.Link, "netns", c)
	// A newcomer in A at the peer's old index, its offload off by its
	// owner's choice.
	ipRun(t, "-n", rig.A.Name, "link", "add", "name", "other0", "index", strconv.Itoa(rig.A.IfIndex), "type", "veth", "peer", "name", "other1")
	ethtoolRun(t, rig.A.Name, "-K", "other0", "tx-udp-segmentation", "off")

	rerr := restore()
	if udpSegmentationOf(t, rig.A.Name, "other0") {
		t.Errorf("the restore turned on tx-udp-segmentation of other0, a device that took the peer's old index in %s", rig.A.Name)
	}
	if !udpSegmentationOf(t, c, rig.A.Link) {
		t.Errorf("the peer, moved to %s, still has tx-udp-segmentation off after the restore (restore: %v)", c, rerr)
	}
	if rerr != nil {
		t.Errorf("restore: %v", rerr)
	}
}

// TestPeerUDPSegmentationKeepsNoPeerNamespace: while the peer's offload is
// off, nothing holds the peer's namespace open, so that deleting that
// namespace (a container that stops) deletes the veth pair as it does
// without the daemon. The restore then reports the interface missing.
func TestPeerUDPSegmentationKeepsNoPeerNamespace(t *testing.T) {
	nstest.RequirePrivileged(t)
	rig := nstest.NewPair(t, nstest.Options{})
	b := openNamed(t, rig.B.Name)
	x := extraNamespace(t, rig.B.Name+"x")
	ipRun(t, "-n", rig.B.Name, "link", "add", "name", "vx0", "type", "veth", "peer", "name", "vx1", "netns", x)
	vx0, err := b.InterfaceByName("vx0")
	if err != nil {
		t.Fatal(err)
	}
	fds := openFDs(t)
	restore, err := b.NoPeerUDPSegmentation(vx0.Index)
	if err != nil {
		t.Fatal(err)
	}
	if udpSegmentationOf(t, x, "vx1") {
		t.Fatal("vx1's tx-udp-segmentation still on")
	}
	if now := openFDs(t); now != fds {
		t.Errorf("%d descriptors open while the offload is off, %d before", now, fds)
	}
	ipRun(t, "netns", "del", x)
	deadline := time.Now().Add(testTimeout)
	for {
		_, err := b.InterfaceByName("vx0")
		if errors.Is(err, ErrNoInterface) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vx0 still in %s %v after its peer's namespace was deleted (%v): the namespace is held open", rig.B.Name, testTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := restore(); !errors.Is(err, ErrNoInterface) {
		t.Errorf("restore of a deleted peer: %v, want ErrNoInterface", err)
	}
	if now := openFDs(t); now != fds {
		t.Errorf("%d descriptors open after the restore, %d before", now, fds)
	}
}

// openFDs counts the process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// peerHelperEnv names, for the helper process, the namespace, veth index
// and note folder of TestPeerUDPSegmentationAfterOwnerDied.
const peerHelperEnv = "XSESSIOND_NSBIND_PEER_HELPER"

// TestPeerUDPSegmentationHelperProcess is the process of
// TestPeerUDPSegmentationAfterOwnerDied that turns the peer's offload off
// and ends without the restore, as a killed daemon does.
func TestPeerUDPSegmentationHelperProcess(t *testing.T) {
	v := os.Getenv(peerHelperEnv)
	if v == "" {
		t.Skip("run by TestPeerUDPSegmentationAfterOwnerDied")
	}
	f := strings.Fields(v)
	idx, _ := strconv.Atoi(f[1])
	peerNoteDir = f[2]
	ns, err := OpenNamed(f[0])
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(2)
	}
	if _, err := ns.NoPeerUDPSegmentation(idx); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(2)
	}
	os.Exit(0)
}

// TestPeerUDPSegmentationAfterOwnerDied: a process turns the peer's
// offload off and ends without turning it back on (killed, a crash). The
// next NoPeerUDPSegmentation on that veth finds it off, and its restore
// turns it on all the same, as the first process's would have; unless
// the peer's MAC changed meanwhile, which makes it another device whose
// offload is left as it is.
func TestPeerUDPSegmentationAfterOwnerDied(t *testing.T) {
	nstest.RequirePrivileged(t)
	for _, newMAC := range []bool{false, true} {
		t.Run("newMAC="+strconv.FormatBool(newMAC), func(t *testing.T) {
			rig := nstest.NewPair(t, nstest.Options{})
			b := openNamed(t, rig.B.Name)
			dir := t.TempDir()
			saved := peerNoteDir
			peerNoteDir = dir
			t.Cleanup(func() { peerNoteDir = saved })

			cmd := exec.Command(os.Args[0], "-test.run=^TestPeerUDPSegmentationHelperProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), peerHelperEnv+"="+rig.B.Name+" "+strconv.Itoa(rig.B.IfIndex)+" "+dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("helper process: %v: %s", err, out)
			}
			if udpSegmentationOf(t, rig.A.Name, rig.A.Link) {
				t.Fatal("the helper process left A's tx-udp-segmentation on")
			}
			if newMAC {
				ipRun(t, "-n", rig.A.Name, "link", "set", "dev", rig.A.Link, "address", "02:00:00:77:77:01")
			}
			restore, err := b.NoPeerUDPSegmentation(rig.B.IfIndex)
			if err != nil {
				t.Fatal(err)
			}
			if udpSegmentationOf(t, rig.A.Name, rig.A.Link) {
				t.Fatal("A's tx-udp-segmentation on while a process has it off")
			}
			if err := restore(); err != nil {
				t.Fatal(err)
			}
			on := udpSegmentationOf(t, rig.A.Name, rig.A.Link)
			switch {
			case !newMAC && !on:
				t.Error("A's tx-udp-segmentation, turned off by a process that ended, is still off after the restore")
			case newMAC && on:
				t.Error("the restore turned on tx-udp-segmentation of a device with another MAC than the one turned off")
			}
			if es, _ := os.ReadDir(dir); len(es) != 0 && !newMAC {
				t.Errorf("notes left after the restore: %v", es)
			}
		})
	}
}
