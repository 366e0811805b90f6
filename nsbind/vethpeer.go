package nsbind

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// udpSegmentationFeature is the ethtool name of NETIF_F_GSO_UDP_L4: a
// device with it takes UDP segmentation bursts (UDP_SEGMENT) whole.
const udpSegmentationFeature = "tx-udp-segmentation"

// ErrNotVeth: the interface is no veth, so it has no peer.
var ErrNotVeth = errors.New("not a veth")

// NoPeerUDPSegmentation turns UDP segmentation offload
// (tx-udp-segmentation) off on the peer of veth ifindex of n, wherever
// that peer is (its netns is found by the id the veth names it with,
// among the named namespaces and those of the host's processes), and
// returns what turns it back on. A sender behind the peer then has its
// UDP_SEGMENT bursts cut into their datagrams before they cross the
// veth, as the kernel does when a native XDP program is attached to a
// veth (it turns the peer's segmentation offload off); a generic XDP
// program on the veth would otherwise see a burst as one datagram.
// restore is a no-op when the feature was off already, unless a process
// that ended without its restore turned it off (see peerNoteDir): that
// process's restore is then this one's. ErrNotVeth when ifindex is no
// veth.
//
// Nothing of the peer's namespace is held open in between: restore finds
// the peer again through veth ifindex, so that it reaches the peer also
// when it was renamed or moved to another namespace (and never a device
// that took the peer's old index), and a namespace deleted meanwhile
// (with the veth pair) is freed as it would be without n. restore fails
// with ErrNoInterface when veth ifindex is gone.
func (n *Namespace) NoPeerUDPSegmentation(ifindex int) (restore func() error, err error) {
	verb := fmt.Sprintf("veth peer of %d in %s", ifindex, n.desc)
	var was bool
	var note string
	if err := n.inVethPeer(verb, ifindex, func(p vethPeer) error {
		var err error
		note = p.notePath()
		if was, err = setFeature(p.name, udpSegmentationFeature, false); err != nil {
			return err
		}
		switch {
		case was:
			writePeerNote(note, p.mac)
		case inheritPeerNote(note, p.mac):
			// Off by a process that ended without turning it back on.
			was = true
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if !was {
		return func() error { return nil }, nil
	}
	return func() error {
		err := n.inVethPeer(verb, ifindex, func(p vethPeer) error {
			_, err := setFeature(p.name, udpSegmentationFeature, true)
			return err
		})
		if err == nil || errors.Is(err, ErrNoInterface) {
			os.Remove(note)
		}
		return err
	}, nil
}

// RestorePeerUDPSegmentation turns the UDP segmentation offload of the
// peer of veth ifindex back on when NoPeerUDPSegmentation of a process
// that has ended turned it off and no restore followed (a killed daemon;
// xsessiond cleanup calls it). It reports whether it did: false, with no
// error, for no such note, a note of a process that still runs or of
// another device, and an interface that is no veth.
func (n *Namespace) RestorePeerUDPSegmentation(ifindex int) (bool, error) {
	verb := fmt.Sprintf("veth peer of %d in %s", ifindex, n.desc)
	done := false
	err := n.inVethPeer(verb, ifindex, func(p vethPeer) error {
		note := p.notePath()
		if !inheritPeerNote(note, p.mac) {
			return nil
		}
		if _, err := setFeature(p.name, udpSegmentationFeature, true); err != nil {
			return err
		}
		os.Remove(note)
		done = true
		return nil
	})
	if errors.Is(err, ErrNotVeth) {
		return false, nil
	}
	return done, err
}

// vethPeer is the peer of a veth as inVethPeer finds it.
type vethPeer struct {
	name  string
	index int
	mac   net.HardwareAddr
	nsIno uint64 // the inode of its namespace
}

// peerNoteDir holds a note for each veth peer whose UDP segmentation
// offload NoPeerUDPSegmentation turned off and its restore has not yet
// turned back on: a process that ends without the restore (killed, a
// crash) leaves it, and the next NoPeerUDPSegmentation on that peer,
// which finds the feature off, takes the restore over from it instead
// of leaving the feature off for good. /run is emptied at boot, as the
// veths are.
var peerNoteDir = "/run/xsessiond/veth-peers"

func (p vethPeer) notePath() string {
	return filepath.Join(peerNoteDir, fmt.Sprintf("udp-segmentation-%d-%d", p.nsIno, p.index))
}

// processStart returns the start time of process pid (field 22 of
// /proc/PID/stat), "" when there is no such process or it has ended and
// waits to be reaped (a zombie: a daemon killed a moment ago, whose
// restore falls to whoever finds its note).
func processStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name, field 2, is in parentheses and may hold anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return ""
	}
	return f[19]
}

// writePeerNote notes at path that this process turned the offload of the
// peer with MAC mac off. A note that cannot be written costs only the
// takeover after a crash.
func writePeerNote(path string, mac net.HardwareAddr) {
	pid := os.Getpid()
	if os.MkdirAll(filepath.Dir(path), 0o755) != nil {
		return
	}
	tmp := path + ".tmp" + strconv.Itoa(pid)
	data := fmt.Sprintf("%d %s %s\n", pid, processStart(pid), mac)
	if os.WriteFile(tmp, []byte(data), 0o644) != nil || os.Rename(tmp, path) != nil {
		os.Remove(tmp)
	}
}

// inheritPeerNote reports whether the note at path was left by a process
// that has ended, about the peer with MAC mac (not a device that took the
// index of a peer in a namespace with the inode of one since deleted); it
// then makes the note this process's. A note about another device is
// removed.
func inheritPeerNote(path string, mac net.HardwareAddr) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	if len(f) != 3 || f[2] != mac.String() {
		os.Remove(path)
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		os.Remove(path)
		return false
	}
	if start := processStart(pid); start != "" && start == f[1] {
		return false // its owner still runs and restores it
	}
	writePeerNote(path, mac)
	return true
}

// inVethPeer runs fn with the peer of veth ifindex of n on a thread in
// the peer's namespace, as the kernel names both now.
func (n *Namespace) inVethPeer(verb string, ifindex int, fn func(p vethPeer) error) error {
	var peerIdx, nsid int
	err := n.handle(verb, func(h *netlink.Handle) error {
		l, err := h.LinkByIndex(ifindex)
		if err != nil {
			return wrapNoInterface(verb, err)
		}
		if l.Type() != "veth" {
			return fmt.Errorf("%s: %s is a %s: %w", verb, l.Attrs().Name, l.Type(), ErrNotVeth)
		}
		peerIdx, nsid = l.Attrs().ParentIndex, l.Attrs().NetNsID
		return nil
	})
	if err != nil {
		return err
	}
	if peerIdx <= 0 {
		return fmt.Errorf("%s: the kernel names no peer: %w", verb, ErrNoInterface)
	}
	peer := n
	if nsid >= 0 {
		if peer, err = n.byNSID(nsid); err != nil {
			return fmt.Errorf("%s: %w", verb, err)
		}
		defer peer.Close()
	}
	var p vethPeer
	err = peer.handle(verb, func(h *netlink.Handle) error {
		l, err := h.LinkByIndex(peerIdx)
		if err != nil {
			return wrapNoInterface(verb, err)
		}
		// The two ends name each other: a device of another pair at
		// that index means the namespace changed under the lookup.
		if l.Type() != "veth" || l.Attrs().ParentIndex != ifindex {
			return fmt.Errorf("%s: %s in %s is not the peer: %w", verb, l.Attrs().Name, peer.desc, ErrNoInterface)
		}
		p = vethPeer{name: l.Attrs().Name, index: peerIdx, mac: slices.Clone(l.Attrs().HardwareAddr), nsIno: peer.ino}
		return nil
	})
	if err != nil {
		return err
	}
	return peer.in(verb, func() error { return fn(p) })
}

// byNSID opens the namespace n knows by netns id nsid: a named one
// (/run/netns) or a process's.
func (n *Namespace) byNSID(nsid int) (*Namespace, error) {
	paths, _ := filepath.Glob("/run/netns/*")
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	seen := map[uint64]bool{}
	for _, p := range append(paths, procs...) {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		// A file that is no namespace (one `ip netns del` has unmounted
		// and not yet removed) fails the query, which then says id 0:
		// only an answer counts.
		id := -1
		qerr := n.handle("netns id", func(h *netlink.Handle) error {
			var err error
			id, err = h.GetNetNsIdByFd(fd)
			return err
		})
		if qerr == nil && id == nsid {
			return fromFD(fd, p)
		}
		unix.Close(fd)
	}
	return nil, fmt.Errorf("no namespace with netns id %d among /run/netns and the processes': %w", nsid, ErrNoNamespace)
}

// setFeature sets the ethtool feature called feature of interface name
// in the calling thread's namespace on or off, and reports whether it
// was on (asked for) before.
func setFeature(name, feature string, on bool) (was bool, err error) {
	names, err := featureNames(name)
	if err != nil {
		return false, err
	}
	bit := -1
	for i, f := range names {
		if f == feature {
			bit = i
		}
	}
	if bit < 0 {
		return false, fmt.Errorf("ethtool: %s has no feature %s: %w", name, feature, unix.EOPNOTSUPP)
	}
	blocks := (len(names) + 31) / 32
	got, err := getFeatures(name, blocks)
	if err != nil {
		return false, err
	}
	was = got[bit/32].requested&(1<<(bit%32)) != 0
	if was == on {
		return was, nil
	}
	if err := setFeatureBit(name, blocks, bit, on); err != nil {
		return was, err
	}
	// The kernel answers a change it could not make with a positive
	// value, not an error: look at what is active now.
	now, err := getFeatures(name, blocks)
	if err != nil {
		return was, err
	}
	if active := now[bit/32].active&(1<<(bit%32)) != 0; !on && active {
		return was, fmt.Errorf("ethtool: %s of %s stays on: %w", feature, name, unix.EOPNOTSUPP)
	}
	return was, nil
}

// featureNames returns the names of name's ethtool features, by bit.
func featureNames(name string) ([]string, error) {
	n, err := stringSetLen(name, ethSSFeatures)
	if err != nil {
		return nil, err
	}
	raw, err := getStrings(name, ethSSFeatures, n)
	if err != nil {
		return nil, err
	}
	out := make([]string, n)
	for i := range out {
		s := raw[i*ethGStringLen : (i+1)*ethGStringLen]
		for j, c := range s {
			if c == 0 {
				s = s[:j]
				break
			}
		}
		out[i] = string(s)
	}
	return out, nil
}

func featureError(op, name string, err error) error {
	return fmt.Errorf("ethtool %s of %s: %w", op, strconv.Quote(name), err)
}
