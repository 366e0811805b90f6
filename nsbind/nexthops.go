package nsbind

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NextHopChange is a change that may move where frames to a destination
// go: a neighbour of the interface watched got another link-layer address,
// or lost its usable one (IP, MAC, Usable; Failed when its resolution
// failed), or the namespace's routes, its rules or the view of them
// changed (Route: anything resolved before may be stale).
type NextHopChange struct {
	Route  bool
	IP     netip.Addr
	MAC    net.HardwareAddr // the neighbour's address when Usable
	Usable bool
	Failed bool // the entry turned failed: its probes went unanswered
}

// watchRetry is how long a NextHopWatch waits before it subscribes again
// after its subscription failed.
const watchRetry = 100 * time.Millisecond

// NextHopWatch follows the neighbours of one interface and the routes of
// a namespace and its policy routing rules through netlink subscriptions
// (WatchNextHops).
type NextHopWatch struct {
	n       *Namespace
	ifindex int
	sub     *nextHopSub // nil between a failure and the next subscription
}

// nextHopSub is one set of subscriptions.
type nextHopSub struct {
	fd       int
	neigh    chan netlink.NeighUpdate
	route    chan netlink.RouteUpdate
	rule     chan struct{}
	done     chan struct{}
	stopping stopFlag
	errc     chan error
}

// WatchNextHops subscribes to the changes of the neighbours of interface
// ifindex and of the namespace's routes and rules, at once: what changes from then
// on, Run reports. Run or Close must follow.
func (n *Namespace) WatchNextHops(ifindex int) (*NextHopWatch, error) {
	s, err := n.subscribeNextHops()
	if err != nil {
		return nil, fmt.Errorf("watch next hops on %d in %s: %w", ifindex, n.desc, err)
	}
	return &NextHopWatch{n: n, ifindex: ifindex, sub: s}, nil
}

func (n *Namespace) subscribeNextHops() (*nextHopSub, error) {
	fd, err := n.dupFD()
	if err != nil {
		return nil, err
	}
	s := &nextHopSub{fd: fd, neigh: make(chan netlink.NeighUpdate, 256), route: make(chan netlink.RouteUpdate, 64),
		rule: make(chan struct{}, 64), done: make(chan struct{}), errc: make(chan error, 3)}
	onErr := func(err error) {
		if s.stopping.stopped() {
			return
		}
		select {
		case s.errc <- err:
		default:
		}
	}
	nsh := nsHandle(fd)
	if err := netlink.NeighSubscribeWithOptions(s.neigh, s.done, netlink.NeighSubscribeOptions{Namespace: &nsh, ErrorCallback: onErr}); err != nil {
		close(s.done)
		unix.Close(fd)
		return nil, fmt.Errorf("subscribe to neighbours: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(s.route, s.done, netlink.RouteSubscribeOptions{Namespace: &nsh, ErrorCallback: onErr}); err != nil {
		s.route, s.rule = nil, nil
		s.close()
		return nil, fmt.Errorf("subscribe to routes: %w", err)
	}
	// A rule added or deleted moves the route of whatever source it
	// names, as `ip route get DST from SRC` shows at once.
	if err := subscribeRules(nsh, s.rule, s.done, onErr); err != nil {
		s.rule = nil
		s.close()
		return nil, fmt.Errorf("subscribe to routing rules: %w", err)
	}
	return s, nil
}

// close ends the subscriptions and waits for their goroutines.
func (s *nextHopSub) close() {
	s.stopping.stop()
	close(s.done)
	for range s.neigh {
	}
	if s.route != nil {
		for range s.route {
		}
	}
	if s.rule != nil {
		for range s.rule {
		}
	}
	unix.Close(s.fd)
}

// Close ends the watch when Run is not called.
func (w *NextHopWatch) Close() {
	if w.sub != nil {
		w.sub.close()
		w.sub = nil
	}
}

// Run calls fn for each change, in order, on the caller's goroutine,
// until ctx ends, then closes the watch. When a subscription fails
// (messages may have been lost) fn gets a Route change and the watch
// subscribes again.
func (w *NextHopWatch) Run(ctx context.Context, fn func(NextHopChange)) {
	defer w.Close()
	for {
		if w.sub == nil {
			s, err := w.n.subscribeNextHops()
			if err != nil {
				select {
				case <-ctx.Done():
					return
				case <-time.After(watchRetry):
				}
				continue
			}
			w.sub = s
			fn(NextHopChange{Route: true}) // what changed meanwhile
		}
		if err := w.sub.serve(ctx, w.ifindex, fn); errors.Is(err, ctx.Err()) {
			return
		}
		w.sub.close()
		w.sub = nil
		fn(NextHopChange{Route: true})
	}
}

// serve reports the subscriptions' changes until they fail or ctx ends.
func (s *nextHopSub) serve(ctx context.Context, ifindex int, fn func(NextHopChange)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-s.errc:
			return err
		case u, open := <-s.neigh:
			if !open {
				return errors.New("neighbour subscription ended")
			}
			if u.LinkIndex != ifindex {
				continue
			}
			ip, ok := netip.AddrFromSlice(u.IP)
			if !ok {
				continue
			}
			st := NeighState(u.State)
			usable := u.Type == unix.RTM_NEWNEIGH && st.Usable() && len(u.HardwareAddr) == 6
			var mac net.HardwareAddr
			if usable {
				mac = slices.Clone(u.HardwareAddr)
			}
			failed := u.Type == unix.RTM_NEWNEIGH && st&NeighFailed != 0
			fn(NextHopChange{IP: ip.Unmap(), MAC: mac, Usable: usable, Failed: failed})
		case _, open := <-s.route:
			if !open {
				return errors.New("route subscription ended")
			}
			fn(NextHopChange{Route: true})
		case _, open := <-s.rule:
			if !open {
				return errors.New("rule subscription ended")
			}
			fn(NextHopChange{Route: true})
		}
	}
}
