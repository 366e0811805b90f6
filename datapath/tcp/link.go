package tcp

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Writer takes the stack's outbound packets. WritePacket is called for each
// IP packet the stack sends (only TCP ever reaches it), from gVisor's
// goroutines, from goroutines calling into a Conn and from the link's
// delayed-acknowledgement timers (ack.go), possibly many at a time: it
// must be safe for concurrent use, must not block for long, and must not
// call back into the Stack. The Packet is valid only during the call:
// copy it (Packet.CopyTo) into the frame that carries it, or keep it with
// Packet.Retain and Release it once sent. Returning false drops the
// packet (TCP retransmits it, after a timeout: gVisor takes no drop as a
// sign of congestion) and counts it in Stats.TxDropped.
//
// gVisor produces packets one at a time (each TCP segment is written as it
// is built), so the interface is per packet; the worker batches on its
// side.
type Writer interface {
	WritePacket(p Packet) bool
}

// WriterFunc adapts a function to a Writer.
type WriterFunc func(p Packet) bool

// WritePacket calls f(p).
func (f WriterFunc) WritePacket(p Packet) bool { return f(p) }

// Packet is one outbound IP packet, valid only during Writer.WritePacket
// unless retained.
type Packet struct {
	pb    *stack.PacketBuffer
	proto tcpip.NetworkProtocolNumber
}

// Len returns the packet's length in bytes (IP header included).
func (p Packet) Len() int { return p.pb.Size() }

// HasPayload reports whether the packet carries bytes beyond its headers
// (a TCP segment with data, not a bare acknowledgement or control
// segment).
func (p Packet) HasPayload() bool { return p.pb.Data().Size() > 0 }

// EtherType returns the EtherType of the packet: 0x0800 or 0x86DD.
func (p Packet) EtherType() uint16 { return uint16(p.proto) }

// Dst returns the packet's destination address.
func (p Packet) Dst() netip.Addr {
	_, dst := p.Addrs()
	return dst
}

// Addrs returns the packet's source (this host's end) and destination
// addresses, invalid when its IP header is not whole.
func (p Packet) Addrs() (src, dst netip.Addr) {
	h := p.pb.NetworkHeader().Slice()
	switch {
	case p.proto == ipv4.ProtocolNumber && len(h) >= header.IPv4MinimumSize:
		return netip.AddrFrom4([4]byte(h[12:16])), netip.AddrFrom4([4]byte(h[16:20]))
	case p.proto == ipv6.ProtocolNumber && len(h) >= header.IPv6MinimumSize:
		return netip.AddrFrom16([16]byte(h[8:24])), netip.AddrFrom16([16]byte(h[24:40]))
	}
	return netip.Addr{}, netip.Addr{}
}

// Conn returns the packet's connection, its source being this host's
// end, and whether it is a SYN (a handshake's first segment or its
// answer); ok is false if its headers are not whole.
func (p Packet) Conn() (local, remote netip.AddrPort, syn, ok bool) {
	th := p.pb.TransportHeader().Slice()
	if len(th) < header.TCPMinimumSize {
		return
	}
	src, dst := p.Addrs()
	if !src.IsValid() {
		return
	}
	tcpH := header.TCP(th)
	local, remote = netip.AddrPortFrom(src, tcpH.SourcePort()), netip.AddrPortFrom(dst, tcpH.DestinationPort())
	return local, remote, tcpH.Flags().Contains(header.TCPFlagSyn), true
}

// CopyTo copies the packet into dst and returns the bytes copied, Len()
// when dst is large enough. It allocates nothing.
func (p Packet) CopyTo(dst []byte) int {
	vl, off := p.pb.AsViewList()
	n := 0
	for v := vl.Front(); v != nil && n < len(dst); v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		n += copy(dst[n:], b[off:])
		off = 0
	}
	return n
}

// AppendSlices appends the packet's bytes, in order, to dst as slices of
// the Stack's buffers (valid while the packet is retained) and returns
// dst.
func (p Packet) AppendSlices(dst [][]byte) [][]byte {
	vl, off := p.pb.AsViewList()
	for v := vl.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		dst = append(dst, b[off:])
		off = 0
	}
	return dst
}

// VirtioNetHdrLen is the size of the header VirtioNetHdr writes.
const VirtioNetHdrLen = 10

// VirtioNetHdr writes into h the virtio-net header (linux/virtio_net.h)
// that tells the kernel how to finish the packet when it is sent behind a
// link header of linkHdrLen bytes: where its checksum starts and goes, for
// a packet of a HostGSO stack whose checksum is partial, and the segment
// size, for one larger than a segment. It is all zeros for a packet that
// is complete as it is.
func (p Packet) VirtioNetHdr(h *[VirtioNetHdrLen]byte, linkHdrLen int) {
	*h = [VirtioNetHdrLen]byte{}
	g := &p.pb.GSOOptions
	if g.Type == stack.GSONone {
		return
	}
	le := binary.NativeEndian // a packet socket's header is in the host's order
	if g.NeedsCsum {
		h[0] = 1                                           // VIRTIO_NET_HDR_F_NEEDS_CSUM
		le.PutUint16(h[6:], uint16(linkHdrLen)+g.L3HdrLen) // csum_start
		le.PutUint16(h[8:], g.CsumOffset)                  // csum_offset
	}
	if p.pb.Data().Size() > int(g.MSS) {
		switch g.Type {
		case stack.GSOTCPv4:
			h[1] = 1 // VIRTIO_NET_HDR_GSO_TCPV4
		case stack.GSOTCPv6:
			h[1] = 4 // VIRTIO_NET_HDR_GSO_TCPV6
		default:
			return
		}
		le.PutUint16(h[2:], uint16(linkHdrLen+p.pb.HeaderSize())) // hdr_len
		le.PutUint16(h[4:], g.MSS)                                // gso_size
	}
}

// Retain keeps the packet valid after Writer.WritePacket returns, until
// Release. The packet's bytes are shared with the Stack (a data segment's
// payload is the one its retransmit queue holds), so a retained packet
// costs its headers, not a copy.
func (p Packet) Retain() Packet {
	p.pb.IncRef()
	return p
}

// Release ends a Retain; the Packet must not be used after it.
func (p Packet) Release() { p.pb.DecRef() }

// The least MSS ClampMSS advertises: Linux's default min_adv_mss.
const (
	minAdvMSS4 = 256
	minAdvMSS6 = 1220
)

// ClampMSS lowers the MSS option of a SYN or SYN-ACK to what fits a
// route of MTU mtu to its destination (mtu less the IP and TCP headers,
// not below Linux's floor), as the kernel's TCP advertises by the route
// and as its TCPMSS target clamps, and reports whether it changed it. gVisor sizes a SYN-ACK's MSS
// by the link alone: a peer behind a route of smaller MTU would send
// segments that do not fit it until path MTU discovery caught up. The
// TCP checksum is updated incrementally (RFC 1624) unless it is partial,
// for the kernel to finish, which does not cover the options. Packets
// other than SYNs, and SYNs without a larger MSS, are left as they are.
func (p Packet) ClampMSS(mtu int) bool {
	th := p.pb.TransportHeader().Slice()
	if len(th) < header.TCPMinimumSize {
		return false
	}
	t := header.TCP(th)
	if !t.Flags().Contains(header.TCPFlagSyn) {
		return false
	}
	// Not below Linux's floor (net.ipv4.route.min_adv_mss,
	// net.ipv6.route.min_adv_mss: 256 and 1220 by default), which its
	// SYN-ACK never goes under whatever the route says.
	limit := max(mtu-header.TCPMinimumSize-header.IPv4MinimumSize, minAdvMSS4)
	if p.proto == ipv6.ProtocolNumber {
		limit = max(mtu-header.TCPMinimumSize-header.IPv6MinimumSize, minAdvMSS6)
	}
	off := int(t.DataOffset())
	if off < header.TCPMinimumSize || off > len(th) {
		return false
	}
	for i := header.TCPMinimumSize; i < off; {
		switch th[i] {
		case header.TCPOptionEOL:
			return false
		case header.TCPOptionNOP:
			i++
			continue
		}
		if i+1 >= off || th[i+1] < 2 || i+int(th[i+1]) > off {
			return false
		}
		if th[i] != header.TCPOptionMSS || th[i+1] != header.TCPOptionMSSLength {
			i += int(th[i+1])
			continue
		}
		old, mss := binary.BigEndian.Uint16(th[i+2:]), uint16(min(limit, 0xffff))
		if old <= mss {
			return false
		}
		binary.BigEndian.PutUint16(th[i+2:], mss)
		if g := &p.pb.GSOOptions; g.Type != stack.GSONone && g.NeedsCsum {
			return true
		}
		if i%2 == 1 {
			// The value at an odd offset (i+2) adds to the sum
			// byte-swapped.
			old, mss = bits.ReverseBytes16(old), bits.ReverseBytes16(mss)
		}
		t.SetChecksum(^checksum.Combine(checksum.Combine(^t.Checksum(), ^old), mss))
		return true
	}
	return false
}

// AppendTo appends the packet to dst.
func (p Packet) AppendTo(dst []byte) []byte {
	l := len(dst)
	dst = append(dst, make([]byte, p.Len())...)
	return dst[:l+p.CopyTo(dst[l:])]
}

// LinkEndpoint is the Stack's NIC: gVisor's stack.LinkEndpoint for this
// gVisor version. Its inbound side is Inject/InjectBatch, fed with IP
// packets (the worker strips the Ethernet header it parsed); its outbound
// side is the Stack's Writer. It has no link header, no link-address
// resolution (the kernel owns ARP/ND: the worker resolves the next hop) and
// no goroutine. All methods are safe for concurrent use.
type LinkEndpoint struct {
	w Writer
	// verify: check inbound checksums here (Options.RXChecksumOffload
	// off). gVisor is always told the link verified them, as its receive
	// offload (InjectBatch) rewrites the headers of the segments it
	// coalesces without fixing their checksums.
	verify bool
	// hostGSO: the Writer's link segments and checksums (Options.HostGSO).
	hostGSO bool
	// win keeps bare acknowledgements inside the peers' windows and
	// holds back those worth delaying (ack.go).
	win *windows
	// ackDelay is how long a bare acknowledgement may be held back
	// (Options.AckDelay); 0: none is.
	ackDelay time.Duration

	mu         sync.RWMutex // guards the fields below
	dispatcher stack.NetworkDispatcher
	mtu        uint32
	linkAddr   tcpip.LinkAddress
	onClose    func()

	rxPackets, rxDropped, rxBadCsum, rxBig, txPackets, txDropped, txNonTCP atomic.Uint64
}

var _ stack.LinkEndpoint = (*LinkEndpoint)(nil)

func newLinkEndpoint(w Writer, mtu uint32, rxCsumOffload, hostGSO bool, ackDelay time.Duration) *LinkEndpoint {
	return &LinkEndpoint{w: w, mtu: mtu, verify: !rxCsumOffload, hostGSO: hostGSO, ackDelay: ackDelay, win: newWindows()}
}

// Inject hands one inbound IP packet to the stack and reports whether it
// was accepted for processing. The bytes are copied before Inject returns,
// so the caller may reuse pkt at once. Anything that is not an IPv4 packet
// carrying TCP (IPv4 fragments included), or an IPv6 packet whose next
// header is TCP (no extension headers), is dropped here and counted; so is
// a packet whose IPv4 header or TCP checksum is wrong, unless
// RXChecksumOffload says the link checked them. What passes is validated
// by gVisor (lengths, options). No input makes it panic. TCP processing
// runs on gVisor's goroutines; Inject only parses the IP header and queues
// the segment.
func (e *LinkEndpoint) Inject(pkt []byte) bool {
	proto, ok := e.check(pkt)
	if !ok {
		return false
	}
	e.mu.RLock()
	d := e.dispatcher
	e.mu.RUnlock()
	if d == nil {
		e.rxDropped.Add(1)
		return false
	}
	e.win.inbound(pkt)
	if isBig(pkt, proto) {
		e.rxBig.Add(1)
		deliverBig(d, pkt, proto)
	} else {
		deliver(d, copied(pkt, proto), proto)
	}
	e.rxPackets.Add(1)
	return true
}

// check classifies pkt and verifies its checksums when the link did not;
// it counts what it drops. The peers' windows (e.win) are noted from what
// gVisor is then handed.
func (e *LinkEndpoint) check(pkt []byte) (tcpip.NetworkProtocolNumber, bool) {
	proto, ok := classify(pkt)
	if !ok {
		e.rxDropped.Add(1)
		return 0, false
	}
	if e.verify && !checksumsValid(pkt, proto) {
		e.rxBadCsum.Add(1)
		return 0, false
	}
	return proto, true
}

// checksumsValid verifies the IPv4 header checksum and the TCP checksum of
// a packet classify accepted.
func checksumsValid(pkt []byte, proto tcpip.NetworkProtocolNumber) bool {
	var seg []byte
	var src, dst tcpip.Address
	total := ipLen(pkt, proto)
	if proto == ipv4.ProtocolNumber {
		ihl := int(pkt[0]&0xf) * 4
		if total < ihl+header.TCPMinimumSize || checksum.Checksum(pkt[:ihl], 0) != 0xffff {
			return false
		}
		seg = pkt[ihl:total]
		src, dst = tcpip.AddrFrom4([4]byte(pkt[12:16])), tcpip.AddrFrom4([4]byte(pkt[16:20]))
	} else {
		seg = pkt[min(tcpAt(pkt, proto), total):total]
		if len(seg) < header.TCPMinimumSize {
			return false
		}
		src, dst = tcpip.AddrFrom16([16]byte(pkt[8:24])), tcpip.AddrFrom16([16]byte(pkt[24:40]))
	}
	// The length in 32 bits: a BIG TCP segment's is longer than 16.
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, 0)
	sum = checksum.Combine(checksum.Combine(sum, uint16(len(seg)>>16)), uint16(len(seg)))
	return checksum.Checksum(seg, sum) == 0xffff
}

// InjectBatch injects each packet of pkts and returns how many were
// accepted, as Inject does, but coalesces the consecutive in-order
// segments of each connection in the batch into one (coalesce.go), so
// that a batch costs gVisor's TCP one segment (and at most one ACK) per
// run of segments rather than one per packet. The workers call it with
// what one poll of the rx ring gave.
func (e *LinkEndpoint) InjectBatch(pkts [][]byte) int {
	if len(pkts) == 1 {
		if e.Inject(pkts[0]) {
			return 1
		}
		return 0
	}
	e.mu.RLock()
	d := e.dispatcher
	e.mu.RUnlock()
	if d == nil {
		e.rxDropped.Add(uint64(len(pkts)))
		return 0
	}
	c := coalescerPool.Get().(*coalescer)
	c.protos, c.win, c.big = c.protos[:0], e.win, &e.rxBig
	n := 0
	for _, pkt := range pkts {
		proto, ok := e.check(pkt)
		if !ok {
			proto = 0
		} else {
			n++
		}
		c.protos = append(c.protos, proto)
	}
	c.inject(d, pkts, c.protos)
	coalescerPool.Put(c)
	e.rxPackets.Add(uint64(n))
	return n
}

// classify returns the network protocol of a packet worth handing to gVisor.
func classify(pkt []byte) (tcpip.NetworkProtocolNumber, bool) {
	if len(pkt) == 0 {
		return 0, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < header.IPv4MinimumSize || pkt[9] != uint8(header.TCPProtocolNumber) {
			return 0, false
		}
		ihl := int(pkt[0]&0xf) * 4
		if ihl < header.IPv4MinimumSize || int(binary.BigEndian.Uint16(pkt[2:4])) > len(pkt) {
			return 0, false
		}
		if binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 {
			// A fragment (MF or an offset): TCP sets DF, and a
			// fragment's TCP checksum cannot be checked alone.
			return 0, false
		}
		return ipv4.ProtocolNumber, true
	case 6:
		if len(pkt) < header.IPv6MinimumSize {
			return 0, false
		}
		if pkt[6] != uint8(header.TCPProtocolNumber) && !isBig(pkt, ipv6.ProtocolNumber) {
			return 0, false
		}
		if header.IPv6MinimumSize+int(binary.BigEndian.Uint16(pkt[4:6])) > len(pkt) {
			return 0, false
		}
		return ipv6.ProtocolNumber, true
	}
	return 0, false
}

// WritePackets implements stack.LinkWriter: each packet goes to the Writer.
// The stack keeps ownership of the packets. (The Stack's NIC writes through
// directQDisc instead, which skips the list gVisor's default queueing
// discipline allocates per packet.)
func (e *LinkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pb := range pkts.AsSlice() {
		if err := e.writePacket(pb); err != nil {
			if n == 0 {
				return 0, err
			}
			break
		}
		n++
	}
	return n, nil
}

// writePacket hands one packet to the Writer.
func (e *LinkEndpoint) writePacket(pb *stack.PacketBuffer) tcpip.Error {
	if pb.TransportProtocolNumber != header.TCPProtocolNumber {
		// ICMP errors, MLD, NDP: the kernel speaks those for the host.
		e.txNonTCP.Add(1)
		return nil
	}
	if th := pb.TransportHeader().Slice(); len(th) >= header.TCPMinimumSize && th[13]&(flagSYN|flagACK) == flagSYN|flagACK {
		if nh := pb.NetworkHeader().Slice(); len(nh) >= header.IPv4MinimumSize && (nh[0]>>4 == 4 || len(nh) >= header.IPv6MinimumSize) {
			e.win.noteSYNACK(nh, th)
		}
	}
	if pw := e.win.sending(pb); pw != nil {
		e.win.outbound(pb, pw)
		if e.ackDelay > 0 && e.hold(pb, pw) {
			return nil // ack.go
		}
	}
	if !e.send(pb) {
		return &tcpip.ErrNoBufferSpace{}
	}
	return nil
}

// send hands pb to the Writer and counts it; false: the Writer dropped it.
func (e *LinkEndpoint) send(pb *stack.PacketBuffer) bool {
	if !e.w.WritePacket(Packet{pb: pb, proto: pb.NetworkProtocolNumber}) {
		e.txDropped.Add(1)
		return false
	}
	e.txPackets.Add(1)
	return true
}

// directQDisc is the NIC's queueing discipline: none. It passes each
// packet straight to the link (the worker's tx queue is the queue).
type directQDisc struct{ l *LinkEndpoint }

func (q directQDisc) WritePacket(pb *stack.PacketBuffer) tcpip.Error { return q.l.writePacket(pb) }

func (directQDisc) Close() {}

// GSOMaxSize implements stack.GSOEndpoint: gVisor's TCP sender queues
// and tracks segments of up to 64 KiB.
func (*LinkEndpoint) GSOMaxSize() uint32 { return stack.GVisorGSOMaxSize }

// SupportedGSO implements stack.GSOEndpoint. With Options.HostGSO, the
// host's: the sender hands out segments of up to 64 KiB with partial
// checksums and the link (the kernel) cuts them. Otherwise gVisor's
// software segmentation: the sender builds large segments and gVisor cuts
// each into packets of at most the MSS before they reach the link, so the
// Writer still sees packets no larger than the MTU, but the sender's
// per-segment work (queueing, timers, loss detection) is done once per
// large segment.
func (e *LinkEndpoint) SupportedGSO() stack.SupportedGSO {
	if e.hostGSO {
		return stack.HostGSOSupported
	}
	return stack.GVisorGSOSupported
}

// MTU implements stack.LinkEndpoint.
func (e *LinkEndpoint) MTU() uint32 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.mtu
}

// SetMTU implements stack.LinkEndpoint.
func (e *LinkEndpoint) SetMTU(mtu uint32) {
	e.mu.Lock()
	e.mtu = mtu
	e.mu.Unlock()
}

// MaxHeaderLength implements stack.LinkEndpoint: no link header (the worker
// prepends Ethernet while copying).
func (*LinkEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint.
func (e *LinkEndpoint) LinkAddress() tcpip.LinkAddress {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.linkAddr
}

// SetLinkAddress implements stack.LinkEndpoint.
func (e *LinkEndpoint) SetLinkAddress(a tcpip.LinkAddress) {
	e.mu.Lock()
	e.linkAddr = a
	e.mu.Unlock()
}

// Capabilities implements stack.LinkEndpoint: RX checksum offload (the
// link, or Inject, verified inbound checksums), never TX offload (gVisor
// computes outbound checksums in software).
func (*LinkEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// Attach implements stack.LinkEndpoint.
func (e *LinkEndpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	e.dispatcher = d
	e.mu.Unlock()
}

// IsAttached implements stack.LinkEndpoint.
func (e *LinkEndpoint) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// Wait implements stack.LinkEndpoint: there is no goroutine to wait for.
func (*LinkEndpoint) Wait() {}

// ARPHardwareType implements stack.LinkEndpoint.
func (*LinkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint: no link header.
func (*LinkEndpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint: no link header.
func (*LinkEndpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.LinkEndpoint: it detaches the dispatcher, so
// later Injects are dropped.
func (e *LinkEndpoint) Close() {
	e.mu.Lock()
	e.dispatcher = nil
	f := e.onClose
	e.onClose = nil
	e.mu.Unlock()
	if f != nil {
		f()
	}
}

// SetOnCloseAction implements stack.LinkEndpoint.
func (e *LinkEndpoint) SetOnCloseAction(f func()) {
	e.mu.Lock()
	e.onClose = f
	e.mu.Unlock()
}
