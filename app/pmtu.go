package app

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
)

// Path MTUs and their cache. A don't-fragment datagram whose IP packet
// exceeds the path MTU is refused by the write itself, as a kernel socket
// with IP_PMTUDISC_DO refuses it: the library asks the daemon for the path
// MTU (api.PathMTU) and keeps the answer for pmtuTTL. Packets no larger
// than the MTU every path carries (RFC 791's 576 bytes for IPv4, RFC
// 8200's 1,280 for IPv6) are never checked, so small datagrams cost
// nothing.
const (
	minMTU4     = 576
	minMTU6     = 1280
	pmtuTTL     = 10 * time.Second
	pmtuEntries = 1024 // destinations one cache holds; a full cache drops entries
)

// pmtuCache maps destinations to the path MTU the daemon gave for them
// (0: no limit known), each for pmtuTTL. A miss asks the daemon once:
// concurrent writers to the same destination wait for that answer. An
// asynchronous EMSGSIZE (the path MTU shrank) clears it. The zero value
// is ready to use; it is safe for concurrent use.
type pmtuCache struct {
	now func() time.Time // nil: time.Now (tests set it)

	mu sync.Mutex // guards m and each entry's fields
	m  map[netip.Addr]*pmtuEntry
}

type pmtuEntry struct {
	mtu   int           // 0: no limit known
	until time.Time     // the entry's expiry
	done  chan struct{} // while the daemon is asked: closed when the answer is in; nil after
}

func (c *pmtuCache) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// get returns the path MTU cached for dst; on a miss it calls query (once
// for concurrent callers) and caches its answer when keep is set. stop
// ends a wait for another caller's query (the caller then knows no
// limit: 0).
func (c *pmtuCache) get(dst netip.Addr, query func() (mtu int, keep bool), stop <-chan struct{}) int {
	for {
		now := c.clock()
		c.mu.Lock()
		e := c.m[dst]
		if e != nil && e.done != nil {
			done := e.done
			c.mu.Unlock()
			select {
			case <-done:
				continue
			case <-stop:
				return 0
			}
		}
		if e != nil && now.Before(e.until) {
			mtu := e.mtu
			c.mu.Unlock()
			return mtu
		}
		e = &pmtuEntry{done: make(chan struct{})}
		c.makeRoomLocked(now)
		if c.m == nil {
			c.m = make(map[netip.Addr]*pmtuEntry)
		}
		c.m[dst] = e
		c.mu.Unlock()

		mtu, keep := query()

		c.mu.Lock()
		if c.m[dst] == e { // not cleared meanwhile
			if keep {
				e.mtu, e.until = mtu, c.clock().Add(pmtuTTL)
			} else {
				delete(c.m, dst)
			}
		}
		close(e.done)
		e.done = nil
		c.mu.Unlock()
		return mtu
	}
}

// makeRoomLocked makes room for one more entry: it drops the expired
// ones, and every answered one if that is not enough. c.mu is held.
func (c *pmtuCache) makeRoomLocked(now time.Time) {
	if len(c.m) < pmtuEntries {
		return
	}
	for k, e := range c.m {
		if e.done == nil && !now.Before(e.until) {
			delete(c.m, k)
		}
	}
	if len(c.m) < pmtuEntries {
		return
	}
	for k, e := range c.m {
		if e.done == nil {
			delete(c.m, k)
		}
	}
}

// clear forgets every entry (a query in flight then answers its callers
// but is not kept).
func (c *pmtuCache) clear() {
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

// len returns the number of entries.
func (c *pmtuCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// checkPath refuses a don't-fragment datagram of n bytes from h to dst
// whose IP packet exceeds the path MTU, with the error the daemon's
// asynchronous report gives (wrapping syscall.EMSGSIZE). It asks the
// daemon only for packets larger than the minimum MTU of dst's family;
// when the daemon knows no limit, the datagram goes and the daemon checks
// it.
// The query is bounded by the write deadline w and done.
func (a *App) checkPath(c *pmtuCache, h flow.Handle, dst netip.Addr, n int, w *half, done <-chan struct{}) error {
	ip, min := 20, minMTU4
	if dst.Is6() && !dst.Is4In6() {
		ip, min = 40, minMTU6
	}
	size := ip + 8 + n
	if size <= min || !a.askMTU {
		return nil
	}
	dst = dst.Unmap()
	mtu := c.get(dst, func() (int, bool) { return a.pathMTU(h, dst, w, done) }, done)
	if mtu > 0 && size > mtu {
		return &Error{Msg: fmt.Sprintf("app: a don't-fragment datagram of %d bytes on a path of MTU %d", size, mtu), Err: syscall.EMSGSIZE}
	}
	return nil
}

// pathMTU asks the daemon for the path MTU from h to dst. keep reports
// whether the answer is to be cached: the daemon's MTU, or no limit (0)
// when it answered with an error (no datapath serves h); not a failed
// call (a deadline, the app stopping), which the write reports itself.
func (a *App) pathMTU(h flow.Handle, dst netip.Addr, w *half, done <-chan struct{}) (mtu int, keep bool) {
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	dl := w.dl.wait()
	go func() {
		select {
		case <-dl:
		case <-done:
		case <-ctx.Done():
		}
		cancel()
	}()
	r, fds, err := do[*api.PathMTUReply](ctx, a, &api.PathMTU{Handle: h, Remote: dst})
	api.CloseFDs(fds)
	if err != nil {
		return 0, errors.Is(err, api.ErrRemote)
	}
	return int(r.MTU), true
}
