package fifo

import (
	"net/netip"
	"testing"
)

func TestSessionEvent_RoundTrip(t *testing.T) {
	peer4 := netip.MustParseAddrPort("192.0.2.7:5353")
	peer6 := netip.MustParseAddrPort("[2001:db8::7]:443")
	mapped := netip.AddrPortFrom(netip.AddrFrom16(netip.MustParseAddr("192.0.2.9").As16()), 9)
	for _, s := range []SessionEvent{
		{Type: EventAccepted, Handle: 0x0001_0000_0007, Transport: 17, Listener: 0xff00_0000_0003,
			Rx: FifoRef{Segment: 2, Offset: 4096}, Tx: FifoRef{Segment: 2, Offset: 8192}, Peer: peer4, LocalPort: 53},
		{Type: EventAccepted, CutThrough: true, Handle: 9, Transport: 6, Tx: FifoRef{Offset: 512}, Peer: peer6, LocalPort: 80},
		{Type: EventConnected, Handle: 3, Opaque: 31, Transport: 17, Rx: FifoRef{Segment: 1, Offset: 128}, Tx: FifoRef{Segment: 1, Offset: 640},
			Peer: peer6, LocalPort: 40001},
		{Type: EventConnectFailed, Handle: 4, Opaque: 7, Code: 12, Transport: 6, Peer: mapped},
		{Type: EventDisconnected, CutThrough: true, Handle: 5},
		{Type: EventSegmentAdded, Segment: 3},
		{Type: EventReset, Handle: 6, Code: 9},
		{Type: EventLocalAddr, Handle: 7, Transport: 6, Local: peer4},
		{Type: EventLocalAddr, Handle: 8, Transport: 6, Local: peer6},
	} {
		e := s.Encode()
		var b [EventSize]byte
		e.encode(b[:])
		var e2 Event
		e2.decode(b[:])
		if got := DecodeSessionEvent(&e2); got != s {
			t.Errorf("%v: decoded %+v, want %+v", s.Type, got, s)
		}
	}
}

// FuzzSessionEventCodec decodes arbitrary event records, as an app reads
// them from shared memory: decoding never panics, and what it decodes
// encodes to a record that decodes to the same event. Seeds are in
// testdata/fuzz.
func FuzzSessionEventCodec(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		var b [EventSize]byte
		copy(b[:], raw)
		var e Event
		e.decode(b[:])
		s := DecodeSessionEvent(&e)
		e2 := s.Encode()
		if got := DecodeSessionEvent(&e2); got != s {
			t.Fatalf("decoded %+v, re-encoded and decoded %+v", s, got)
		}
		var b2 [EventSize]byte
		e2.encode(b2[:])
		var e3 Event
		e3.decode(b2[:])
		if e3 != e2 {
			t.Fatalf("record %+v read back as %+v", e2, e3)
		}
	})
}
