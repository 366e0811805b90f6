package fifo

import "testing"

// TestSessionEventResetAheadCode: an EventResetAhead carries why the
// connection ended (Code), as EventReset does: the app's writes fail
// with ETIMEDOUT after a timeout and EPIPE after a reset that followed
// the peer's FIN, not with ECONNRESET.
func TestSessionEventResetAheadCode(t *testing.T) {
	for _, typ := range []EventType{EventReset, EventResetAhead} {
		s := SessionEvent{Type: typ, Handle: 7, Code: 29}
		e := s.Encode()
		if got := DecodeSessionEvent(&e); got.Code != s.Code {
			t.Errorf("%v: code %d decoded as %d", typ, s.Code, got.Code)
		}
	}
}
