package tcp

import "time"

// Orphans.
//
// A Conn finishes (Closed) once its app closed it and its tx fifo drained
// into gVisor; gVisor then still has to deliver what it took, and the
// FIN, to the peer. Until that is acknowledged the connection is an
// orphan, as Linux calls a socket its process closed: gVisor holds its
// send queue, up to the Conn's send buffer. A peer that keeps its window
// shut would make it hold that for ever, and an app that opens, fills and
// closes connections to such a peer could make the daemon hold any amount
// of memory on nobody's account. So what an orphan holds (its send queue,
// within its send buffer; the whole buffer when the link does not know
// the queue) stays accounted against the bounds of its group (buffers.go)
// and shrinks as the peer takes it, until gVisor has delivered it all,
// and an orphan whose peer has taken nothing for Options.CloseTimeout is
// reset (Stats.OrphansReset), as Linux kills an orphan whose zero-window
// probes go on past tcp_orphan_retries (one whose progress the link
// cannot see, its peer's window untracked, CloseTimeout after it became
// an orphan). A connection closed with nothing left unacknowledged but
// its FIN holds nothing accounted: a server that closes connections at a
// high rate is not held back by them.

// orphanSweep is how often the orphans are looked at.
const orphanSweep = 250 * time.Millisecond

// orphan is what the sweep remembers of one: the send queue it last saw,
// and when the peer last took some of it.
type orphan struct {
	sendQ    int
	progress time.Time
}

// orphanLocked keeps what c holds to send accounted, and no more, and has
// the sweep watch it (s.mu held); its receive buffer is given back: gVisor
// resets a closed connection that receives data.
func (s *Stack) orphanLocked(c *Conn) {
	q, known := c.unacked()
	held := c.sndBuf.Load()
	if known {
		held = min(held, int64(q))
	}
	s.chargeOrphanLocked(c, held)
	s.orphans[c] = &orphan{sendQ: q, progress: time.Now()}
	if s.sweep == nil {
		s.scheduleSweepLocked()
	}
}

// chargeOrphanLocked sets what orphan c has accounted to held bytes, at
// most what it had (s.mu held).
func (s *Stack) chargeOrphanLocked(c *Conn, held int64) {
	was := c.rcvBuf.Swap(0) + c.sndBuf.Load()
	held = max(min(held, was), 0)
	c.sndBuf.Store(held)
	s.bufBytes -= was - held
	if s.groupBuf[c.group] -= was - held; s.groupBuf[c.group] <= 0 {
		delete(s.groupBuf, c.group)
	}
}

// sweepOrphans gives back the accounting of the orphans gVisor is done
// with (FIN-WAIT-2, TIME-WAIT, CLOSED: nothing left to deliver) and
// resets those whose peer has taken nothing for CloseTimeout.
func (s *Stack) sweepOrphans() {
	type entry struct {
		c *Conn
		o *orphan // only the sweep writes it
	}
	defer s.sweepWG.Done()
	s.mu.Lock()
	if s.closed { // Close gives back what the orphans hold
		s.mu.Unlock()
		return
	}
	es := make([]entry, 0, len(s.orphans))
	for c, o := range s.orphans {
		es = append(es, entry{c, o})
	}
	s.mu.Unlock()
	now := time.Now()
	var done, stuck, shrunk []*Conn
	for _, e := range es {
		c, o := e.c, e.o
		if !c.Delivering() {
			done = append(done, c)
			continue
		}
		if q, known := c.unacked(); known && q < o.sendQ {
			o.sendQ, o.progress = q, now
			shrunk = append(shrunk, c)
		} else if now.Sub(o.progress) >= s.opts.CloseTimeout {
			stuck = append(stuck, c)
		}
	}
	for _, c := range stuck {
		c.ep.Abort() // an RST
		c.sentReset.Store(true)
		s.orphansReset.Add(1)
	}
	ended := append(done, stuck...)
	// Their windows first: once an orphan is out of s.orphans, Stats no
	// longer counts it, and nothing of it may be left.
	for _, c := range ended {
		c.untrackWindow()
	}
	s.mu.Lock()
	for _, c := range ended {
		delete(s.orphans, c)
		s.releaseBuffersLocked(c)
	}
	for _, c := range shrunk {
		if o := s.orphans[c]; o != nil {
			s.chargeOrphanLocked(c, int64(o.sendQ))
		}
	}
	s.sweep = nil
	if len(s.orphans) > 0 && !s.closed {
		s.scheduleSweepLocked()
	}
	s.mu.Unlock()
}

// scheduleSweepLocked runs sweepOrphans after orphanSweep (s.mu held).
func (s *Stack) scheduleSweepLocked() {
	s.sweepWG.Add(1)
	s.sweep = time.AfterFunc(orphanSweep, s.sweepOrphans)
}

// stopSweep stops the sweep and waits for one that runs (s.closed set).
func (s *Stack) stopSweep() {
	s.mu.Lock()
	if s.sweep != nil && s.sweep.Stop() {
		s.sweepWG.Done()
	}
	s.sweep = nil
	s.mu.Unlock()
	s.sweepWG.Wait()
}
