package datapath

import (
	"fmt"
	"slices"

	"github.com/xsessiond/xsessiond/datapath/frame"
)

// Checksum modes (Config.Checksum): what a worker makes of a UDP datagram
// whose checksum field holds the pseudo-header sum instead of a checksum
// (frame.PartialUDPCsum).
//
// A sender on this host with checksum offload hands the kernel a
// CHECKSUM_PARTIAL skb: the checksum field holds the pseudo-header sum and
// the device is to finish it. Through a veth (or netkit, or a tap) no device
// ever does: the skb crosses to the peer marked as needing no check, and
// XDP sees the bytes as they are. The kernel's own stack accepts such a
// datagram; so does the worker when the mode says so, and counts it
// (Counts.PartialCsum). A frame from a wire with that field is corrupt.
//
// The XDP program cannot tell the two apart for us: the kernel's XDP
// metadata kfuncs (bpf_xdp_metadata_rx_hash, _rx_timestamp, _rx_vlan_tag)
// report no rx checksum status, so the decision is per interface, from its
// driver.
const (
	// ChecksumAuto is ChecksumAcceptPartial on an interface whose driver
	// connects it to a sender on this host (veth, netkit, tun/tap), else
	// ChecksumVerify.
	ChecksumAuto = "auto"
	// ChecksumVerify drops a partial checksum as bad-udp-csum.
	ChecksumVerify = "verify"
	// ChecksumAcceptPartial delivers a partial checksum and counts it as
	// partial-csum. Every other checksum is still verified.
	ChecksumAcceptPartial = "accept-partial"
)

// localPeerDrivers are the drivers whose frames come from senders of this
// host (or a VM's virtio through a tap), never from a wire.
var localPeerDrivers = []string{"veth", "netkit", "tun"}

// ParseChecksum checks a Config.Checksum value; "" is ChecksumAuto.
func ParseChecksum(s string) (string, error) {
	switch s {
	case "", ChecksumAuto:
		return ChecksumAuto, nil
	case ChecksumVerify, ChecksumAcceptPartial:
		return s, nil
	}
	return "", fmt.Errorf("checksum mode %q (want auto, verify or accept-partial): %w", s, ErrInvalidConfig)
}

// resolveChecksum returns whether partial checksums are accepted for mode
// on an interface with the given driver, and the mode in effect as Stats
// shows it ("accept-partial (auto, driver veth)").
func resolveChecksum(mode, driver string) (bool, string) {
	switch mode {
	case ChecksumVerify:
		return false, ChecksumVerify
	case ChecksumAcceptPartial:
		return true, ChecksumAcceptPartial
	}
	d := driver
	if d == "" {
		d = "unknown"
	}
	if slices.Contains(localPeerDrivers, driver) {
		return true, ChecksumAcceptPartial + " (auto, driver " + d + ")"
	}
	return false, ChecksumVerify + " (auto, driver " + d + ")"
}

// acceptBad counts a frame Decode did not return OK for and reports
// whether it is delivered all the same: a partial checksum where the
// mode accepts it.
func (w *worker) acceptBad(r frame.Reason) bool {
	if r == frame.PartialUDPCsum {
		if w.partialOK {
			w.c.PartialCsum++
			return true
		}
		r = frame.BadUDPCsum
	}
	w.c.Bad[r]++
	return false
}
