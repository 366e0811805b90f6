package nsbind

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

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
// restore is a no-op when the feature was off already. ErrNotVeth when
// ifindex is no veth.
func (n *Namespace) NoPeerUDPSegmentation(ifindex int) (restore func() error, err error) {
	verb := fmt.Sprintf("veth peer of %d in %s", ifindex, n.desc)
	var peerIdx, nsid int
	err = n.handle(verb, func(h *netlink.Handle) error {
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
		return nil, err
	}
	if peerIdx <= 0 {
		return nil, fmt.Errorf("%s: the kernel names no peer: %w", verb, ErrNoInterface)
	}
	peer := n
	if nsid >= 0 {
		if peer, err = n.byNSID(nsid); err != nil {
			return nil, fmt.Errorf("%s: %w", verb, err)
		}
	}
	closePeer := func() {
		if peer != n {
			peer.Close()
		}
	}
	// The peer's name, by its index (the restore asks again: the peer
	// may be renamed meanwhile).
	nameOf := func() (name string, err error) {
		err = peer.handle(verb, func(h *netlink.Handle) error {
			l, err := h.LinkByIndex(peerIdx)
			if err != nil {
				return wrapNoInterface(verb, err)
			}
			name = l.Attrs().Name
			return nil
		})
		return name, err
	}
	name, err := nameOf()
	if err != nil {
		closePeer()
		return nil, err
	}
	var was bool
	if err := peer.in(verb, func() error {
		var err error
		was, err = setFeature(name, udpSegmentationFeature, false)
		return err
	}); err != nil {
		closePeer()
		return nil, err
	}
	if !was {
		closePeer()
		return func() error { return nil }, nil
	}
	return func() error {
		defer closePeer()
		name, err := nameOf()
		if err != nil {
			return err
		}
		return peer.in(verb, func() error {
			_, err := setFeature(name, udpSegmentationFeature, true)
			return err
		})
	}, nil
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
		id := -1
		_ = n.handle("netns id", func(h *netlink.Handle) error {
			id, err = h.GetNetNsIdByFd(fd)
			return err
		})
		if id == nsid {
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
