package tcp

import (
	"encoding/binary"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Delayed acknowledgements.
//
// gVisor has none: after each batch of segments it processes, it
// acknowledges at once whatever it received (handleSegmentsLocked). On a
// request/response connection that is two packets per request where one
// does: the request's bare acknowledgement, then the response carrying
// the same acknowledgement a few tens of microseconds later. Each costs a
// worker's wake-up and a write to the kernel here, and a packet to
// process at the peer. Linux delays such an acknowledgement (by at least
// 40 ms, tcp_send_delayed_ack) and lets the response carry it.
//
// The link does the same for the connections whose windows it tracks
// (windows): it holds back a bare acknowledgement that acknowledges new
// data of at most one segment's size beyond the last acknowledgement it
// sent, and carries no SACK block, for at most Options.AckDelay. The next
// segment of the connection that acknowledges as much (the response, or
// gVisor's next acknowledgement) replaces it and it is dropped
// (Stats.AcksCoalesced); otherwise a timer sends it at its deadline
// (Stats.AcksDelayed). An acknowledgement of a second segment, a
// duplicate acknowledgement (one repeating the held acknowledgement
// too, which it replaces), a window update that acknowledges nothing
// new and every segment with SYN, FIN or RST go out at once, as Linux's
// do (it acknowledges every second full-sized segment at once,
// __tcp_ack_snd_check). A bulk receiver whose batches coalesce several
// segments (GRO) acknowledges each batch at once, as before.

// DefaultAckDelay is Options.AckDelay's default: far longer than an app
// takes to answer a request (tens to hundreds of microseconds), far
// shorter than Linux's shortest delay (40 ms).
const DefaultAckDelay = time.Millisecond

// hold decides the fate of pb, a segment gVisor sends on pw's connection
// (windows.sending), before it goes to the Writer: it drops a held bare
// acknowledgement that pb makes redundant, sends one it does not ahead of
// pb, and holds pb itself when it is a bare acknowledgement worth delaying.
// It reports whether it held pb (the caller then sends nothing now).
func (e *LinkEndpoint) hold(pb *stack.PacketBuffer, pw *peerWindow) bool {
	th := pb.TransportHeader().Slice()
	nh := pb.NetworkHeader().Slice()
	flags := th[13]
	ack := binary.BigEndian.Uint32(th[8:12])
	acks := flags&flagACK != 0
	pw.mu.Lock()
	defer pw.mu.Unlock()
	// repeat: pb acknowledges what the held one does and no more, so the
	// stack acknowledged the same data twice: a duplicate acknowledgement
	// (a segment past a hole, or one already received) or a window update.
	// It goes at once, in the held one's place, as Linux's immediate
	// acknowledgement cancels its delayed one; held again, each duplicate
	// would replace the one before and the peer would get one
	// acknowledgement instead of the duplicates that tell it of a loss.
	repeat := false
	if pw.held != nil {
		if flags&flagRST != 0 || (acks && !seqAfter(pw.heldAck, ack)) {
			repeat = acks && ack == pw.heldAck
			pw.dropHeld()
			e.win.coalesced.Add(1)
		} else {
			e.sendHeld(pw) // pb acknowledges less: keep the order gVisor sent them in
		}
	}
	adv := ack - pw.sentAck
	if !repeat && flags&(flagSYN|flagFIN|flagRST|flagACK) == flagACK && pb.Data().Size() == 0 &&
		int32(adv) > 0 && adv <= e.ackMSS(len(nh)) && !hasSACK(th) {
		pw.held = pb.IncRef()
		pw.heldAck = ack
		if pw.timer == nil {
			pw.timer = time.AfterFunc(e.ackDelay, func() { e.ackDue(pw) })
		} else {
			pw.timer.Reset(e.ackDelay)
		}
		return true
	}
	if acks && seqAfter(ack, pw.sentAck) {
		pw.sentAck = ack
	}
	return false
}

// ackMSS is the most new data a held acknowledgement may acknowledge: one
// segment of the link's MTU behind an IP header of ipLen bytes (none on a
// link too small for one).
func (e *LinkEndpoint) ackMSS(ipLen int) uint32 {
	hdr := uint32(ipLen) + header.TCPMinimumSize
	if mtu := e.MTU(); mtu > hdr {
		return mtu - hdr
	}
	return 0
}

// ackDue sends pw's held acknowledgement at its deadline, if one is still
// held.
func (e *LinkEndpoint) ackDue(pw *peerWindow) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if pw.held != nil {
		e.sendHeld(pw)
		e.win.delayed.Add(1)
	}
}

// sendHeld sends pw's held acknowledgement now. pw.mu is held, so that
// nothing of the connection overtakes it.
func (e *LinkEndpoint) sendHeld(pw *peerWindow) {
	pb := pw.held
	pw.held = nil
	pw.sentAck = pw.heldAck
	if pw.timer != nil {
		pw.timer.Stop()
	}
	_ = e.send(pb)
	pb.DecRef()
}

// dropHeld forgets pw's held acknowledgement unsent. pw.mu is held.
func (pw *peerWindow) dropHeld() {
	pw.held.DecRef()
	pw.held = nil
	if pw.timer != nil {
		pw.timer.Stop()
	}
}

// hasSACK reports whether the options of tcp, a TCP header at least
// TCPMinimumSize long, hold a SACK block (or are malformed: then the
// segment is not held).
func hasSACK(tcp []byte) bool {
	off := int(tcp[12]>>4) * 4
	if off < header.TCPMinimumSize || off > len(tcp) {
		return true
	}
	opts := tcp[header.TCPMinimumSize:off]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case header.TCPOptionEOL:
			return false
		case header.TCPOptionNOP:
			i++
			continue
		case header.TCPOptionSACK:
			return true
		}
		if i+1 >= len(opts) || opts[i+1] < 2 {
			return true
		}
		i += int(opts[i+1])
	}
	return false
}
