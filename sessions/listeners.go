package sessions

import (
	"maps"
)

// Listener is one listener of a global or local table. Values are
// immutable once published.
type Listener struct {
	Handle Handle
	App    AppID
	// Namespace is the app's namespace id ("" the default); global
	// listeners only.
	Namespace string
	Endpoint  Endpoint // IfIndex and FIB filled from the app's namespace
	Local     bool     // in the namespace's local table (else the FIB's global table)
	Proxy     bool     // a proxy app's port wildcard (Endpoint.Port is 0)

	// Pair is the datagram fifo pair of a global UDP listener, allocated
	// from the app's memory at bind and freed at unbind or detach: the
	// datapath writes received datagrams (each tagged with its remote
	// endpoint) into Pair.Rx and sends what the app writes into Pair.Tx.
	// Zero for other listeners.
	Pair FifoPair
	// Worker is the datapath worker that owns Pair.Tx (and drains it):
	// chosen by a WorkerDatapath, else spread over the workers by handle.
	Worker uint32
	// Memory is the listening app's memory (its event queue), for the
	// datapath to signal the app; nil for listeners without a Pair.
	Memory AppMemory
}

// listenKey is the key of a listener: address (zero for a wildcard bind),
// port (zero for a proxy's every-port entry), transport and family.
type listenKey struct {
	addr  [16]byte
	port  uint16
	proto Transport
	fam   uint8
}

func keyOf(e Endpoint) listenKey {
	return listenKey{addr: AddrBytes(e.Addr), port: e.Port, proto: e.Transport, fam: e.Family()}
}

const listenBuckets = 256

func listenBucket(port uint16) int { return int(uint8(port) ^ uint8(port>>8)) }

// listenerSet is an immutable set of listeners of one table, spread over
// buckets by port so that a change copies one small map, not the set.
type listenerSet struct {
	b [listenBuckets]map[listenKey]*Listener
	n int
}

func (s *listenerSet) get(k listenKey) *Listener {
	if s == nil {
		return nil
	}
	return s.b[listenBucket(k.port)][k]
}

// lookup finds the listener serving address addr and port: an exact bind,
// else a wildcard-address bind of the port, else a proxy's every-port entry.
func (s *listenerSet) lookup(proto Transport, fam uint8, addr *[16]byte, port uint16) *Listener {
	if s == nil {
		return nil
	}
	k := listenKey{addr: *addr, port: port, proto: proto, fam: fam}
	b := &s.b[listenBucket(port)]
	if l := (*b)[k]; l != nil {
		return l
	}
	k.addr = [16]byte{}
	if l := (*b)[k]; l != nil {
		return l
	}
	k.port = 0
	return s.b[0][k]
}

// lookupApp is lookup restricted to the listeners of app: app's exact
// bind, else its wildcard-address bind of the port, else its proxy
// every-port entry.
func (s *listenerSet) lookupApp(proto Transport, fam uint8, addr *[16]byte, port uint16, app AppID) *Listener {
	if s == nil {
		return nil
	}
	k := listenKey{addr: *addr, port: port, proto: proto, fam: fam}
	b := &s.b[listenBucket(port)]
	if l := (*b)[k]; l != nil && l.App == app {
		return l
	}
	k.addr = [16]byte{}
	if l := (*b)[k]; l != nil && l.App == app {
		return l
	}
	k.port = 0
	if l := s.b[0][k]; l != nil && l.App == app {
		return l
	}
	return nil
}

// with returns a copy of s with l added (or removed when add is false).
func (s *listenerSet) with(k listenKey, l *Listener, add bool) *listenerSet {
	ns := &listenerSet{}
	if s != nil {
		*ns = *s
	}
	i := listenBucket(k.port)
	m := maps.Clone(ns.b[i])
	if m == nil {
		m = map[listenKey]*Listener{}
	}
	_, had := m[k]
	if add {
		m[k] = l
		if !had {
			ns.n++
		}
	} else {
		delete(m, k)
		if had {
			ns.n--
		}
	}
	if len(m) == 0 {
		m = nil
	}
	ns.b[i] = m
	return ns
}

func (s *listenerSet) all(out []*Listener) []*Listener {
	if s == nil {
		return out
	}
	for _, m := range s.b {
		for _, l := range m {
			out = append(out, l)
		}
	}
	return out
}

// listenerSnap is the published state of the global listener tables: one
// set per FIB. Immutable.
type listenerSnap struct {
	fibs map[FIBID]*listenerSet
}

func (p *listenerSnap) set(fib FIBID) *listenerSet {
	if p == nil {
		return nil
	}
	return p.fibs[fib]
}

func (p *listenerSnap) with(fib FIBID, k listenKey, l *Listener, add bool) *listenerSnap {
	np := &listenerSnap{fibs: map[FIBID]*listenerSet{}}
	if p != nil {
		maps.Copy(np.fibs, p.fibs)
	}
	s := np.fibs[fib].with(k, l, add)
	if s.n == 0 {
		delete(np.fibs, fib)
	} else {
		np.fibs[fib] = s
	}
	return np
}
