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
