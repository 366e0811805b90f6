package app

// Books counts what an App keeps per session, listener and connect, for
// tests that look for state growing with churn.
type Books struct {
	Owners, GoneEarly, Closing, Dropped, LocalOf, Dials, Parked, Objects, Acceptors, Waiters int
}

// Books returns the sizes of a's maps and lists.
func (a *App) Books() Books {
	a.evmu.Lock()
	parked := len(a.parked)
	a.evmu.Unlock()
	a.wmu.Lock()
	waiters := len(a.waiters)
	a.wmu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	return Books{
		Owners: len(a.owners), GoneEarly: len(a.goneEarly), Closing: len(a.closing),
		Dropped: len(a.dropped.cur) + len(a.dropped.old), LocalOf: len(a.localOf), Dials: len(a.dials),
		Parked: parked, Objects: len(a.objects), Acceptors: len(a.acceptors), Waiters: waiters,
	}
}

// Books returns how many cut-through peers p holds and its path-MTU
// cache's entries.
func (p *PacketConn) Books() (peers, pmtu int) {
	p.mu.Lock()
	peers = len(p.peers)
	p.mu.Unlock()
	return peers, p.pmtu.len()
}

// QueueLen returns how many sessions wait for Accept on l.
func (l *Listener) QueueLen() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}
