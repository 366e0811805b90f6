package sessions_test

import (
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/sessions"
)

// TestStreamSetKeepaliveBounds: a keepalive idle time or interval under a
// second or over 32767 s, or a count over 127, is refused before the
// session is looked at, as setsockopt(2) refuses it: an app asking for a
// probe every nanosecond must not get one.
func TestStreamSetKeepaliveBounds(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	for _, k := range []sessions.Keepalive{
		{Enabled: true, Idle: time.Nanosecond},
		{Enabled: true, Interval: time.Second - 1},
		{Enabled: true, Idle: 32768 * time.Second},
		{Enabled: true, Interval: -time.Second},
		{Enabled: true, Count: 128},
		{Enabled: true, Count: -1},
	} {
		wantErr(t, r.l.StreamSetKeepalive(a, 99, k), sessions.ErrInvalidValue)
	}
	// Within the bounds, the missing session is what is wrong.
	for _, k := range []sessions.Keepalive{
		{}, {Enabled: true, Idle: time.Second, Interval: 32767 * time.Second, Count: 127},
	} {
		wantErr(t, r.l.StreamSetKeepalive(a, 99, k), sessions.ErrNoSession)
	}
}
