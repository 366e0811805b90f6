package loader

import (
	"encoding/binary"
	"errors"

	"github.com/xsessiond/xsessiond/flow"
)

// modelReason classifies a frame arriving on ifindex the way the XDP
// program is specified to, independently of its C code, and returns the
// name of the reason counter it must move. Lookups go to the maps of o.
func modelReason(o *Objects, ifindex int, pkt []byte) (string, error) {
	n := len(pkt)
	be16 := func(off int) int { return int(binary.BigEndian.Uint16(pkt[off:])) }
	if n < 14 {
		return "truncated_eth", nil
	}
	et, off := be16(12), 14
	isVLAN := func(t int) bool { return t == 0x8100 || t == 0x88a8 }
	for i := 0; i < 2 && isVLAN(et); i++ {
		if n < off+4 {
			return "truncated_vlan", nil
		}
		et, off = be16(off+2), off+4
	}
	if isVLAN(et) {
		return "vlan_depth", nil
	}
	var t flow.FiveTuple
	var l4, l4len int
	lenBad := false
	switch et {
	case 0x0800:
		if n < off+20 {
			return "truncated_ipv4", nil
		}
		if pkt[off]>>4 != 4 {
			return "bad_version", nil
		}
		ihl := int(pkt[off]&0xf) * 4
		if ihl < 20 {
			return "bad_ihl", nil
		}
		if n < off+ihl {
			return "truncated_ipv4", nil
		}
		if be16(off+6)&0x3fff != 0 {
			return "fragment", nil
		}
		t.Proto = flow.Transport(pkt[off+9])
		tot := be16(off + 2)
		lenBad = tot < ihl || off+tot > n
		l4len = tot - ihl
		t.Family = flow.Family4
		copy(t.Local[:4], pkt[off+16:])
		copy(t.Remote[:4], pkt[off+12:])
		l4 = off + ihl
	case 0x86dd:
		if n < off+40 {
			return "truncated_ipv6", nil
		}
		if pkt[off]>>4 != 6 {
			return "bad_version", nil
		}
		plen, nh, ext := be16(off+4), pkt[off+6], 0
		l4 = off + 40
		for i := 0; i < 4 && (nh == 0 || nh == 43 || nh == 60); i++ {
			if n < l4+8 {
				return "truncated_ext", nil
			}
			elen := (int(pkt[l4+1]) + 1) * 8
			if n < l4+elen {
				return "truncated_ext", nil
			}
			nh, l4, ext = pkt[l4], l4+elen, ext+elen
		}
		switch nh {
		case 44:
			return "fragment", nil
		case 0, 43, 60, 50, 51, 135, 139, 140, 253, 254:
			return "ext_header", nil
		}
		t.Proto = flow.Transport(nh)
		lenBad = off+40+plen > n || ext > plen
		l4len = plen - ext
		t.Family = flow.Family6
		copy(t.Local[:], pkt[off+24:])
		copy(t.Remote[:], pkt[off+8:])
	default:
		return "not_ip", nil
	}
	switch t.Proto {
	case flow.TransportUDP:
		if n < l4+8 {
			return "truncated_udp", nil
		}
		if ulen := be16(l4 + 4); lenBad || ulen < 8 || ulen > l4len {
			return "bad_length", nil
		}
	case flow.TransportTCP:
		if n < l4+20 {
			return "truncated_tcp", nil
		}
		if lenBad || l4len < 20 {
			return "bad_length", nil
		}
		if doff := int(pkt[l4+12]>>4) * 4; doff < 20 || doff > l4len {
			return "bad_tcp_offset", nil
		}
	default:
		return "not_l4", nil
	}
	t.RemotePort, t.LocalPort = uint16(be16(l4)), uint16(be16(l4+2))
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
		return "listener_wildcard_hit", err
	}
	return "no_match", nil
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
