package api

import (
	"time"

	"github.com/xsessiond/xsessiond/flow"
)

// SetKeepalive sets the TCP keepalive of stream session Handle on the wire
// (as SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT); the reply
// is OK. Zero Idle, Interval or Count keep the connection's current value.
type SetKeepalive struct {
	Handle   flow.Handle
	Enabled  bool
	Idle     time.Duration
	Interval time.Duration
	Count    uint32
}

// Type returns TypeSetKeepalive.
func (*SetKeepalive) Type() Type { return TypeSetKeepalive }

// FDs returns 0.
func (*SetKeepalive) FDs() int { return 0 }

func (m *SetKeepalive) encode(e *encoder) {
	e.u64(uint64(m.Handle))
	e.bool(m.Enabled)
	e.u64(uint64(max(m.Idle, 0)))
	e.u64(uint64(max(m.Interval, 0)))
	e.u32(m.Count)
}

func (m *SetKeepalive) decode(d *decoder) {
	m.Handle = flow.Handle(d.u64())
	m.Enabled = d.bool()
	// A duration above what int64 holds is malformed: taken as the
	// largest one, it would re-encode as other bytes than it came in.
	dur := func(v uint64) time.Duration {
		if v > 1<<63-1 {
			d.fail(errDuration)
			return 0
		}
		return time.Duration(v)
	}
	m.Idle = dur(d.u64())
	m.Interval = dur(d.u64())
	m.Count = d.u32()
}
