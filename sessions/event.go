package sessions

import (
	"net/netip"

	"github.com/xsessiond/xsessiond/fifo"
)

// EventKind says what an Event is about: the event types of package fifo,
// whose numbers the app reads from its event queue.
type EventKind = fifo.EventType

// Event kinds the session layer sends.
const (
	EventAccepted      = fifo.EventAccepted      // a session on one of the app's listeners
	EventConnected     = fifo.EventConnected     // the app's connect succeeded
	EventConnectFailed = fifo.EventConnectFailed // the app's connect failed
	EventDisconnected  = fifo.EventDisconnected  // the session was closed by the peer or the daemon
	EventSegmentAdded  = fifo.EventSegmentAdded  // the app's segment manager added a segment
	EventReset         = fifo.EventReset         // a stream session was reset (or timed out)
	EventPeerClosed    = fifo.EventPeerClosed    // a stream session's peer closed its half
	EventResetAhead    = fifo.EventResetAhead    // a stream session was reset; data received before comes first
)

// Event is a notification for one app.
type Event struct {
	Kind       EventKind
	App        AppID
	Handle     Handle // the session (the listener for nothing)
	Listener   Handle // accepted: the listener it came in on
	Opaque     uint32 // connected, connect failed: the app's connect context
	Transport  Transport
	Local      netip.AddrPort
	Remote     netip.AddrPort
	CutThrough bool
	Pair       FifoPair // accepted, connected: the app's fifos (Pair.Segment is the segment they live in)
	Segment    Segment  // segment added: the new segment
	Err        error    // connect failed, reset: why
}

// Notifier observes every event delivered to apps, after it was queued in
// the app's event queue. The daemon uses it to pass the file descriptors of
// new segments over the control socket. Notify is called without the
// session layer's lock held, possibly from several goroutines.
type Notifier interface {
	Notify(ev Event)
}
