package main

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// rigs holds at most one netns rig at a time, rebuilt when a scenario asks
// for another queue count. Close removes it; it is safe to call twice.
type rigs struct {
	queues      int
	pair        *nstest.Pair
	peerOffload bool // leave A's tx offloads on (--peer-offload)
}

// get returns a rig with q queues on each veth end.
func (r *rigs) get(q int) (*nstest.Pair, error) {
	if r.pair != nil && r.queues == q {
		return r.pair, nil
	}
	if err := r.Close(); err != nil {
		return nil, err
	}
	p, err := nstest.NewPairNoTest(nstest.Options{Queues: q})
	if err != nil {
		return nil, fmt.Errorf("build rig with %d queues: %w", q, err)
	}
	r.pair, r.queues = p, q
	if err := pinNeighbours(p); err != nil {
		return nil, err
	}
	// Kernel sockets in A (the echo client) send complete UDP checksums,
	// as from a real wire, so the daemon verifies every one (with tx
	// checksum offload on, veth hands over CHECKSUM_PARTIAL frames, which
	// it accepts on a veth without reading their payload): the figures
	// include the checksum a wire costs. The generator builds its
	// checksums itself either way. TSO goes with it, so A's TCP sends
	// MSS-sized frames; --peer-offload keeps both, as between containers.
	if !r.peerOffload {
		if err := xsktest.DisableTxOffload(p.A); err != nil {
			return nil, fmt.Errorf("%s: tx checksum offload off: %w", p.A.Name, err)
		}
	}
	return p, nil
}

func (r *rigs) Close() error {
	if r.pair == nil {
		return nil
	}
	err := r.pair.Close()
	r.pair = nil
	return err
}

// pinNeighbours adds a permanent neighbour entry on each host for the
// other, so neither ever waits for ARP (and a receiver that answers from
// B finds A's MAC without having seen a request).
func pinNeighbours(p *nstest.Pair) error {
	for _, hs := range [][2]*nstest.Host{{p.B, p.A}, {p.A, p.B}} {
		self, peer := hs[0], hs[1]
		h, err := netlink.NewHandleAt(self.NS)
		if err != nil {
			return fmt.Errorf("netlink in %s: %w", self.Name, err)
		}
		err = h.NeighSet(&netlink.Neigh{
			LinkIndex: self.IfIndex, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: net.IP(peer.IPv4.AsSlice()), HardwareAddr: peer.MAC,
		})
		h.Close()
		if err != nil {
			return fmt.Errorf("%s: pin neighbour %s: %w", self.Name, peer.IPv4, err)
		}
	}
	return nil
}

// envB is the receiving side of the rig.
func envB(p *nstest.Pair, q, flows, payload int, port uint16) *Env {
	return &Env{
		Rig: p, Do: p.B.Do, NetNS: p.B.Name, IfName: p.B.Link, IfIndex: p.B.IfIndex,
		Addr: p.B.IPv4, Port: port, Queues: q, Flows: flows, Payload: payload,
	}
}
