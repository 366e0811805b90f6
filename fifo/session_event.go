package fifo

import (
	"encoding/binary"
	"net/netip"
)

// Address families of SessionEvent.Family (and of DgramHeader.Family).
const (
	Family4 = 4
	Family6 = 6
)

// SessionEvent is an event record of the session layer in decoded form.
// Encode and DecodeSessionEvent are the one codec of what the daemon puts
// in an Event's Flags, Arg32 and Args:
//
//	Type     EventAccepted, EventConnected, EventConnectFailed,
//	         EventDisconnected, EventSegmentAdded
//	Flags    EventFlagCutThrough for a cut-through session
//	Handle   the session
//	Arg32    accepted: the transport; connected, connect failed: the app's
//	         opaque context; segment added: the segment's index
//	Args[0]  accepted, connected: RefArg of the app's rx fifo
//	Args[1]  accepted, connected: RefArg of the app's tx fifo (for a
//	         cut-through session the segment index is 0 and the offsets are
//	         in the session's own segment, passed separately)
//	Args[2]  accepted: the listener's handle; connect failed: the error code;
//	         reset: the error code (0: the peer's reset)
//	Args[3]  the peer's address, bytes 0-7 (an IPv4 address in bytes 0-3)
//	Args[4]  the peer's address, bytes 8-15
//	Args[5]  peer port | local port<<16 | family<<32 | transport<<40; zero
//	         when the event names no peer
//
// EventLocalAddr carries the session's local address and port where the
// others carry the peer's (Args[3..5], local port 0).
//
// The app reads records from shared memory it does not trust: decoding
// never fails, and a field that makes no sense decodes as its zero value.
type SessionEvent struct {
	Type       EventType
	CutThrough bool
	Handle     uint64
	Transport  uint8   // accepted, and every event with a peer
	Opaque     uint32  // connected, connect failed: the app's connect context
	Segment    uint32  // segment added: the new segment's index in the app's manager
	Rx, Tx     FifoRef // accepted, connected: the app's fifos (Size is not carried)
	Listener   uint64  // accepted: the listener the session came in on
	Code       uint64  // connect failed, reset: the error's wire code
	Peer       netip.AddrPort
	LocalPort  uint16         // with a peer: the session's local port
	Local      netip.AddrPort // local addr: the session's local address
}

// hasFifos reports whether events of type t carry fifo refs.
func hasFifos(t EventType) bool { return t == EventAccepted || t == EventConnected }

// Encode returns s as an event record.
func (s *SessionEvent) Encode() Event {
	e := Event{Type: s.Type, Handle: s.Handle}
	if s.CutThrough {
		e.Flags |= EventFlagCutThrough
	}
	switch s.Type {
	case EventAccepted:
		e.Arg32 = uint32(s.Transport)
		e.Args[2] = s.Listener
	case EventConnected:
		e.Arg32 = s.Opaque
	case EventConnectFailed:
		e.Arg32 = s.Opaque
		e.Args[2] = s.Code
	case EventReset, EventResetAhead:
		e.Args[2] = s.Code
	case EventSegmentAdded:
		e.Arg32 = s.Segment
	}
	if hasFifos(s.Type) {
		e.Args[0], e.Args[1] = RefArg(s.Rx), RefArg(s.Tx)
	}
	peer, lport := s.Peer, s.LocalPort
	if s.Type == EventLocalAddr {
		peer, lport = s.Local, 0
	}
	if peer.IsValid() {
		a := peer.Addr() // an IPv4-mapped IPv6 address stays one (Family6)
		var b [16]byte
		fam := uint64(Family6)
		if a.Is4() {
			v4 := a.As4()
			copy(b[:], v4[:])
			fam = Family4
		} else {
			b = a.As16()
		}
		e.Args[3] = binary.LittleEndian.Uint64(b[0:8])
		e.Args[4] = binary.LittleEndian.Uint64(b[8:16])
		e.Args[5] = uint64(peer.Port()) | uint64(lport)<<16 | fam<<32 | uint64(s.Transport)<<40
	}
	return e
}

// DecodeSessionEvent reads an event record written by Encode.
func DecodeSessionEvent(e *Event) SessionEvent {
	s := SessionEvent{Type: e.Type, Handle: e.Handle, CutThrough: e.Flags&EventFlagCutThrough != 0}
	switch e.Type {
	case EventAccepted:
		s.Transport = uint8(e.Arg32)
		s.Listener = e.Args[2]
	case EventConnected:
		s.Opaque = e.Arg32
	case EventConnectFailed:
		s.Opaque = e.Arg32
		s.Code = e.Args[2]
	case EventReset, EventResetAhead:
		s.Code = e.Args[2]
	case EventSegmentAdded:
		s.Segment = e.Arg32
	}
	if hasFifos(e.Type) {
		s.Rx, s.Tx = RefFromArg(e.Args[0]), RefFromArg(e.Args[1])
	}
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:8], e.Args[3])
	binary.LittleEndian.PutUint64(b[8:16], e.Args[4])
	var addr netip.Addr
	switch uint8(e.Args[5] >> 32) {
	case Family4:
		addr = netip.AddrFrom4([4]byte(b[:4]))
	case Family6:
		addr = netip.AddrFrom16(b)
	}
	if addr.IsValid() {
		s.Peer = netip.AddrPortFrom(addr, uint16(e.Args[5]))
		s.LocalPort = uint16(e.Args[5] >> 16)
		if e.Type != EventAccepted {
			s.Transport = uint8(e.Args[5] >> 40)
		}
		if e.Type == EventLocalAddr {
			s.Local, s.Peer, s.LocalPort = s.Peer, netip.AddrPort{}, 0
		}
	}
	return s
}
