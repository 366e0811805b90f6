package frame

import (
	"encoding/binary"

	"github.com/xsessiond/xsessiond/flow"
)

// Reason says why Decode could not deliver a UDP datagram. OK means it did.
type Reason uint8

// Decode outcomes. The order is not part of any ABI, but the names are used
// as counter labels.
const (
	OK           Reason = iota
	TruncatedEth        // shorter than an Ethernet header or a VLAN tag
	TooManyVLANs        // more than two VLAN tags
	NotIP               // the EtherType after the tags is neither IPv4 nor IPv6
	TruncatedIP         // shorter than the IP header, its options or extension headers, or its stated length
	BadIPVersion        // the version nibble does not match the EtherType
	BadIHL              // IPv4 header length below 5 words
	BadIPLen            // IPv4 total length below the header length, or IPv6 payload length 0 (jumbograms are not supported)
	BadIPCsum           // IPv4 header checksum does not verify
	Fragment            // an IPv4 fragment or an IPv6 fragment header (not an atomic fragment)
	BadExtHeader        // more IPv6 extension headers than MaxExtHeaders, a hop-by-hop header not first, or a routing header the kernel refuses (routingOK)
	NotUDP              // the transport protocol is not UDP; Proto and L4Off are set
	TruncatedUDP        // the IP payload is shorter than a UDP header
	BadUDPLen           // UDP length below 8 or beyond the IP payload
	BadUDPCsum          // UDP checksum does not verify, or is 0 over IPv6
	// PartialUDPCsum: the UDP checksum field holds the pseudo-header sum
	// instead of a checksum, as a sender of this host with checksum
	// offload hands a datagram over (a CHECKSUM_PARTIAL skb through a
	// veth): the datagram is otherwise well formed and every field of
	// Packet is set. A caller that knows the frame came from a local
	// sender accepts it; from a wire it is as bad as BadUDPCsum.
	PartialUDPCsum
	// MartianAddr: an address no packet from a link may carry, which
	// the kernel drops as martian: an IPv4 source in 0/8 (but to the
	// limited broadcast), 127/8, 224/4 or 255.255.255.255, an IPv4
	// destination in 0/8 or 127/8; an IPv6 source ::1 or multicast, an
	// IPv6 destination ::1 or a multicast one of scope 0 or 1.
	MartianAddr
	// BadIPOptions: IPv4 options or the options of an IPv6 hop-by-hop
	// or destination options header the kernel refuses: malformed, more
	// padding than alignment needs, a source route, or an unknown IPv6
	// option whose type says to discard the packet.
	BadIPOptions
	numReasons
)

var reasonNames = [numReasons]string{
	OK:             "ok",
	TruncatedEth:   "truncated-eth",
	TooManyVLANs:   "too-many-vlans",
	NotIP:          "not-ip",
	TruncatedIP:    "truncated-ip",
	BadIPVersion:   "bad-ip-version",
	BadIHL:         "bad-ihl",
	BadIPLen:       "bad-ip-len",
	BadIPCsum:      "bad-ip-csum",
	Fragment:       "fragment",
	BadExtHeader:   "bad-ext-header",
	NotUDP:         "not-udp",
	TruncatedUDP:   "truncated-udp",
	BadUDPLen:      "bad-udp-len",
	BadUDPCsum:     "bad-udp-csum",
	PartialUDPCsum: "partial-csum",
	MartianAddr:    "martian-addr",
	BadIPOptions:   "bad-ip-options",
}

// NumReasons is the number of Reason values, for arrays of counters indexed
// by Reason.
const NumReasons = int(numReasons)

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// EtherTypes and IP protocol numbers Decode knows.
const (
	EtherTypeIPv4  = 0x0800
	EtherTypeIPv6  = 0x86dd
	EtherTypeVLAN  = 0x8100 // 802.1Q
	EtherTypeQinQ  = 0x88a8 // 802.1ad service tag
	ProtoUDP       = 17
	EthHeaderLen   = 14
	VLANTagLen     = 4
	IPv4HeaderLen  = 20
	IPv6HeaderLen  = 40
	UDPHeaderLen   = 8
	MaxVLANTags    = 2
	MaxExtHeaders  = 8 // IPv6 extension headers skipped before giving up
	ipv6HopByHop   = 0
	ipv6Routing    = 43
	ipv6Fragment   = 44
	ipv6AH         = 51
	ipv6DestOpts   = 60
	ipv6Mobility   = 135
	ipv6HIP        = 139
	ipv6Shim6      = 140
	ipv4FlagMF     = 0x2000
	ipv4OffsetMask = 0x1fff
	maxIPLen       = 0xffff // the most an IP length field holds; a BIG TCP segment's says 0
	ipv6OptJumbo   = 0xc2   // the jumbo payload option
	ipv6OptPad1    = 0
	ipv6OptPadN    = 1
	ipv6OptRA      = 0x05 // router alert
	ipv6OptCALIPSO = 0x07
	ipv6MaxOpts    = 8 // options other than padding per header (net.ipv6.max_hbh_opts_number, max_dst_opts_number)
	ipv4OptEOL     = 0
	ipv4OptNOP     = 1
	ipv4OptRR      = 7
	ipv4OptTS      = 68
	ipv4OptLSRR    = 131
	ipv4OptCIPSO   = 134
	ipv4OptSSRR    = 137
	ipv4OptRA      = 148
)

// Flags change what Decode checks.
type Flags uint8

// Decode flags.
const (
	// SkipUDPChecksum leaves the UDP checksum unverified (for frames whose
	// checksum the NIC has already verified).
	SkipUDPChecksum Flags = 1 << iota
)

// Packet is what Decode learns from a frame. It holds no pointers: the
// payload is frame[PayloadOff : PayloadOff+PayloadLen].
type Packet struct {
	DstMAC, SrcMAC [6]byte
	VLAN           [MaxVLANTags]uint16 // tag control information, outer tag first
	NumVLAN        uint8
	EtherType      uint16 // after the tags

	Family   uint8          // flow.Family4 or flow.Family6; 0 before the IP header was read
	Proto    flow.Transport // the upper-layer protocol after any IPv6 extension headers
	HopLimit uint8          // IPv4 TTL or IPv6 hop limit
	Src, Dst [16]byte       // flow.AddrBytes form: IPv4 in the first 4 bytes

	// Fragment fields, set when the reason is Fragment: the fragment offset
	// in bytes, whether more fragments follow, and the identification.
	// The fragment's data (what follows the IPv4 header or the IPv6
	// fragment header) is then frame[PayloadOff : PayloadOff+PayloadLen],
	// and FragMaxEnd is the largest offset its datagram's data may reach:
	// 65,535 less the IPv4 header, or less the IPv6 extension headers
	// before the fragment header.
	FragOffset uint16
	MoreFrags  bool
	FragID     uint32
	FragMaxEnd int

	SrcPort, DstPort uint16 // host byte order

	L3Off, L4Off int // offsets of the IP and transport headers in the frame
	PayloadOff   int // offset of the UDP payload in the frame
	PayloadLen   int // UDP length minus its header
}

// Payload returns the UDP payload inside frame, the slice Decode was given.
// It returns nil when p does not fit frame.
func (p *Packet) Payload(frame []byte) []byte {
	end := p.PayloadOff + p.PayloadLen
	if p.PayloadOff < 0 || p.PayloadLen < 0 || end > len(frame) {
		return nil
	}
	return frame[p.PayloadOff:end]
}

// FiveTuple returns the packet's 5-tuple from the receiver's side: Local is
// the destination, Remote the source.
func (p *Packet) FiveTuple() flow.FiveTuple {
	return flow.FiveTuple{
		Local: p.Dst, Remote: p.Src,
		LocalPort: p.DstPort, RemotePort: p.SrcPort,
		Proto: p.Proto, Family: p.Family,
	}
}

// Decode parses frame into p, verifying the IPv4 header checksum and the UDP
// checksum, and returns OK when frame carries a well-formed, unfragmented UDP
// datagram. p is overwritten; on failure the fields read so far are set.
// Bytes after the IP packet (Ethernet padding) are ignored.
func Decode(frame []byte, p *Packet) Reason { return DecodeFlags(frame, p, 0) }

// DecodeFlags is Decode with flags.
func DecodeFlags(frame []byte, p *Packet, flags Flags) Reason {
	*p = Packet{}
	if len(frame) < EthHeaderLen {
		return TruncatedEth
	}
	copy(p.DstMAC[:], frame[0:6])
	copy(p.SrcMAC[:], frame[6:12])
	off := 12
	et := binary.BigEndian.Uint16(frame[off:])
	off += 2
	for et == EtherTypeVLAN || et == EtherTypeQinQ {
		if p.NumVLAN == MaxVLANTags {
			return TooManyVLANs
		}
		if len(frame) < off+VLANTagLen {
			return TruncatedEth
		}
		p.VLAN[p.NumVLAN] = binary.BigEndian.Uint16(frame[off:])
		p.NumVLAN++
		et = binary.BigEndian.Uint16(frame[off+2:])
		off += VLANTagLen
	}
	p.EtherType = et
	p.L3Off = off
	var (
		l4   []byte // the IP payload, cut to the IP length
		psum uint32 // pseudo-header sum without the length
		r    Reason
	)
	switch et {
	case EtherTypeIPv4:
		l4, psum, r = decodeIPv4(frame[off:], p)
	case EtherTypeIPv6:
		l4, psum, r = decodeIPv6(frame[off:], p)
	default:
		return NotIP
	}
	if r != OK {
		return r
	}
	if p.Proto != flow.TransportUDP {
		return NotUDP
	}
	if len(l4) < UDPHeaderLen {
		return TruncatedUDP
	}
	ulen := int(binary.BigEndian.Uint16(l4[4:6]))
	if ulen < UDPHeaderLen || ulen > len(l4) {
		return BadUDPLen
	}
	p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
	p.DstPort = binary.BigEndian.Uint16(l4[2:4])
	p.PayloadOff = p.L4Off + UDPHeaderLen
	p.PayloadLen = ulen - UDPHeaderLen
	if flags&SkipUDPChecksum != 0 {
		return OK
	}
	csum := binary.BigEndian.Uint16(l4[6:8])
	if csum == 0 {
		if p.Family == flow.Family4 {
			return OK // no checksum
		}
		return BadUDPCsum
	}
	if Fold(Sum(l4[:ulen], psum+uint32(ulen))) != 0xffff {
		// Off the fast path: a partial checksum is the folded
		// pseudo-header sum, length included, not complemented.
		if csum == Fold(psum+uint32(ulen)) {
			return PartialUDPCsum
		}
		return BadUDPCsum
	}
	return OK
}

// DecodeDatagram checks dg, a whole UDP datagram (header and payload) that
// was reassembled from the fragments whose first Decode read into p, as
// DecodeFlags checks the datagram of a frame: the UDP length (bytes past
// it are ignored), then the checksum over the pseudo-header of p's family
// and addresses. On OK it sets p's ports and its payload, which is then
// dg[p.PayloadOff : p.PayloadOff+p.PayloadLen]. A partial checksum is
// BadUDPCsum here: a sender resolves it before it fragments.
func DecodeDatagram(dg []byte, p *Packet) Reason {
	if len(dg) < UDPHeaderLen {
		return TruncatedUDP
	}
	ulen := int(binary.BigEndian.Uint16(dg[4:6]))
	if ulen < UDPHeaderLen || ulen > len(dg) {
		return BadUDPLen
	}
	p.SrcPort = binary.BigEndian.Uint16(dg[0:2])
	p.DstPort = binary.BigEndian.Uint16(dg[2:4])
	p.PayloadOff, p.PayloadLen = UDPHeaderLen, ulen-UDPHeaderLen
	alen := 4
	if p.Family == flow.Family6 {
		alen = 16
	}
	if binary.BigEndian.Uint16(dg[6:8]) == 0 {
		if p.Family == flow.Family4 {
			return OK
		}
		return BadUDPCsum
	}
	psum := pseudoSum(p.Src[:alen], p.Dst[:alen], ProtoUDP)
	if Fold(Sum(dg[:ulen], psum+uint32(ulen))) != 0xffff {
		return BadUDPCsum
	}
	return OK
}

// decodeIPv4 reads the IPv4 header at b[0:] and returns the IP payload cut
// to the total length and the pseudo-header sum.
func decodeIPv4(b []byte, p *Packet) ([]byte, uint32, Reason) {
	if len(b) < IPv4HeaderLen {
		return nil, 0, TruncatedIP
	}
	if b[0]>>4 != 4 {
		return nil, 0, BadIPVersion
	}
	hl := int(b[0]&0x0f) * 4
	if hl < IPv4HeaderLen {
		return nil, 0, BadIHL
	}
	if len(b) < hl {
		return nil, 0, TruncatedIP
	}
	p.Family = flow.Family4
	p.HopLimit = b[8]
	p.Proto = flow.Transport(b[9])
	copy(p.Src[:4], b[12:16])
	copy(p.Dst[:4], b[16:20])
	tl := int(binary.BigEndian.Uint16(b[2:4]))
	if tl == 0 && p.Proto == flow.TransportTCP && len(b) > maxIPLen &&
		binary.BigEndian.Uint16(b[6:8])&(ipv4FlagMF|ipv4OffsetMask) == 0 {
		tl = len(b) // BIG TCP: longer than the field holds, which says 0
	}
	if tl < hl {
		return nil, 0, BadIPLen
	}
	if tl > len(b) {
		return nil, 0, TruncatedIP
	}
	var psum uint32
	if hl == IPv4HeaderLen {
		// One pass: the header's sum and, from the same load of the
		// addresses, the pseudo-header's.
		hsum, asum := ipv4Sums(b)
		if hsum != 0xffff {
			return nil, 0, BadIPCsum
		}
		psum = uint32(asum) + uint32(b[9])
	} else {
		if Fold(Sum(b[:hl], 0)) != 0xffff {
			return nil, 0, BadIPCsum
		}
		// The kernel drops a packet whose options it refuses; the
		// app must not receive what a kernel socket would not.
		if !ipv4OptionsOK(b[IPv4HeaderLen:hl]) {
			return nil, 0, BadIPOptions
		}
		psum = Sum(b[12:20], uint32(b[9])) // the addresses are adjacent
	}
	if martian4(b[12:16], b[16:20]) {
		return nil, 0, MartianAddr
	}
	p.L4Off = p.L3Off + hl
	frag := binary.BigEndian.Uint16(b[6:8])
	if frag&(ipv4FlagMF|ipv4OffsetMask) != 0 {
		p.FragOffset = (frag & ipv4OffsetMask) * 8
		p.MoreFrags = frag&ipv4FlagMF != 0
		p.FragID = uint32(binary.BigEndian.Uint16(b[4:6]))
		p.PayloadOff, p.PayloadLen = p.L4Off, tl-hl
		p.FragMaxEnd = 0xffff - hl
		return nil, 0, Fragment
	}
	return b[hl:tl], psum, OK
}

// BigTCP6 reports whether the headers of ip, an IPv6 packet whose payload
// length field is 0, are those of a BIG TCP segment as Linux sends one:
// TCP right after the IPv6 header, or after a hop-by-hop header of 8 bytes
// holding the jumbo payload option (RFC 2675; older kernels). The caller
// checks the packet is longer than the field holds.
func BigTCP6(ip []byte) bool {
	if len(ip) < IPv6HeaderLen+8 {
		return false
	}
	switch ip[6] {
	case byte(flow.TransportTCP):
		return true
	case ipv6HopByHop:
		h := ip[IPv6HeaderLen:]
		return h[0] == byte(flow.TransportTCP) && h[1] == 0 && h[2] == ipv6OptJumbo && h[3] == 4
	}
	return false
}

// decodeIPv6 reads the IPv6 header at b[0:], skips extension headers, and
// returns the upper-layer data cut to the payload length and the
// pseudo-header sum.
func decodeIPv6(b []byte, p *Packet) ([]byte, uint32, Reason) {
	if len(b) < IPv6HeaderLen {
		return nil, 0, TruncatedIP
	}
	if b[0]>>4 != 6 {
		return nil, 0, BadIPVersion
	}
	p.Family = flow.Family6
	p.HopLimit = b[7]
	copy(p.Src[:], b[8:24])
	copy(p.Dst[:], b[24:40])
	pl := int(binary.BigEndian.Uint16(b[4:6]))
	if pl == 0 && len(b)-IPv6HeaderLen > maxIPLen && BigTCP6(b) {
		pl = len(b) - IPv6HeaderLen // BIG TCP: longer than the field holds, which says 0
	}
	if pl == 0 {
		return nil, 0, BadIPLen
	}
	if IPv6HeaderLen+pl > len(b) {
		return nil, 0, TruncatedIP
	}
	if martian6(b[8:24], b[24:40]) {
		return nil, 0, MartianAddr
	}
	next := b[6]
	data := b[IPv6HeaderLen : IPv6HeaderLen+pl]
	off := IPv6HeaderLen
	for n := 0; ; n++ {
		var hl int
		switch next {
		case ipv6HopByHop, ipv6Routing, ipv6DestOpts, ipv6Mobility, ipv6HIP, ipv6Shim6:
			if len(data) < 8 {
				return nil, 0, TruncatedIP
			}
			hl = (int(data[1]) + 1) * 8
			// A hop-by-hop header comes first or not at all (RFC
			// 8200 4.1), and the kernel acts on the options of both
			// option headers: it drops what the tests below refuse.
			if next == ipv6HopByHop && n > 0 {
				return nil, 0, BadExtHeader
			}
			if (next == ipv6HopByHop || next == ipv6DestOpts) && len(data) >= hl &&
				!ipv6OptionsOK(data[:hl], next == ipv6HopByHop, binary.BigEndian.Uint16(b[4:6]) == 0) {
				return nil, 0, BadIPOptions
			}
			if next == ipv6Routing && !routingOK(data, b[24:40], p.DstMAC) {
				return nil, 0, BadExtHeader
			}
		case ipv6AH:
			if len(data) < 8 {
				return nil, 0, TruncatedIP
			}
			hl = (int(data[1]) + 2) * 4
		case ipv6Fragment:
			if len(data) < 8 {
				return nil, 0, TruncatedIP
			}
			hl = 8
			fo := binary.BigEndian.Uint16(data[2:4])
			if fo&0xfff9 != 0 { // offset or M set: a real fragment
				p.Proto = flow.Transport(data[0])
				p.FragOffset = fo &^ 7
				p.MoreFrags = fo&1 != 0
				p.FragID = binary.BigEndian.Uint32(data[4:8])
				p.L4Off = p.L3Off + off
				p.PayloadOff, p.PayloadLen = p.L4Off+8, len(data)-8
				p.FragMaxEnd = 0xffff - (off - IPv6HeaderLen)
				return nil, 0, Fragment
			}
		default:
			p.Proto = flow.Transport(next)
			p.L4Off = p.L3Off + off
			return data, Sum(b[8:40], uint32(next)), OK // source and destination, adjacent
		}
		if n == MaxExtHeaders {
			return nil, 0, BadExtHeader
		}
		if len(data) < hl {
			return nil, 0, TruncatedIP
		}
		next = data[0]
		data = data[hl:]
		off += hl
	}
}

// Routing header types (RFC 8200 4.4) the kernel handles apart.
const (
	ipv6RoutingMIP6 = 2 // Mobile IPv6's home address (RFC 6275)
	ipv6RoutingRPL  = 3 // RPL source route (RFC 6554)
	ipv6RoutingSRH  = 4 // segment routing (RFC 8754)
)

// routingOK reports whether the kernel skips the routing header rt (at
// least its first 8 bytes) of a packet to dst in a frame to dstMAC, as it
// does the header of a packet that has reached its last hop
// (ipv6_rthdr_rcv), rather than drop the packet: one whose destination
// is unicast and whose frame is to the interface's own MAC (PACKET_HOST,
// not broadcast or multicast), and whose header has no segments left
// (the kernel does not forward by source route: it answers a parameter
// problem) and is not of a type it drops at the last hop too: segment
// routing or RPL (taken only where seg6_enabled or rpl_seg_enabled is
// set, both off by default), or Mobile IPv6's (dropped unless it held
// one of the host's home addresses, by a kernel built with Mobile IPv6
// as distributions build it; one without skips it, a difference no peer
// but a mobile node's has a use for).
func routingOK(rt, dst []byte, dstMAC [6]byte) bool {
	if dst[0] == 0xff || dstMAC[0]&1 != 0 {
		return false
	}
	switch rt[2] {
	case ipv6RoutingMIP6, ipv6RoutingRPL, ipv6RoutingSRH:
		return false
	}
	return rt[3] == 0
}

// martian4 reports whether an IPv4 packet from src to dst arriving on a
// link is one the kernel drops as martian (ip_route_input_slow): a source
// in 224/4, 255.255.255.255, 127/8 (route_localnet is off by default) or
// 0/8 (but to the limited broadcast, or from and to 0.0.0.0), a
// destination in 0/8 or 127/8.
func martian4(src, dst []byte) bool {
	lbcast := dst[0]&dst[1]&dst[2]&dst[3] == 0xff
	zero := src[0]|src[1]|src[2]|src[3] == 0 && dst[0]|dst[1]|dst[2]|dst[3] == 0
	switch {
	case src[0]&0xf0 == 0xe0, src[0]&src[1]&src[2]&src[3] == 0xff, src[0] == 127:
		return true
	case lbcast || zero:
		return false
	}
	return src[0] == 0 || dst[0] == 0 || dst[0] == 127
}

// martian6 reports whether an IPv6 packet from src to dst arriving on a
// link is one the kernel drops (ip6_rcv_core): from or to ::1, from a
// multicast address, to a multicast address of scope 0 (reserved) or 1
// (interface-local).
func martian6(src, dst []byte) bool {
	loop := func(a []byte) bool {
		return binary.BigEndian.Uint64(a) == 0 && binary.BigEndian.Uint64(a[8:]) == 1
	}
	return loop(src) || loop(dst) || src[0] == 0xff || dst[0] == 0xff && dst[1]&0x0f <= 1
}

// ipv4OptionsOK reports whether the kernel accepts the IPv4 options opts
// of a packet it receives (ip_options_compile, ip_rcv_options): each
// option whole, a record route or timestamp once, with its pointer in
// range and, when it points inside the option, room for an entry; a
// timestamp whose overflow count has not run out; a router alert of 4
// bytes or more; no source route (net.ipv4.conf.all.accept_source_route
// is off by default) and no CIPSO label (valid only under a configured
// domain of interpretation).
func ipv4OptionsOK(opts []byte) bool {
	var rr, ts bool
	for len(opts) > 0 {
		switch opts[0] {
		case ipv4OptEOL:
			return true
		case ipv4OptNOP:
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 {
			return false
		}
		l := int(opts[1])
		if l < 2 || l > len(opts) {
			return false
		}
		o := opts[:l]
		switch o[0] {
		case ipv4OptLSRR, ipv4OptSSRR, ipv4OptCIPSO:
			return false
		case ipv4OptRR:
			if rr || l < 3 || o[2] < 4 || int(o[2]) <= l && int(o[2])+3 > l {
				return false
			}
			rr = true
		case ipv4OptTS:
			if ts || l < 4 || o[2] < 5 {
				return false
			}
			ptr, flag := int(o[2]), o[3]&0x0f
			switch {
			case ptr <= l && ptr+3 > l, ptr <= l && (flag == 1 || flag == 3) && ptr+7 > l:
				return false // no room for the entry (checked whatever the flag)
			case ptr > l && flag != 3 && o[3]>>4 == 15:
				return false // full, and the overflow count too
			}
			ts = true
		case ipv4OptRA:
			if l < 4 {
				return false
			}
		}
		opts = opts[l:]
	}
	return true
}

// ipv6OptionsOK reports whether the kernel accepts the options of h, a
// whole hop-by-hop (hopByHop) or destination options header
// (ip6_parse_tlv): each option whole, padding only where alignment needs
// it (at most 7 bytes in a row, PadN of zeros), at most ipv6MaxOpts other
// options, and none the kernel refuses: a router alert not 2 bytes long, a
// CALIPSO label (no domain of interpretation is configured), a jumbo
// payload option but where the payload length says 0 (jumboLen: BIG TCP),
// an unknown option whose type's top bits say to discard the packet.
func ipv6OptionsOK(h []byte, hopByHop, jumboLen bool) bool {
	o := h[2:]
	pad, n := 0, 0
	for len(o) > 0 {
		if o[0] == ipv6OptPad1 {
			if pad++; pad > 7 {
				return false
			}
			o = o[1:]
			continue
		}
		if len(o) < 2 || int(o[1])+2 > len(o) {
			return false
		}
		l := int(o[1]) + 2
		switch t := o[0]; {
		case t == ipv6OptPadN:
			if pad += l; pad > 7 {
				return false
			}
			for _, c := range o[2:l] {
				if c != 0 {
					return false
				}
			}
			o = o[l:]
			continue
		case hopByHop && t == ipv6OptRA:
			if l != 4 {
				return false
			}
		case hopByHop && t == ipv6OptJumbo:
			if !jumboLen {
				return false
			}
		case hopByHop && t == ipv6OptCALIPSO:
			return false
		case t>>6 != 0: // unknown: discard the packet
			return false
		}
		if n++; n > ipv6MaxOpts {
			return false
		}
		pad = 0
		o = o[l:]
	}
	return true
}

// StripIPv6Options removes, in place, the hop-by-hop options, destination
// options and atomic fragment headers that sit between the IPv6 header of
// ip and its upper-layer header, at offset l4 of ip (as Decode found it,
// less L3Off). It returns the packet that then starts l4-IPv6HeaderLen
// bytes into ip: the IPv6 header moved up to the upper layer's, its next
// header that layer's and its payload length less what was removed. The
// upper layer's checksum still holds: its pseudo-header has neither the
// headers nor their length. Decode has checked the options; a kernel
// acts on none of those it lets through but to skip them. With any other
// header in the chain (a routing header, which may change the
// destination; AH; ESP), a jumbogram, or a chain that does not end at l4,
// ip is returned as it is.
func StripIPv6Options(ip []byte, l4 int) []byte {
	if l4 <= IPv6HeaderLen || l4 > len(ip) || ip[0]>>4 != 6 {
		return ip
	}
	pl := int(binary.BigEndian.Uint16(ip[4:6]))
	if pl == 0 || IPv6HeaderLen+pl > len(ip) || IPv6HeaderLen+pl < l4 {
		return ip
	}
	next, off := ip[6], IPv6HeaderLen
	for off < l4 {
		var hl int
		switch next {
		case ipv6HopByHop, ipv6DestOpts:
			if off+2 > l4 {
				return ip
			}
			hl = (int(ip[off+1]) + 1) * 8
		case ipv6Fragment:
			if off+8 > l4 || binary.BigEndian.Uint16(ip[off+2:off+4])&0xfff9 != 0 {
				return ip
			}
			hl = 8
		default:
			return ip
		}
		next = ip[off]
		off += hl
	}
	if off != l4 {
		return ip
	}
	ext := l4 - IPv6HeaderLen
	copy(ip[ext:l4], ip[:IPv6HeaderLen])
	out := ip[ext:]
	out[6] = next
	binary.BigEndian.PutUint16(out[4:6], uint16(pl-ext))
	return out
}
