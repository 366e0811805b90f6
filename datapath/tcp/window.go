package tcp

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// A bare acknowledgement must carry a sequence number inside the peer's
// receive window, or the peer drops it unread. gVisor sends its next
// sequence number (sender.sendAck); when the peer has shrunk its window
// below that (Linux does, to zero, when its receive buffer runs out of
// memory), every acknowledgement gVisor sends is dropped, and a peer that
// waits for one before it reads again never does. Linux avoids this by
// sending the lesser of its next sequence number and the right edge of
// the peer's window (tcp_acceptable_seq); the link does the same to
// gVisor's bare acknowledgements, from what it sees of the peer's
// segments. windows is that bookkeeping.
//
// Only Conns' connections are tracked (Conn.trackWindow, from the moment
// the connection is established until the Conn ends), so the table is
// bounded by Options.MaxConns. The peer's window scale comes from its SYN
// or SYN-ACK, kept for a while in a fixed table (synSlots entries,
// overwritten on collision, so a SYN flood costs it nothing but the
// scales of connections whose SYN was overwritten, which are then not
// tracked: gVisor's behaviour).
type windows struct {
	n     atomic.Int32 // connections tracked: none skips the parsing
	mu    sync.RWMutex
	flows map[flowKey]*peerWindow

	synMu sync.Mutex
	seed  maphash.Seed
	syns  [synSlots]synScale

	clamped   atomic.Uint64 // bare acknowledgements whose sequence number was lowered
	untraced  atomic.Uint64 // connections not tracked: their SYN's scale was lost
	coalesced atomic.Uint64 // held acknowledgements a later segment made redundant (ack.go)
	delayed   atomic.Uint64 // held acknowledgements sent at their deadline
}

// synSlots is the size of the table of peers' window scales.
const synSlots = 4096

// flowKey is a connection seen from the stack: its local and remote
// addresses (IPv4 in their IPv4-mapped form) and ports.
type flowKey struct {
	local, remote [16]byte
	lport, rport  uint16
}

func keyOf(local, remote netip.AddrPort) flowKey {
	return flowKey{local: local.Addr().As16(), remote: remote.Addr().As16(), lport: local.Port(), rport: remote.Port()}
}

// segmentKey is the flowKey of a segment whose IP header (version 4 or 6,
// long enough) is ip and TCP header tcp; an inbound one comes from the
// remote end.
func segmentKey(ip, tcp []byte, inbound bool) flowKey {
	var src, dst [16]byte
	if ip[0]>>4 == 4 {
		src[10], src[11], dst[10], dst[11] = 0xff, 0xff, 0xff, 0xff
		copy(src[12:], ip[12:16])
		copy(dst[12:], ip[16:20])
	} else {
		copy(src[:], ip[8:24])
		copy(dst[:], ip[24:40])
	}
	sport, dport := binary.BigEndian.Uint16(tcp[0:2]), binary.BigEndian.Uint16(tcp[2:4])
	if inbound {
		return flowKey{local: dst, remote: src, lport: dport, rport: sport}
	}
	return flowKey{local: src, remote: dst, lport: sport, rport: dport}
}

// synScale is a peer's window scale, from the SYN of connection key, and
// the SYN's sequence number; iss is the stack's own initial sequence
// number, when the link saw it (hasISS): the acknowledgement of a SYN-ACK
// less one, or the sequence number of the stack's SYN-ACK.
type synScale struct {
	key    flowKey
	isn    uint32
	iss    uint32
	scale  uint8
	used   bool
	hasISS bool
}

// peerWindow is what the link knows of one connection's peer.
type peerWindow struct {
	scale  uint8  // the peer's window scale (0: none)
	isn    uint32 // the peer's initial sequence number
	hasISS bool   // iss is known
	iss    uint32 // the stack's initial sequence number

	mu    sync.Mutex
	known bool   // a segment of the peer's updated the fields below
	ack   uint32 // its latest acknowledgement
	seq   uint32 // the sequence number of the segment that carried it
	edge  uint32 // ack + its window: the right edge of its receive window

	// What the link sent (ack.go).
	sentAck uint32              // the highest acknowledgement number sent (at first the handshake's)
	held    *stack.PacketBuffer // a bare acknowledgement held back (a reference of its own)
	heldAck uint32              // held's acknowledgement number
	timer   *time.Timer         // sends held at its deadline (nil until the first)
}

func newWindows() *windows {
	return &windows{flows: make(map[flowKey]*peerWindow), seed: maphash.MakeSeed()}
}

// seqAfter reports whether sequence number a comes after b.
func seqAfter(a, b uint32) bool { return int32(a-b) > 0 }

// TCP flags.
const (
	flagFIN = 1 << 0
	flagSYN = 1 << 1
	flagRST = 1 << 2
	flagACK = 1 << 4
)

// inbound notes what pkt, an IP packet classify accepted, tells of its
// sender: the window scale of a SYN, the window of any other segment of a
// tracked connection. It reads only within pkt.
func (w *windows) inbound(pkt []byte) {
	proto := ipv6.ProtocolNumber
	if pkt[0]>>4 == 4 {
		proto = ipv4.ProtocolNumber
	}
	at, total := tcpAt(pkt, proto), ipLen(pkt, proto)
	if total < at+header.TCPMinimumSize || total > len(pkt) {
		return
	}
	tcp := pkt[at:total]
	flags := tcp[13]
	switch {
	case flags&flagRST != 0:
		return
	case flags&flagSYN != 0:
		w.noteSYN(segmentKey(pkt, tcp, true), tcp)
		return
	case flags&flagACK == 0 || w.n.Load() == 0:
		return
	}
	pw := w.lookup(segmentKey(pkt, tcp, true))
	if pw == nil {
		return
	}
	seq, ack := binary.BigEndian.Uint32(tcp[4:8]), binary.BigEndian.Uint32(tcp[8:12])
	win := uint32(binary.BigEndian.Uint16(tcp[14:16])) << pw.scale
	pw.mu.Lock()
	// The window of the newest acknowledgement, or of a newer segment
	// with the same one (Linux's tcp_may_update_window, less its rule
	// for equal sequence numbers): a reordered older segment does not
	// move the edge back.
	if !pw.known || seqAfter(ack, pw.ack) || (ack == pw.ack && !seqAfter(pw.seq, seq)) {
		pw.known, pw.ack, pw.seq, pw.edge = true, ack, seq, ack+win
	}
	pw.mu.Unlock()
}

// noteSYN keeps the window scale of a SYN or SYN-ACK: its option's value,
// at most 14 (RFC 7323), or 0 without one. A SYN-ACK carries the option
// only when the SYN did, and gVisor answers a SYN's option with its own,
// so a peer that sent one scales its windows by it. The entry of a
// tracked connection of the same addresses and ports stays: gVisor
// answers a SYN on a synchronized connection with a challenge ACK and
// keeps it (RFC 5961), whatever its sequence number (a spoofed SYN, a
// retransmission of the connection's own, a peer that lost it), and the
// connection must stay followed (its bare acknowledgements clamped, its
// send queue seen to shrink); a connection that does start over the
// addresses replaces the entry when it is tracked.
func (w *windows) noteSYN(k flowKey, tcp []byte) {
	off := int(tcp[12]>>4) * 4
	if off < header.TCPMinimumSize || off > len(tcp) {
		return
	}
	scale := uint8(0)
	opts := tcp[header.TCPMinimumSize:off]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case header.TCPOptionEOL:
			i = len(opts)
			continue
		case header.TCPOptionNOP:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			break
		}
		if opts[i] == header.TCPOptionWS && opts[i+1] == 3 {
			scale = min(opts[i+2], header.MaxWndScale)
		}
		i += int(opts[i+1])
	}
	e := synScale{key: k, isn: binary.BigEndian.Uint32(tcp[4:8]), scale: scale, used: true}
	if tcp[13]&flagACK != 0 {
		e.iss, e.hasISS = binary.BigEndian.Uint32(tcp[8:12])-1, true
	}
	slot := &w.syns[maphash.Comparable(w.seed, k)%synSlots]
	w.synMu.Lock()
	*slot = e
	w.synMu.Unlock()
}

// noteSYNACK keeps the stack's initial sequence number from th, the TCP
// header of a SYN-ACK it sends (nh its IP header) in answer to a SYN
// noteSYN kept.
func (w *windows) noteSYNACK(nh, th []byte) {
	k := segmentKey(nh, th, false)
	slot := &w.syns[maphash.Comparable(w.seed, k)%synSlots]
	w.synMu.Lock()
	if slot.used && slot.key == k {
		slot.iss, slot.hasISS = binary.BigEndian.Uint32(th[4:8]), true
	}
	w.synMu.Unlock()
}

// track starts tracking the connection between local and remote, whose
// peer's SYN the link saw, and returns its entry for untrack; nil when
// that SYN's scale was overwritten. An entry left by an earlier
// connection of the same addresses and ports is replaced: its sequence
// numbers are of another connection.
func (w *windows) track(local, remote netip.AddrPort) *peerWindow {
	k := keyOf(local, remote)
	slot := &w.syns[maphash.Comparable(w.seed, k)%synSlots]
	w.synMu.Lock()
	s := *slot
	if s.used && s.key == k {
		*slot = synScale{}
	}
	w.synMu.Unlock()
	if !s.used || s.key != k {
		w.untraced.Add(1)
		w.forget(k)
		return nil
	}
	// The stack's last acknowledgement, of the handshake, acknowledged
	// the peer's SYN (ack.go).
	pw := &peerWindow{scale: s.scale, isn: s.isn, sentAck: s.isn + 1, iss: s.iss, hasISS: s.hasISS}
	w.mu.Lock()
	old, ok := w.flows[k]
	if !ok {
		w.n.Add(1)
	}
	w.flows[k] = pw
	w.mu.Unlock()
	if ok {
		old.release()
	}
	return pw
}

// forget drops the entry of k, if any: a new connection of the same
// addresses and ports is starting, and the sequence numbers the entry
// holds are of the old one.
func (w *windows) forget(k flowKey) {
	if w.n.Load() == 0 {
		return
	}
	w.mu.RLock()
	_, ok := w.flows[k]
	w.mu.RUnlock()
	if !ok {
		return
	}
	w.mu.Lock()
	pw, ok := w.flows[k]
	if ok {
		delete(w.flows, k)
		w.n.Add(-1)
	}
	w.mu.Unlock()
	if ok {
		pw.release()
	}
}

// untrack ends what track started, unless a later connection's track
// replaced pw; an acknowledgement pw holds is sent with send.
func (w *windows) untrack(local, remote netip.AddrPort, pw *peerWindow, send func(*stack.PacketBuffer) bool) {
	k := keyOf(local, remote)
	w.mu.Lock()
	if w.flows[k] == pw {
		delete(w.flows, k)
		w.n.Add(-1)
	}
	w.mu.Unlock()
	pw.mu.Lock()
	if pw.held != nil {
		send(pw.held)
	}
	pw.mu.Unlock()
	pw.release()
}

// lookup returns the entry of the connection k, nil if it is not tracked.
func (w *windows) lookup(k flowKey) *peerWindow {
	w.mu.RLock()
	pw := w.flows[k]
	w.mu.RUnlock()
	return pw
}

// release drops what pw holds for a connection that is no longer
// tracked: its held acknowledgement (unsent) and its timer.
func (pw *peerWindow) release() {
	pw.mu.Lock()
	if pw.held != nil {
		pw.dropHeld()
	}
	if pw.timer != nil {
		pw.timer.Stop()
	}
	pw.mu.Unlock()
}

// unacked returns how many of the first sent bytes of pw's connection
// (the stack's data after its SYN) the peer has not acknowledged; false
// when the link does not know (it missed the stack's initial sequence
// number). Until a segment of the peer's comes after the handshake, none
// is.
func (pw *peerWindow) unacked(sent uint64) (int, bool) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	switch {
	case !pw.hasISS:
		return 0, false
	case !pw.known:
		return int(min(sent, 1<<31-1)), true
	}
	// A FIN takes a sequence number too: once it is acknowledged the
	// difference is -1.
	d := int32(pw.iss + 1 + uint32(sent) - pw.ack)
	if d < -1 {
		// An acknowledgement of more than was sent and the FIN: a
		// forged segment, which the link noted before gVisor checked it
		// (outbound forgets it at gVisor's next bare acknowledgement).
		// Not known meanwhile: an orphan's sweep must not take it for
		// the peer having taken everything.
		return 0, false
	}
	return max(int(d), 0), true
}

// sending returns the entry of the tracked connection pb, a packet gVisor
// sends, belongs to; nil when none is tracked or pb's headers are short.
func (w *windows) sending(pb *stack.PacketBuffer) *peerWindow {
	if w.n.Load() == 0 {
		return nil
	}
	th := pb.TransportHeader().Slice()
	nh := pb.NetworkHeader().Slice()
	if len(th) < header.TCPMinimumSize || len(nh) < header.IPv4MinimumSize ||
		(nh[0]>>4 != 4 && (nh[0]>>4 != 6 || len(nh) < header.IPv6MinimumSize)) {
		return nil
	}
	return w.lookup(segmentKey(nh, th, false))
}

// outbound lowers the sequence number of pb, a packet gVisor sends on
// pw's connection (sending), to the right edge of the peer's window when
// pb is a bare acknowledgement whose sequence number lies past that edge
// by a window scale's rounding or more (as tcp_acceptable_seq does;
// gVisor's own RST does the same). The checksum follows: it is updated
// for the two words changed, or left as it is when partial (the
// pseudo-header's sum, which holds no sequence number).
func (w *windows) outbound(pb *stack.PacketBuffer, pw *peerWindow) {
	th := pb.TransportHeader().Slice()
	if pb.Data().Size() != 0 || th[13]&(flagSYN|flagFIN|flagRST|flagACK) != flagACK {
		return
	}
	seq := binary.BigEndian.Uint32(th[4:8])
	pw.mu.Lock()
	known, edge := pw.known, pw.edge
	if known && seqAfter(pw.ack, seq+1) {
		// An acknowledgement past seq, gVisor's next sequence number,
		// acked what was never sent: a forged segment (the link notes
		// windows before gVisor checks the segments). Its edge is
		// dropped; the peer's next segment sets one again. (A keepalive
		// or window probe carries the first unacknowledged number less
		// one, just before the peer's acknowledgement.)
		pw.known, known = false, false
	}
	pw.mu.Unlock()
	if !known || !seqAfter(seq, edge) || seq-edge < 1<<pw.scale {
		return
	}
	binary.BigEndian.PutUint32(th[4:8], edge)
	if g := &pb.GSOOptions; g.Type == stack.GSONone || !g.NeedsCsum {
		sum := binary.BigEndian.Uint16(th[16:18])
		binary.BigEndian.PutUint16(th[16:18], checksumReplace32(sum, seq, edge))
	}
	w.clamped.Add(1)
}

// checksumReplace32 updates an Internet checksum for a 32-bit word of the
// summed data changing from old to new (RFC 1624, eqn. 3).
func checksumReplace32(sum uint16, old, new uint32) uint16 {
	s := uint32(^sum) + uint32(^uint16(old>>16)) + uint32(^uint16(old)) + new>>16 + new&0xffff
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return ^uint16(s)
}
