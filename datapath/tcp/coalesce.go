package tcp

import (
	"bytes"
	"encoding/binary"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/xsessiond/xsessiond/datapath/frame"
)

// The receive offload of InjectBatch: consecutive in-order data segments of
// one connection in a batch become one segment, built in one buffer (one
// copy of each payload out of the caller's frames), before gVisor's TCP
// sees it. Its rules are those of Linux's GRO: segments join a run
// when they belong to its connection, follow it in sequence, carry the
// same acknowledgement, window, TCP options (timestamps included) and
// flags but PSH and FIN, the same IP TOS/TTL (traffic class, flow label,
// hop limit), and no more payload than the run's first; a shorter segment,
// PSH or FIN ends the run; SYN, RST, URG, CWR, a bare acknowledgement and
// an IPv4 header with options never join one. A run stays under 64 KiB of
// IP packet.
//
// It replaces gVisor's GRO (gro.GRO) on this path, which gives every
// segment a buffer of its own and merges the buffers' lists: TCP then
// walks, releases and returns one pooled chunk per segment.

// coalesceRuns is the most runs (connections) open at once; a new one
// past it sends the oldest up first.
const coalesceRuns = 8

// coalesceMax bounds a run's IP packet, the IPv4 total length's limit.
const coalesceMax = 0xffff

// segRun is a run of segments being coalesced: indices into the batch,
// linked through coalescer.next.
type segRun struct {
	head, tail int32
	n          int32
	age        uint32 // when it opened, in segments seen; the oldest goes first
	proto      tcpip.NetworkProtocolNumber
	ipLen      int    // IP header length of the head
	hdrLen     int    // IP and TCP header length of the head
	first      int    // the head's payload length: no member carries more
	size       int    // the coalesced packet's length
	nextSeq    uint32 // the sequence number the next member must have
	flags      uint8  // PSH and FIN of the members, for the coalesced header
}

// coalescer is one InjectBatch call's state, pooled.
type coalescer struct {
	runs   [coalesceRuns]segRun
	open   int                           // runs[:open] are open
	next   []int32                       // per packet of the batch: the next member of its run, -1 for none
	plen   []int32                       // per packet: its payload length
	protos []tcpip.NetworkProtocolNumber // per packet: its protocol, 0 for one refused
	win    *windows                      // the link's: told of each packet gVisor gets
	big    *atomic.Uint64                // the link's count of BIG TCP segments
	clock  uint32
}

var coalescerPool = sync.Pool{New: func() any { return new(coalescer) }}

// segView is where a packet's headers end and its payload lies.
type segView struct {
	ipLen, hdrLen, payload int
}

// parseSeg finds the IP and TCP header lengths and the payload of pkt, and
// whether its headers allow it into a run at all.
func parseSeg(pkt []byte, proto tcpip.NetworkProtocolNumber) (segView, bool) {
	var s segView
	var total int
	if proto == ipv4.ProtocolNumber {
		s.ipLen = int(pkt[0]&0xf) * 4
		total = int(binary.BigEndian.Uint16(pkt[2:4]))
		if s.ipLen != header.IPv4MinimumSize {
			return s, false // IP options: never coalesced
		}
	} else {
		s.ipLen = header.IPv6MinimumSize
		total = header.IPv6MinimumSize + int(binary.BigEndian.Uint16(pkt[4:6]))
	}
	if total < s.ipLen+header.TCPMinimumSize || total > len(pkt) {
		return s, false
	}
	tcp := pkt[s.ipLen:total]
	doff := int(tcp[12]>>4) * 4
	if doff < header.TCPMinimumSize || doff > len(tcp) {
		return s, false
	}
	s.hdrLen = s.ipLen + doff
	s.payload = total - s.hdrLen
	flags := tcp[13]
	const never = uint8(header.TCPFlagSyn | header.TCPFlagRst | header.TCPFlagUrg | header.TCPFlagCwr)
	if s.payload == 0 || flags&uint8(header.TCPFlagAck) == 0 || flags&never != 0 {
		return s, false
	}
	return s, true
}

// portsAt returns where pkt's TCP ports are, or -1 when it is too short to
// hold them (gVisor drops it).
func portsAt(pkt []byte, proto tcpip.NetworkProtocolNumber) int {
	at := tcpAt(pkt, proto)
	if at+4 > len(pkt) {
		return -1
	}
	return at
}

// sameFlow reports whether a and b (same protocol; their ports at aAt and
// bAt) belong to one connection.
func sameFlow(a, b []byte, proto tcpip.NetworkProtocolNumber, aAt, bAt int) bool {
	if proto == ipv4.ProtocolNumber {
		if !bytes.Equal(a[12:20], b[12:20]) {
			return false
		}
	} else if !bytes.Equal(a[8:40], b[8:40]) {
		return false
	}
	return bytes.Equal(a[aAt:aAt+4], b[bAt:bAt+4])
}

// joins reports whether segment p (of r's connection) may follow r.
func (r *segRun) joins(head, p []byte, s segView) bool {
	if s.hdrLen != r.hdrLen || s.payload > r.first || r.size+s.payload > coalesceMax {
		return false
	}
	if r.proto == ipv4.ProtocolNumber {
		if head[1] != p[1] || head[8] != p[8] { // TOS, TTL
			return false
		}
	} else if !bytes.Equal(head[:4], p[:4]) || head[7] != p[7] { // class, label; hop limit
		return false
	}
	ht, pt := head[r.ipLen:r.hdrLen], p[r.ipLen:r.hdrLen]
	if binary.BigEndian.Uint32(pt[4:8]) != r.nextSeq {
		return false
	}
	const endFlags = uint8(header.TCPFlagPsh | header.TCPFlagFin)
	return bytes.Equal(ht[8:12], pt[8:12]) && // acknowledgement
		ht[12] == pt[12] && ht[13] == pt[13]&^endFlags && // data offset; flags
		bytes.Equal(ht[14:16], pt[14:16]) && // window
		bytes.Equal(ht[header.TCPMinimumSize:], pt[header.TCPMinimumSize:]) // options
}

// inject hands the accepted packets of pkts (protos[i] != 0) to d,
// coalescing runs as the file's comment says.
func (c *coalescer) inject(d stack.NetworkDispatcher, pkts [][]byte, protos []tcpip.NetworkProtocolNumber) {
	c.next = c.next[:0]
	c.plen = c.plen[:0]
	for range pkts {
		c.next = append(c.next, -1)
		c.plen = append(c.plen, 0)
	}
	c.open, c.clock = 0, 0
	for i, pkt := range pkts {
		proto := protos[i]
		if proto == 0 {
			continue
		}
		c.clock++
		s, ok := parseSeg(pkt, proto)
		ri := c.find(pkts, pkt, proto)
		if !ok {
			if ri >= 0 {
				c.flush(d, pkts, ri)
			}
			if isBig(pkt, proto) {
				c.big.Add(1)
				c.win.inbound(pkt)
				deliverBig(d, pkt, proto)
				continue
			}
			c.one(d, pkt, proto)
			continue
		}
		c.plen[i] = int32(s.payload)
		if ri >= 0 {
			r := &c.runs[ri]
			if r.joins(pkts[r.head], pkt, s) {
				c.next[r.tail] = int32(i)
				r.tail = int32(i)
				r.n++
				r.size += s.payload
				r.nextSeq += uint32(s.payload)
				r.flags |= pkt[s.ipLen+13] & uint8(header.TCPFlagPsh|header.TCPFlagFin)
				if r.flags != 0 || s.payload < r.first {
					c.flush(d, pkts, ri)
				}
				continue
			}
			c.flush(d, pkts, ri)
		}
		if pkt[s.ipLen+13]&uint8(header.TCPFlagPsh|header.TCPFlagFin) != 0 {
			c.one(d, pkt, proto)
			continue
		}
		if c.open == coalesceRuns {
			oldest := 0
			for j := 1; j < c.open; j++ {
				if c.runs[j].age < c.runs[oldest].age {
					oldest = j
				}
			}
			c.flush(d, pkts, oldest)
		}
		c.runs[c.open] = segRun{head: int32(i), tail: int32(i), n: 1, age: c.clock, proto: proto,
			ipLen: s.ipLen, hdrLen: s.hdrLen, first: s.payload, size: s.hdrLen + s.payload,
			nextSeq: binary.BigEndian.Uint32(pkt[s.ipLen+4:]) + uint32(s.payload)}
		c.open++
	}
	for c.open > 0 {
		c.flush(d, pkts, c.open-1)
	}
}

// find returns the open run of pkt's connection, or -1.
func (c *coalescer) find(pkts [][]byte, pkt []byte, proto tcpip.NetworkProtocolNumber) int {
	at := portsAt(pkt, proto)
	if at < 0 {
		return -1
	}
	for j := range c.open {
		r := &c.runs[j]
		if r.proto == proto && sameFlow(pkts[r.head], pkt, proto, r.ipLen, at) {
			return j
		}
	}
	return -1
}

// flush delivers run ri and closes it.
func (c *coalescer) flush(d stack.NetworkDispatcher, pkts [][]byte, ri int) {
	r := c.runs[ri]
	c.open--
	c.runs[ri] = c.runs[c.open]
	head := pkts[r.head]
	if r.n == 1 {
		c.one(d, head, r.proto)
		return
	}
	hv := buffer.NewViewWithData(head[:r.hdrLen])
	h := hv.AsSlice()
	setIPLen(h, r.proto, r.size)
	h[r.ipLen+13] |= r.flags
	pv := buffer.NewView(r.size - r.hdrLen)
	for i := r.head; i >= 0; i = c.next[i] {
		pkt := pkts[i]
		pv.Write(pkt[r.hdrLen : r.hdrLen+int(c.plen[i])])
	}
	c.win.inbound(pkts[r.tail]) // the run's acknowledgement and window
	deliver(d, headed(hv, pv), r.proto)
}

// setIPLen sets the length field of h, the headers of a packet of total
// bytes (IPv4: and its header checksum).
func setIPLen(h []byte, proto tcpip.NetworkProtocolNumber, total int) {
	if proto == ipv4.ProtocolNumber {
		ip := header.IPv4(h)
		ip.SetTotalLength(uint16(total))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		return
	}
	header.IPv6(h).SetPayloadLength(uint16(total - header.IPv6MinimumSize))
}

// one hands one packet to d as it is (copied).
func (c *coalescer) one(d stack.NetworkDispatcher, pkt []byte, proto tcpip.NetworkProtocolNumber) {
	c.win.inbound(pkt)
	deliver(d, copied(pkt, proto), proto)
}

// headed is the buffer of the headers hv followed by the payload pv. The
// headers get a chunk of their own: gVisor's IPv4 and IPv6 receive keep a
// reference to the network header while they look at it again, and a
// look at a shared chunk copies the whole chunk first (buffer.PullUp);
// with the payload in it, that was a second copy of every packet.
func headed(hv, pv *buffer.View) buffer.Buffer {
	b := buffer.MakeWithView(hv)
	if pv.Size() == 0 {
		pv.Release()
		return b
	}
	b.Append(pv)
	return b
}

// copied is a copy of pkt as a gVisor buffer: its IP and TCP headers in a
// view of their own (headed), when they fit in pkt, and the rest after.
func copied(pkt []byte, proto tcpip.NetworkProtocolNumber) buffer.Buffer {
	at := portsAt(pkt, proto)
	if at < 0 || at+header.TCPMinimumSize > len(pkt) {
		return buffer.MakeWithData(pkt)
	}
	n := at + int(pkt[at+12]>>4)*4
	if n < at+header.TCPMinimumSize || n > len(pkt) {
		return buffer.MakeWithData(pkt)
	}
	return headed(buffer.NewViewWithData(pkt[:n]), buffer.NewViewWithData(pkt[n:]))
}

// deliver hands b, an IP packet whose checksums were checked, to d.
func deliver(d stack.NetworkDispatcher, b buffer.Buffer, proto tcpip.NetworkProtocolNumber) {
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: b})
	pb.NetworkProtocolNumber = proto
	pb.RXChecksumValidated = true
	d.DeliverNetworkPacket(proto, pb)
	pb.DecRef()
}

// bigPayload is the most payload deliverBig puts in one segment: with the
// headers, an IP packet's length field holds it.
const bigPayload = 0xffff - header.IPv4MaximumHeaderSize - header.TCPHeaderMaximumSize

// ipLen returns the length of pkt's IP packet (classify accepted it): its
// length field, or all of pkt for a BIG TCP segment (isBig).
func ipLen(pkt []byte, proto tcpip.NetworkProtocolNumber) int {
	if isBig(pkt, proto) {
		return len(pkt)
	}
	if proto == ipv4.ProtocolNumber {
		return int(binary.BigEndian.Uint16(pkt[2:4]))
	}
	return header.IPv6MinimumSize + int(binary.BigEndian.Uint16(pkt[4:6]))
}

// isBig reports whether pkt is a BIG TCP segment as Linux sends one when
// an interface's GSO size allows more than 64 KiB: longer than its IP
// length field holds, which says 0 (IPv6: with or without a hop-by-hop
// header holding the jumbo payload option, frame.BigTCP6).
func isBig(pkt []byte, proto tcpip.NetworkProtocolNumber) bool {
	if proto == ipv4.ProtocolNumber {
		return len(pkt) > 0xffff && binary.BigEndian.Uint16(pkt[2:4]) == 0
	}
	return len(pkt) > header.IPv6MinimumSize+0xffff && binary.BigEndian.Uint16(pkt[4:6]) == 0 && frame.BigTCP6(pkt)
}

// tcpAt returns where pkt's TCP header is: after the IPv4 header, or the
// IPv6 one and a BIG TCP segment's hop-by-hop header.
func tcpAt(pkt []byte, proto tcpip.NetworkProtocolNumber) int {
	if proto == ipv4.ProtocolNumber {
		return int(pkt[0]&0xf) * 4
	}
	if pkt[6] != uint8(header.TCPProtocolNumber) {
		return header.IPv6MinimumSize + 8 // isBig's jumbo hop-by-hop header
	}
	return header.IPv6MinimumSize
}

// deliverBig hands d a BIG TCP segment (isBig) as segments that gVisor's
// IP takes, of at most bigPayload bytes of payload each: the headers
// copied (an IPv6 jumbo option's hop-by-hop header left out), each one's
// sequence number advanced and its IP length set, PSH and FIN only on the
// last and CWR only on the first, as segmentation would have cut it. The
// caller noted the segment's window (windows.inbound).
func deliverBig(d stack.NetworkDispatcher, pkt []byte, proto tcpip.NetworkProtocolNumber) {
	ipL, at := header.IPv6MinimumSize, tcpAt(pkt, proto)
	if proto == ipv4.ProtocolNumber {
		ipL = at
	}
	if at+header.TCPMinimumSize > len(pkt) {
		return
	}
	end := at + int(pkt[at+12]>>4)*4
	if end < at+header.TCPMinimumSize || end > len(pkt) {
		return
	}
	hdrLen := ipL + end - at // the IP header and the TCP header
	payload := pkt[end:]
	seq := binary.BigEndian.Uint32(pkt[at+4:])
	for off := 0; off < len(payload); {
		n := min(bigPayload, len(payload)-off)
		hv := buffer.NewView(hdrLen)
		hv.Write(pkt[:ipL])
		hv.Write(pkt[at:end])
		h := hv.AsSlice()
		if proto != ipv4.ProtocolNumber {
			h[6] = uint8(header.TCPProtocolNumber)
		}
		binary.BigEndian.PutUint32(h[ipL+4:], seq+uint32(off))
		if off+n < len(payload) {
			h[ipL+13] &^= uint8(header.TCPFlagPsh | header.TCPFlagFin)
		}
		if off > 0 {
			h[ipL+13] &^= uint8(header.TCPFlagCwr) // as Linux's segmentation: the first piece alone
		}
		setIPLen(h, proto, hdrLen+n)
		deliver(d, headed(hv, buffer.NewViewWithData(payload[off:off+n])), proto)
		off += n
	}
}
