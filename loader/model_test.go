package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cilium/ebpf"

	"github.com/xsessiond/xsessiond/flow"
)

// modelResult is what the model says the program does with a frame.
type modelResult struct {
	reason string // the reason counter it moves
	// For a UDP fragment: its datagram, the datagram's entry in the
	// fragments map before the run (nil: none), and the verdict the entry
	// holds after the run when the program writes it (0: left as it was).
	frag   *FragmentKey
	before *Fragment
	write  FragmentVerdict
	// shorten: the entry (ours) is left to live FragmentGrace at most,
	// its datagram's last fragment having come.
	shorten bool
}

// monoNow returns CLOCK_MONOTONIC in nanoseconds, the program's
// bpf_ktime_get_ns.
func monoNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return uint64(ts.Nano())
}

// modelRun classifies a frame arriving on ifindex the way the XDP program
// is specified to, independently of its C code: the name of the reason
// counter it must move and, for a UDP fragment, what it does to the
// fragments map. Lookups go to the maps of o, read before the program runs
// on the frame. The freshness of a fragments entry is judged at the time
// of the call, so an entry that turns FragmentTTL old during the run can be
// judged otherwise by the program.
// testRunLinear is the most BPF_PROG_TEST_RUN puts in an XDP frame's first
// buffer: a page less XDP_PACKET_HEADROOM and struct skb_shared_info. A
// longer frame is multi-buffer.
const testRunLinear = 4096 - 256 - 320

func modelRun(o *Objects, ifindex int, pkt []byte) (modelResult, error) {
	n := len(pkt)
	be16 := func(off int) int { return int(binary.BigEndian.Uint16(pkt[off:])) }
	if n < 14 {
		return modelResult{reason: "truncated_eth"}, nil
	}
	// A unicast frame to another MAC than the interface's (when the
	// program was given one) is another host's.
	var mac [6]byte
	if err := o.objs.XsMac.Get(&mac); err != nil {
		return modelResult{}, err
	}
	if mac != ([6]byte{}) && pkt[0]&1 == 0 && [6]byte(pkt[:6]) != mac {
		return modelResult{reason: "other_host"}, nil
	}
	et, off := be16(12), 14
	isVLAN := func(t int) bool { return t == 0x8100 || t == 0x88a8 }
	for i := 0; i < 2 && isVLAN(et); i++ {
		if n < off+4 {
			return modelResult{reason: "truncated_vlan"}, nil
		}
		if be16(off)&0x0fff != 0 {
			return modelResult{reason: "other_host"}, nil // a VLAN's, not this interface's
		}
		et, off = be16(off+2), off+4
	}
	if isVLAN(et) {
		return modelResult{reason: "vlan_depth"}, nil
	}
	var t flow.FiveTuple
	var l4, l4len int
	lenBad := false
	switch et {
	case 0x0800:
		if n < off+20 {
			return modelResult{reason: "truncated_ipv4"}, nil
		}
		if pkt[off]>>4 != 4 {
			return modelResult{reason: "bad_version"}, nil
		}
		ihl := int(pkt[off]&0xf) * 4
		if ihl < 20 {
			return modelResult{reason: "bad_ihl"}, nil
		}
		if n < off+ihl {
			return modelResult{reason: "truncated_ipv4"}, nil
		}
		frag := be16(off+6)&0x3fff != 0
		if frag && pkt[off+9] != 17 {
			return modelResult{reason: "fragment"}, nil
		}
		t.Proto = flow.Transport(pkt[off+9])
		tot := be16(off + 2)
		lenBad = tot < ihl || off+tot > n
		l4len = tot - ihl
		if tot == 0 && t.Proto == flow.TransportTCP && !frag && n-off > 0xffff { // BIG TCP
			lenBad, l4len = false, n-off-ihl
		}
		t.Family = flow.Family4
		copy(t.Local[:4], pkt[off+16:])
		copy(t.Remote[:4], pkt[off+12:])
		l4 = off + ihl
		if frag {
			k := FragmentKey{IfIndex: ifindex, Family: t.Family, Proto: flow.TransportUDP, Src: t.Remote, Dst: t.Local, ID: uint32(be16(off + 4))}
			return modelFragment(o, k, be16(off+6)&0x1fff != 0, be16(off+6)&0x2000 == 0, pkt, l4, lenBad, l4len, t)
		}
	case 0x86dd:
		if n < off+40 {
			return modelResult{reason: "truncated_ipv6"}, nil
		}
		if pkt[off]>>4 != 6 {
			return modelResult{reason: "bad_version"}, nil
		}
		plen, nh, ext := be16(off+4), pkt[off+6], 0
		l4 = off + 40
		for i := 0; i < 4 && (nh == 0 || nh == 43 || nh == 60); i++ {
			if n < l4+8 {
				return modelResult{reason: "truncated_ext"}, nil
			}
			elen := (int(pkt[l4+1]) + 1) * 8
			if n < l4+elen {
				return modelResult{reason: "truncated_ext"}, nil
			}
			nh, l4, ext = pkt[l4], l4+elen, ext+elen
		}
		switch nh {
		case 44:
			if n < l4+8 {
				return modelResult{reason: "truncated_ext"}, nil
			}
			fo := be16(l4 + 2)
			// Atomic, or a first fragment that is not UDP; a later
			// one is UDP's whatever its next header.
			if fo&0xfff9 == 0 || fo&0xfff8 == 0 && pkt[l4] != 17 {
				return modelResult{reason: "fragment"}, nil
			}
			t.Proto = flow.TransportUDP
			t.Family = flow.Family6
			copy(t.Local[:], pkt[off+24:])
			copy(t.Remote[:], pkt[off+8:])
			ext += 8
			k := FragmentKey{IfIndex: ifindex, Family: t.Family, Proto: flow.TransportUDP, Src: t.Remote, Dst: t.Local,
				ID: binary.BigEndian.Uint32(pkt[l4+4:])}
			return modelFragment(o, k, fo&0xfff8 != 0, fo&1 == 0, pkt, l4+8, off+40+plen > n || ext > plen, plen-ext, t)
		case 0, 43, 60, 50, 51, 135, 139, 140, 253, 254:
			return modelResult{reason: "ext_header"}, nil
		}
		t.Proto = flow.Transport(nh)
		lenBad = off+40+plen > n || ext > plen
		l4len = plen - ext
		// BIG TCP: no extension header, or a hop-by-hop one of 8 bytes
		// with the jumbo payload option.
		jumbo := ext == 8 && pkt[off+6] == 0 && pkt[off+41] == 0 && pkt[off+42] == 0xc2 && pkt[off+43] == 4
		if plen == 0 && (ext == 0 || jumbo) && t.Proto == flow.TransportTCP && n-off-40 > 0xffff {
			lenBad, l4len = false, n-l4
		}
		t.Family = flow.Family6
		copy(t.Local[:], pkt[off+24:])
		copy(t.Remote[:], pkt[off+8:])
	default:
		return modelResult{reason: "not_ip"}, nil
	}
	switch t.Proto {
	case flow.TransportUDP:
		if n < l4+8 {
			return modelResult{reason: "truncated_udp"}, nil
		}
		if ulen := be16(l4 + 4); lenBad || ulen < 8 || ulen > l4len {
			return modelResult{reason: "bad_length"}, nil
		}
		if n > testRunLinear {
			return modelResult{reason: "udp_multi_buffer"}, nil
		}
	case flow.TransportTCP:
		if n < l4+20 {
			return modelResult{reason: "truncated_tcp"}, nil
		}
		if lenBad || l4len < 20 {
			return modelResult{reason: "bad_length"}, nil
		}
		if doff := int(pkt[l4+12]>>4) * 4; doff < 20 || doff > l4len {
			return modelResult{reason: "bad_tcp_offset"}, nil
		}
	default:
		return modelResult{reason: "not_l4"}, nil
	}
	t.RemotePort, t.LocalPort = uint16(be16(l4)), uint16(be16(l4+2))
	reason, err := modelMatch(o, ifindex, t)
	return modelResult{reason: reason}, err
}

// modelMatch runs the lookups of a parsed packet: the hit's reason, or
// no_match.
func modelMatch(o *Objects, ifindex int, t flow.FiveTuple) (string, error) {
	found := func(err error) (bool, error) {
		if err == nil {
			return true, nil
		}
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	if ok, err := found(lookupErr(o.Established.Lookup(ifindex, t))); ok || err != nil {
		return "established_hit", err
	}
	l := flow.FiveTuple{Local: t.Local, LocalPort: t.LocalPort, Proto: t.Proto, Family: t.Family}
	if t.Local != ([16]byte{}) {
		if ok, err := found(lookupErr(o.Listeners.Lookup(ifindex, l))); ok || err != nil {
			return "listener_exact_hit", err
		}
	}
	l.Local = [16]byte{}
	if ok, err := found(lookupErr(o.Listeners.Lookup(ifindex, l))); ok || err != nil {
		var check uint8
		if err == nil {
			err = o.objs.XsCheckLocal.Get(&check)
		}
		if err == nil && check != 0 {
			var v uint32
			k := xsessionXsLocalKey{Addr: t.Local, Family: t.Family}
			if err := o.objs.Locals.Lookup(&k, &v); errors.Is(err, ebpf.ErrKeyNotExist) {
				return "not_local", nil
			} else if err != nil {
				return "", err
			}
		}
		return "listener_wildcard_hit", err
	}
	return "no_match", nil
}

// modelFragment classifies a UDP fragment of the datagram k; later says
// its offset is not zero, last that no fragment follows it. For a first
// fragment, l4 is the offset of its
// UDP header, l4len the bytes from there to the end of the IP payload,
// lenBad that an IP length field disagrees with the frame, and t holds
// its addresses.
//
// A fresh entry (younger than FragmentTTL, verdict ours or kernel) rules:
// later fragments follow it, and a first fragment of a datagram that is
// the kernel's is passed. Otherwise the first fragment's lookups decide:
// a hit makes the datagram ours, anything else passes it (and turns a
// fresh "ours" into "kernel"). A later fragment without a fresh entry
// makes the datagram the kernel's. The last fragment of a datagram that
// is ours leaves its entry FragmentGrace to live, unless it has less.
func modelFragment(o *Objects, k FragmentKey, later, last bool, pkt []byte, l4 int, lenBad bool, l4len int, t flow.FiveTuple) (modelResult, error) {
	r := modelResult{frag: &k}
	now := monoNow()
	fr, err := o.Fragments.Lookup(k)
	switch {
	case err == nil:
		r.before = &fr
	case !errors.Is(err, ErrNotFound):
		return r, err
	}
	var verdict FragmentVerdict
	if r.before != nil && r.before.Fresh(now, DefaultFragmentTTL) {
		verdict = r.before.Verdict
	}
	if later {
		switch verdict {
		case FragmentOurs:
			r.reason = "fragment_hit"
			r.shorten = last && now-r.before.SeenNs+uint64(FragmentGrace) < uint64(DefaultFragmentTTL)
		case FragmentKernel:
			r.reason = "fragment"
		default:
			r.reason, r.write = "fragment", FragmentKernel
		}
		return r, nil
	}
	if verdict == FragmentKernel {
		r.reason = "fragment"
		return r, nil
	}
	switch {
	case len(pkt) < l4+8:
		r.reason = "truncated_udp"
	case lenBad || l4len < 8 || binary.BigEndian.Uint16(pkt[l4+4:]) < 8:
		r.reason = "bad_length"
	default:
		t.RemotePort, t.LocalPort = binary.BigEndian.Uint16(pkt[l4:]), binary.BigEndian.Uint16(pkt[l4+2:])
		hit, err := modelMatch(o, k.IfIndex, t)
		if err != nil {
			return r, err
		}
		if hit != "no_match" && hit != "not_local" {
			r.reason, r.write = "fragment_hit", FragmentOurs
			return r, nil
		}
		r.reason = "fragment"
	}
	if verdict == FragmentOurs {
		r.write = FragmentKernel
	}
	return r, nil
}

// check compares the fragments map after the run with what r says.
func (r modelResult) check(o *Objects) error {
	if r.frag == nil {
		return nil
	}
	fr, err := o.Fragments.Lookup(*r.frag)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	switch {
	case r.write != 0:
		if err != nil || fr.Verdict != r.write || !fr.Fresh(monoNow(), DefaultFragmentTTL) {
			return fmt.Errorf("fragment entry %+v (%v), want a fresh %v", fr, err, r.write)
		}
	case r.shorten:
		age := time.Duration(monoNow() - fr.SeenNs)
		if err != nil || fr.Verdict != FragmentOurs || age < DefaultFragmentTTL-FragmentGrace || age >= DefaultFragmentTTL {
			return fmt.Errorf("fragment entry %+v (%v) %v old, want ours with at most %v to live", fr, err, age, FragmentGrace)
		}
	case r.before == nil:
		if err == nil {
			return fmt.Errorf("fragment entry %+v written, want none", fr)
		}
	case err != nil || fr != *r.before:
		return fmt.Errorf("fragment entry %+v (%v), want it unchanged at %+v", fr, err, *r.before)
	}
	return nil
}

func lookupErr(_ Value, err error) error { return err }

// reasonOf returns the name of the one reason counter d moved, or "".
func reasonOf(d Counters) string {
	name, n := "", 0
	d.Each(func(k string, v uint64) {
		switch k {
		case "pass", "redirect", "malformed", "no_xsk":
			return
		}
		if v != 0 {
			name, n = k, n+int(v)
		}
	})
	if n != 1 {
		return ""
	}
	return name
}
