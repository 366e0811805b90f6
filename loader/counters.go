package loader

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Counters are the program's packet counters summed over all CPUs. Every
// packet counts once in Pass or Redirect and once in one reason (NotIP …
// NoMatch, a hit, or a malformed reason); a hit whose queue has no socket
// also counts in NoXSK (and in Pass). Malformed packets (the Trunc* and Bad*
// reasons) also count in Malformed. All of them go to the kernel. The hits
// are EstablishedHit, ListenerExactHit, ListenerWildcardHit and, for UDP
// fragments, FragmentHit.
type Counters struct {
	Pass                uint64 // given to the kernel
	Redirect            uint64 // redirected to an AF_XDP socket
	Malformed           uint64 // broken headers (a subset of Pass)
	NotIP               uint64 // neither IPv4 nor IPv6 (ARP, ...)
	VLANDepth           uint64 // more than two VLAN tags
	Fragment            uint64 // a fragment passed: not UDP, IPv6 atomic, or of a datagram the kernel gets
	ExtHeader           uint64 // IPv6 extension header not walked, or too many
	NotL4               uint64 // IP but neither UDP nor TCP (ICMP, ...)
	NoMatch             uint64 // UDP or TCP without an entry
	EstablishedHit      uint64 // established 5-tuple hit
	ListenerExactHit    uint64 // listener hit on the destination address
	ListenerWildcardHit uint64 // listener hit on the zero address
	NoXSK               uint64 // a hit on a queue without a socket (passed)
	TruncEth            uint64
	TruncVLAN           uint64
	TruncIPv4           uint64 // IPv4 header or options cut
	TruncIPv6           uint64
	TruncExt            uint64 // IPv6 extension header cut
	TruncUDP            uint64
	TruncTCP            uint64
	BadVersion          uint64 // IP version does not match the ethertype
	BadIHL              uint64 // IPv4 IHL < 5
	BadLength           uint64 // IP or UDP length disagrees with the frame
	BadTCPOffset        uint64 // TCP data offset < 5 or beyond the segment
	FragmentHit         uint64 // a UDP fragment of a datagram steered to the socket
	UDPMultiBuffer      uint64 // UDP in more than one buffer (an offload burst, a datagram longer than a frame): passed
	OtherHost           uint64 // to another unicast MAC than the interface's (ObjectsOptions.MAC), or VLAN-tagged: passed
	NotLocal            uint64 // a wildcard listener's port, to an address not in the locals map (ObjectsOptions.CheckLocal): passed
}

// counterNames lists the counters in the order of enum xs_counter in
// bpf/xsession.h: the names of the fields of struct xs_counters, which
// bpftool map dump shows.
var counterNames = [...]string{
	"pass", "redirect", "malformed", "not_ip", "vlan_depth", "fragment", "ext_header",
	"not_l4", "no_match", "established_hit", "listener_exact_hit", "listener_wildcard_hit",
	"no_xsk", "truncated_eth", "truncated_vlan", "truncated_ipv4", "truncated_ipv6",
	"truncated_ext", "truncated_udp", "truncated_tcp", "bad_version", "bad_ihl",
	"bad_length", "bad_tcp_offset", "fragment_hit", "udp_multi_buffer", "other_host", "not_local",
}

// counterSlots is the program's counters as Read reads them: one uint64
// per field of struct xs_counters (xsessionXsCounters), in field order.
type counterSlots [len(counterNames)]uint64

// fields returns pointers to c's fields in the order of enum xs_counter.
func (c *Counters) fields() [len(counterNames)]*uint64 {
	return [...]*uint64{
		&c.Pass, &c.Redirect, &c.Malformed, &c.NotIP, &c.VLANDepth, &c.Fragment, &c.ExtHeader,
		&c.NotL4, &c.NoMatch, &c.EstablishedHit, &c.ListenerExactHit, &c.ListenerWildcardHit,
		&c.NoXSK, &c.TruncEth, &c.TruncVLAN, &c.TruncIPv4, &c.TruncIPv6,
		&c.TruncExt, &c.TruncUDP, &c.TruncTCP, &c.BadVersion, &c.BadIHL,
		&c.BadLength, &c.BadTCPOffset, &c.FragmentHit, &c.UDPMultiBuffer, &c.OtherHost, &c.NotLocal,
	}
}

// Each calls fn with each counter's name (e.g. "listener_exact_hit") and
// value, in a fixed order.
func (c Counters) Each(fn func(name string, v uint64)) {
	for i, p := range c.fields() {
		fn(counterNames[i], *p)
	}
}

// Sub returns c - prev, field by field: the counts between two reads.
func (c Counters) Sub(prev Counters) Counters {
	var d Counters
	df, cf, pf := d.fields(), c.fields(), prev.fields()
	for i := range df {
		*df[i] = *cf[i] - *pf[i]
	}
	return d
}

// CounterMap is the program's per-CPU counter map. Safe for concurrent use.
type CounterMap struct{ m *ebpf.Map }

// Read returns the counters summed over all CPUs.
func (m *CounterMap) Read() (Counters, error) {
	var per []counterSlots
	if err := m.m.Lookup(uint32(0), &per); err != nil {
		return Counters{}, fmt.Errorf("read counters: %w", err)
	}
	var c Counters
	f := c.fields()
	for i := range per {
		for j, v := range per[i] {
			*f[j] += v
		}
	}
	return c, nil
}
