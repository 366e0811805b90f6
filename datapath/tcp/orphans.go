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
// of memory on nobody's account. So an orphan's send buffer stays
// accounted against the bounds of its group (buffers.go) until gVisor
// has delivered it, and an orphan whose peer has taken nothing for
// Options.CloseTimeout is reset (Stats.OrphansReset), as Linux kills an
// orphan whose zero-window probes go on past tcp_orphan_retries.

// orphanSweep is how often the orphans are looked at.
const orphanSweep = 250 * time.Millisecond

// orphan is what the sweep remembers of one: the send queue it last saw,
// and when the peer last took some of it.
type orphan struct {
	sendQ    int
	progress time.Time
}

// orphanLocked keeps c's send buffer accounted and has the sweep watch it
// (s.mu held); its receive buffer is given back: gVisor resets a closed
// connection that receives data.
func (s *Stack) orphanLocked(c *Conn) {
	rcv := c.rcvBuf.Swap(0)
	s.bufBytes -= rcv
	s.groupBuf[c.group] -= rcv
	s.orphans[c] = &orphan{sendQ: c.sendQ(), progress: time.Now()}
	if s.sweep == nil {
		s.scheduleSweepLocked()
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
	var done, stuck []*Conn
	for _, e := range es {
		c, o := e.c, e.o
		if !c.holdsData() {
			done = append(done, c)
			continue
		}
		if q := c.sendQ(); q < o.sendQ {
			o.sendQ, o.progress = q, now
		} else if now.Sub(o.progress) >= s.opts.CloseTimeout {
			stuck = append(stuck, c)
		}
	}
	for _, c := range stuck {
		c.ep.Abort() // an RST
		c.sentReset.Store(true)
		s.orphansReset.Add(1)
	}
	s.mu.Lock()
	for _, c := range append(done, stuck...) {
		delete(s.orphans, c)
		s.releaseBuffersLocked(c)
	}
	s.mu.Unlock()
	for _, c := range append(done, stuck...) {
		c.untrackWindow()
	}
	s.mu.Lock()
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
