package flow

import "time"

// The TCP keepalive Go's net package sets on each connection net.Dial
// makes and a net.Listener accepts, and takes for a zero field of a
// net.KeepAliveConfig: the daemon starts each TCP connection on the wire
// with it, and the app library's setters take it as Go's do.
const (
	KeepaliveIdle     = 15 * time.Second
	KeepaliveInterval = 15 * time.Second
	KeepaliveCount    = 9
)

// Linux's bounds of a TCP socket's keepalive options (MAX_TCP_KEEPIDLE,
// MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT): setsockopt(2) refuses more with
// EINVAL, and less than 1 (second, probe). The daemon refuses what
// Linux would, so that no app makes a connection send a probe every
// nanosecond.
const (
	KeepaliveMaxSeconds = 32767
	KeepaliveMaxCount   = 127
)

// KeepaliveValid reports whether a keepalive idle time, interval and
// count are within Linux's bounds: each 0 (unchanged) or at least 1 s
// (1 probe) and at most KeepaliveMaxSeconds (KeepaliveMaxCount).
func KeepaliveValid(idle, interval time.Duration, count int) bool {
	in := func(d time.Duration) bool { return d == 0 || d >= time.Second && d <= KeepaliveMaxSeconds*time.Second }
	return in(idle) && in(interval) && count >= 0 && count <= KeepaliveMaxCount
}
