package daemon

import (
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/sessions"
)

// refs is a reference count that can only be taken while it is above zero:
// once the last reference is dropped the object is gone for good, and a
// late tryRef fails instead of reviving it.
type refs struct{ n atomic.Int32 }

func (r *refs) init() { r.n.Store(1) }

func (r *refs) tryRef() bool {
	for {
		n := r.n.Load()
		if n <= 0 {
			return false
		}
		if r.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// unref drops a reference and reports whether it was the last one.
func (r *refs) unref() bool { return r.n.Add(-1) == 0 }

// daemonMemory is the session layer's Memory in the daemon: FifoMemory
// whose cut-through sessions are reference counted, so that the daemon can
// still pass their segment to both apps after the session layer released
// its lock (and maybe closed the session already). The layer's Close of a
// cut-through session is only the drop of its own reference. Apps' memory
// is FifoMemory's as is (the datapath reaches into it with
// sessions.FifoManager).
type daemonMemory struct {
	sessions.FifoMemory
}

func (m daemonMemory) NewCutThrough(name string, c2s, s2c uint32) (sessions.CutThrough, error) {
	ct, err := m.FifoMemory.NewCutThrough(name, c2s, s2c)
	if err != nil {
		return nil, err
	}
	seg, _ := ct.Segment().(*fifo.Segment)
	c := &ctMem{CutThrough: ct, seg: seg}
	c.refs.init()
	return c, nil
}

// sharedFD is a descriptor the daemon duplicated for itself (the epoll set
// that wakes an app, its event queue's WaitFD), closed when the last
// reference goes.
type sharedFD struct {
	fd   int
	refs refs
}

func newSharedFD(fd int) (*sharedFD, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	s := &sharedFD{fd: nfd}
	s.refs.init()
	return s, nil
}

func (s *sharedFD) release() {
	if s.refs.unref() {
		unix.Close(s.fd)
	}
}

// ctMem is a cut-through session's memory with a reference count. Its
// pairs carry ctSegment, so that whoever sees them in an event can find
// it.
type ctMem struct {
	sessions.CutThrough
	seg  *fifo.Segment
	refs refs

	accepted  sessions.Event // guarded by Daemon.mu: the server's accept event
	connected sessions.Event // guarded by Daemon.mu: the client's connect event
}

// ctSegment is the Segment of a cut-through pair: the fifo segment and the
// ctMem that owns it.
type ctSegment struct {
	*fifo.Segment
	ct *ctMem
}

func (c *ctMem) Client() sessions.FifoPair {
	p := c.CutThrough.Client()
	p.Segment = ctSegment{Segment: c.seg, ct: c}
	return p
}

func (c *ctMem) Server() sessions.FifoPair {
	p := c.CutThrough.Server()
	p.Segment = ctSegment{Segment: c.seg, ct: c}
	return p
}

// Close drops the session layer's reference.
func (c *ctMem) Close() error {
	c.release()
	return nil
}

func (c *ctMem) release() {
	if c.refs.unref() {
		_ = c.CutThrough.Close()
	}
}
