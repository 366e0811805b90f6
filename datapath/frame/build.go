package frame

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
)

// Errors of the builder.
var (
	// ErrInvalidSpec: a Spec field is unusable (MAC length, address family
	// mismatch, VLAN id out of range).
	ErrInvalidSpec = errors.New("invalid header spec")
	// ErrShortBuffer: the destination cannot hold the frame.
	ErrShortBuffer = errors.New("frame buffer too short")
	// ErrTooLong: the payload does not fit the IP or UDP length fields.
	ErrTooLong = errors.New("payload too long for one datagram")
)

// Spec describes the headers of one session's frames.
type Spec struct {
	DstMAC, SrcMAC   net.HardwareAddr // 6 bytes each
	VLAN             bool             // insert an 802.1Q tag
	VLANTCI          uint16           // the tag's priority, DEI and VLAN id
	Src, Dst         netip.Addr       // both IPv4 or both IPv6 (IPv4-mapped IPv6 counts as IPv4)
	SrcPort, DstPort uint16           // host byte order
	HopLimit         uint8            // IPv4 TTL or IPv6 hop limit; 0 means 64
	TOS              uint8            // IPv4 TOS or IPv6 traffic class
	FlowLabel        uint32           // IPv6 only, 20 bits
	DontFragment     bool             // set DF on IPv4
}

// MaxHeaderLen is the longest header a Template writes: Ethernet, one VLAN
// tag, IPv6 and UDP.
const MaxHeaderLen = EthHeaderLen + VLANTagLen + IPv6HeaderLen + UDPHeaderLen

// Template is a prepared header for one session. Build and BuildInPlace
// write a frame from it; they update the IPv4 identification counter, so a
// Template is used by one goroutine at a time. The zero Template is not
// usable; fill one with Prepare.
type Template struct {
	hdr    [MaxHeaderLen]byte
	hlen   int // header length: payload starts here
	l3off  int
	l4off  int
	v6     bool
	ipSum  uint32 // IPv4 header sum with total length, id and checksum zero
	udpSum uint32 // pseudo-header addresses and protocol, plus both ports
	ipID   uint16
}

// Prepare fills t for spec. It computes the constant parts of both
// checksums once so that building a frame only adds the lengths, the IPv4
// identification and the payload.
func (t *Template) Prepare(spec Spec) error {
	if len(spec.DstMAC) != 6 || len(spec.SrcMAC) != 6 {
		return ErrInvalidSpec
	}
	src, dst := spec.Src.Unmap(), spec.Dst.Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return ErrInvalidSpec
	}
	if spec.VLAN && spec.VLANTCI&0x0fff == 0x0fff {
		return ErrInvalidSpec
	}
	if spec.FlowLabel > 0xfffff {
		return ErrInvalidSpec
	}
	// The identification starts at a random value, as Linux's for a
	// datagram that may be fragmented: templates of one destination (other
	// ports, another worker) do not count up from the same place, so
	// their datagrams' fragments do not share identifications (RFC 6864),
	// and a template made anew does not repeat those of the last.
	*t = Template{ipID: uint16(rand.Uint32())}
	h := t.hdr[:]
	copy(h[0:6], spec.DstMAC)
	copy(h[6:12], spec.SrcMAC)
	off := 12
	if spec.VLAN {
		binary.BigEndian.PutUint16(h[off:], EtherTypeVLAN)
		binary.BigEndian.PutUint16(h[off+2:], spec.VLANTCI)
		off += VLANTagLen
	}
	ttl := spec.HopLimit
	if ttl == 0 {
		ttl = 64
	}
	t.v6 = !src.Is4()
	if t.v6 {
		binary.BigEndian.PutUint16(h[off:], EtherTypeIPv6)
		off += 2
		t.l3off = off
		ip := h[off : off+IPv6HeaderLen]
		binary.BigEndian.PutUint32(ip[0:4], 6<<28|uint32(spec.TOS)<<20|spec.FlowLabel)
		ip[6] = ProtoUDP
		ip[7] = ttl
		s, d := src.As16(), dst.As16()
		copy(ip[8:24], s[:])
		copy(ip[24:40], d[:])
		t.udpSum = pseudoSum(ip[8:24], ip[24:40], ProtoUDP)
		off += IPv6HeaderLen
	} else {
		binary.BigEndian.PutUint16(h[off:], EtherTypeIPv4)
		off += 2
		t.l3off = off
		ip := h[off : off+IPv4HeaderLen]
		ip[0] = 0x45
		ip[1] = spec.TOS
		if spec.DontFragment {
			ip[6] = 0x40
		}
		ip[8] = ttl
		ip[9] = ProtoUDP
		s, d := src.As4(), dst.As4()
		copy(ip[12:16], s[:])
		copy(ip[16:20], d[:])
		t.ipSum = Sum(ip, 0)
		t.udpSum = pseudoSum(ip[12:16], ip[16:20], ProtoUDP)
		off += IPv4HeaderLen
	}
	t.l4off = off
	binary.BigEndian.PutUint16(h[off:], spec.SrcPort)
	binary.BigEndian.PutUint16(h[off+2:], spec.DstPort)
	t.udpSum = Sum(h[off:off+4], t.udpSum)
	t.hlen = off + UDPHeaderLen
	return nil
}

// HeaderLen is the length of the headers: a payload written at
// frame[HeaderLen():] can be finished with BuildInPlace.
func (t *Template) HeaderLen() int { return t.hlen }

// MaxPayload is the longest payload the length fields can carry (the MTU is
// the caller's business).
func (t *Template) MaxPayload() int {
	if t.v6 {
		return 0xffff - UDPHeaderLen
	}
	return 0xffff - IPv4HeaderLen - UDPHeaderLen
}

// Build writes the headers and payload into dst and returns the frame
// length.
func (t *Template) Build(dst, payload []byte) (int, error) {
	if t.hlen == 0 {
		return 0, ErrInvalidSpec
	}
	if len(payload) > t.MaxPayload() {
		return 0, ErrTooLong
	}
	n := t.hlen + len(payload)
	if len(dst) < n {
		return 0, ErrShortBuffer
	}
	copy(dst[t.hlen:n], payload)
	t.finish(dst[:n], len(payload))
	return n, nil
}

// BuildInPlace finishes a frame whose payload of payloadLen bytes already
// sits at frame[HeaderLen():], writing the headers in front of it, and
// returns the frame length.
func (t *Template) BuildInPlace(frame []byte, payloadLen int) (int, error) {
	if t.hlen == 0 {
		return 0, ErrInvalidSpec
	}
	if payloadLen < 0 || payloadLen > t.MaxPayload() {
		return 0, ErrTooLong
	}
	n := t.hlen + payloadLen
	if len(frame) < n {
		return 0, ErrShortBuffer
	}
	t.finish(frame[:n], payloadLen)
	return n, nil
}

// finish writes the headers into f (whose payload is in place) and fills in
// lengths and checksums.
func (t *Template) finish(f []byte, plen int) {
	copy(f, t.hdr[:t.hlen])
	ulen := uint16(UDPHeaderLen + plen)
	u := f[t.l4off : t.l4off+UDPHeaderLen]
	binary.BigEndian.PutUint16(u[4:6], ulen)
	if t.v6 {
		binary.BigEndian.PutUint16(f[t.l3off+4:], ulen)
	} else {
		ip := f[t.l3off : t.l3off+IPv4HeaderLen]
		tl := IPv4HeaderLen + ulen
		t.ipID++
		binary.BigEndian.PutUint16(ip[2:4], tl)
		binary.BigEndian.PutUint16(ip[4:6], t.ipID)
		binary.BigEndian.PutUint16(ip[10:12], ^Fold(t.ipSum+uint32(tl)+uint32(t.ipID)))
	}
	// The UDP length counts twice: in the pseudo-header and in the header.
	cs := ^Fold(Sum(f[t.hlen:], t.udpSum+2*uint32(ulen)))
	if cs == 0 {
		cs = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:8], cs)
}
