package nsbind

import (
	"sync/atomic"

	"github.com/vishvananda/netns"
)

// A netlink subscription (netlink.*SubscribeWithOptions) runs two
// goroutines: one closes the socket when the done channel closes, the other
// receives and sends updates on the caller's channel, which it closes when
// its socket fails or is closed. The subscriber in this package always
// closes done and then drains the channel until it is closed, so neither
// goroutine outlives the subscription, and it sets a stopFlag first so the
// error callback can tell the expected "use of closed file" from a real
// failure.

// stopFlag marks a subscription being torn down on purpose.
type stopFlag struct{ b atomic.Bool }

func (f *stopFlag) stop()         { f.b.Store(true) }
func (f *stopFlag) stopped() bool { return f.b.Load() }

func nsHandle(fd int) netns.NsHandle { return netns.NsHandle(fd) }
