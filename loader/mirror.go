package loader

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/xsessiond/xsessiond/flow"
)

// Source is the session layer's global tables as the mirror follows them.
// The sessions table satisfies it.
type Source interface {
	// Snapshot returns the sequence number of the last change the tables
	// reflect and one OpAdd change per entry of the tables (listeners and
	// established sessions).
	Snapshot() (seq uint64, changes []flow.Change)
}

// MirrorOptions shape a Mirror.
type MirrorOptions struct {
	// IfIndex limits the mirror to the entries of one interface (the one
	// the program is attached to). Changes of other interfaces are skipped;
	// changes with IfIndex 0 are taken as this interface's. 0 mirrors every
	// interface, and then a change without an IfIndex is invalid.
	IfIndex int
	// Keep, when set, says which changes belong in the maps: the others
	// are skipped as another interface's are (in order, counted in
	// Skipped), in the feed, in resyncs and in checks alike.
	Keep func(c *flow.Change) bool
}

// MirrorStats count what a mirror did.
type MirrorStats struct {
	LastSeq     uint64 // sequence number of the last change applied
	Applied     uint64 // changes written to the maps
	Skipped     uint64 // changes of another interface, or not kept (MirrorOptions.Keep)
	Stale       uint64 // changes at or below LastSeq, ignored
	OutOfOrder  uint64 // changes refused for a gap in the sequence
	Invalid     uint64 // changes refused as invalid
	Failed      uint64 // changes whose map write failed
	DelMissing  uint64 // deletes of entries the map did not have
	Resyncs     uint64 // full resyncs
	Checks      uint64 // comparisons of source and maps
	NotCompared uint64 // comparisons skipped: source and maps at different sequence numbers
	Divergent   uint64 // comparisons that found a difference
	Missing     uint64 // entries of the source missing from the maps, summed over comparisons
	Extra       uint64 // entries of the maps not in the source, summed over comparisons
	Mismatched  uint64 // entries whose value differs, summed over comparisons
}

// Divergence is what one comparison of source and maps found.
type Divergence struct {
	Missing, Extra, Mismatched int
}

// IsZero reports whether the maps matched the source.
func (d Divergence) IsZero() bool { return d == Divergence{} }

// mirrorMaps is what the mirror writes: the program's listener and
// established maps (or a fake in tests).
type mirrorMaps interface {
	putListener(k xsessionXsLstKey, v xsessionXsValue) error
	delListener(k xsessionXsLstKey) error
	dumpListeners() (map[xsessionXsLstKey]xsessionXsValue, error)
	putSession(k xsessionXsEstKey, v xsessionXsValue) error
	delSession(k xsessionXsEstKey) error
	dumpSessions() (map[xsessionXsEstKey]xsessionXsValue, error)
}

type bpfMaps struct {
	l *ListenerMap
	e *EstablishedMap
}

func (b bpfMaps) putListener(k xsessionXsLstKey, v xsessionXsValue) error { return b.l.put(k, v) }
func (b bpfMaps) delListener(k xsessionXsLstKey) error                    { return b.l.del(k) }
func (b bpfMaps) dumpListeners() (map[xsessionXsLstKey]xsessionXsValue, error) {
	return b.l.dump()
}
func (b bpfMaps) putSession(k xsessionXsEstKey, v xsessionXsValue) error { return b.e.put(k, v) }
func (b bpfMaps) delSession(k xsessionXsEstKey) error                    { return b.e.del(k) }
func (b bpfMaps) dumpSessions() (map[xsessionXsEstKey]xsessionXsValue, error) {
	return b.e.dump()
}

// Mirror keeps the program's listener and established maps equal to the
// session layer's global tables: it applies the tables' change feed in
// order, resyncs from a snapshot at start and on demand, and compares
// tables and maps to report divergence. It is the only writer of the two
// maps. Methods are safe for concurrent use; lock order: Mirror.mu, then
// whatever the Source locks in Snapshot.
type Mirror struct {
	src   Source
	ifidx int
	keep  func(*flow.Change) bool
	maps  mirrorMaps

	mu         sync.Mutex // guards the fields below and serialises map writes
	lastSeq    uint64
	needResync bool
	stats      MirrorStats
	// refused holds the listeners and sessions whose entry the map
	// refused (full): Refused tells a bind or connect that waited for the
	// mirror that its packets are not steered.
	refused map[flow.Handle]struct{}
}

// NewMirror makes a mirror of src into o's maps and does the first full
// resync.
func NewMirror(o *Objects, src Source, opts MirrorOptions) (*Mirror, error) {
	return newMirror(bpfMaps{o.Listeners, o.Established}, src, opts)
}

func newMirror(maps mirrorMaps, src Source, opts MirrorOptions) (*Mirror, error) {
	if opts.IfIndex < 0 {
		return nil, fmt.Errorf("mirror ifindex %d: %w", opts.IfIndex, ErrInvalidOptions)
	}
	m := &Mirror{src: src, ifidx: opts.IfIndex, keep: opts.Keep, maps: maps, refused: map[flow.Handle]struct{}{}}
	if err := m.Resync(); err != nil {
		return nil, err
	}
	return m, nil
}

// Stats returns the mirror's counters.
func (m *Mirror) Stats() MirrorStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

// NeedsResync reports whether the mirror refuses changes until Resync.
func (m *Mirror) NeedsResync() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.needResync
}

// key turns a change into the map key it writes. skip is set for a change
// of another interface or one Keep refuses.
func (m *Mirror) key(c *flow.Change) (lk xsessionXsLstKey, ek xsessionXsEstKey, skip bool, err error) {
	if m.keep != nil && !m.keep(c) {
		return lk, ek, true, nil
	}
	ifi := c.IfIndex
	if m.ifidx != 0 {
		if ifi != 0 && ifi != m.ifidx {
			return lk, ek, true, nil
		}
		ifi = m.ifidx
	}
	switch c.Kind {
	case flow.KindListener:
		lk, err = lstKey(ifi, &c.Tuple)
	case flow.KindEstablished:
		ek, err = estKey(ifi, &c.Tuple)
	default:
		err = fmt.Errorf("kind %d: %w", c.Kind, ErrInvalidChange)
	}
	if err != nil && !errors.Is(err, ErrInvalidChange) {
		err = fmt.Errorf("%w: %w", ErrInvalidChange, err)
	}
	return lk, ek, false, err
}

// Apply applies one change. A change at or below the last applied sequence
// number is ignored (a resync already covered it); a change that does not
// follow the last one is refused with ErrResyncNeeded, as is every change
// after it until Resync. An invalid change is skipped with
// ErrInvalidChange; a failed map write returns its error. Both advance the
// sequence number.
func (m *Mirror) Apply(c flow.Change) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applyLocked(&c)
}

// ApplyBatch applies changes in order and stops at the first one that
// needs a resync. It returns how many changes it consumed and the first
// error met (later invalid or failed changes are counted in Stats only).
func (m *Mirror) ApplyBatch(cs []flow.Change) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var first error
	for i := range cs {
		err := m.applyLocked(&cs[i])
		if errors.Is(err, ErrResyncNeeded) {
			return i, err
		}
		if err != nil && first == nil {
			first = err
		}
	}
	return len(cs), first
}

// applyLocked expects m.mu held.
func (m *Mirror) applyLocked(c *flow.Change) error {
	if m.needResync {
		m.stats.OutOfOrder++
		return fmt.Errorf("change %d: %w", c.Seq, ErrResyncNeeded)
	}
	if c.Seq <= m.lastSeq {
		m.stats.Stale++
		return nil
	}
	if c.Seq != m.lastSeq+1 {
		m.stats.OutOfOrder++
		m.needResync = true
		return fmt.Errorf("change %d after %d: %w", c.Seq, m.lastSeq, ErrResyncNeeded)
	}
	m.lastSeq = c.Seq
	m.stats.LastSeq = c.Seq
	lk, ek, skip, err := m.key(c)
	if skip {
		m.stats.Skipped++
		return nil
	}
	if err == nil && c.Op != flow.OpAdd && c.Op != flow.OpDel {
		err = fmt.Errorf("op %d: %w", c.Op, ErrInvalidChange)
	}
	if err != nil {
		m.stats.Invalid++
		return fmt.Errorf("change %d: %w", c.Seq, err)
	}
	v := Value{Handle: c.Handle, FIB: c.FIB}.raw()
	switch {
	case c.Kind == flow.KindListener && c.Op == flow.OpAdd:
		err = m.maps.putListener(lk, v)
	case c.Kind == flow.KindListener:
		err = m.maps.delListener(lk)
	case c.Op == flow.OpAdd:
		err = m.maps.putSession(ek, v)
	default:
		err = m.maps.delSession(ek)
	}
	if errors.Is(err, ErrNotFound) {
		m.stats.DelMissing++
		err = nil
	}
	if err != nil && c.Op == flow.OpAdd {
		m.refused[c.Handle] = struct{}{}
	} else {
		delete(m.refused, c.Handle)
	}
	if err != nil {
		m.stats.Failed++
		return fmt.Errorf("change %d: %w", c.Seq, err)
	}
	m.stats.Applied++
	return nil
}

// Refused reports whether the map refused the entry of listener or
// session h (it was full) and has not taken it since: its packets go to
// the kernel.
func (m *Mirror) Refused(h flow.Handle) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.refused[h]
	return ok
}

// want builds the maps' intended content from a snapshot.
func (m *Mirror) want(changes []flow.Change) (map[xsessionXsLstKey]xsessionXsValue, map[xsessionXsEstKey]xsessionXsValue, int) {
	lw := make(map[xsessionXsLstKey]xsessionXsValue)
	ew := make(map[xsessionXsEstKey]xsessionXsValue)
	invalid := 0
	for i := range changes {
		c := &changes[i]
		lk, ek, skip, err := m.key(c)
		if skip {
			continue
		}
		if err != nil || c.Op != flow.OpAdd {
			invalid++
			continue
		}
		v := Value{Handle: c.Handle, FIB: c.FIB}.raw()
		if c.Kind == flow.KindListener {
			lw[lk] = v
		} else {
			ew[ek] = v
		}
	}
	return lw, ew, invalid
}

// Resync makes the maps equal to a fresh snapshot of the source: it deletes
// what the snapshot lacks, writes what differs, and continues the feed after
// the snapshot's sequence number.
func (m *Mirror) Resync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	seq, changes := m.src.Snapshot()
	lw, ew, invalid := m.want(changes)
	m.stats.Invalid += uint64(invalid)
	lh, err := m.maps.dumpListeners()
	if err != nil {
		return fmt.Errorf("resync: %w", err)
	}
	eh, err := m.maps.dumpSessions()
	if err != nil {
		return fmt.Errorf("resync: %w", err)
	}
	var errs []error
	for k := range lh {
		if _, ok := lw[k]; !ok {
			if err := m.maps.delListener(k); err != nil && !errors.Is(err, ErrNotFound) {
				errs = append(errs, err)
			}
		}
	}
	for k := range eh {
		if _, ok := ew[k]; !ok {
			if err := m.maps.delSession(k); err != nil && !errors.Is(err, ErrNotFound) {
				errs = append(errs, err)
			}
		}
	}
	clear(m.refused)
	for k, v := range lw {
		if have, ok := lh[k]; !ok || have != v {
			if err := m.maps.putListener(k, v); err != nil {
				errs = append(errs, err)
				m.refused[valueFrom(v).Handle] = struct{}{}
			}
		}
	}
	for k, v := range ew {
		if have, ok := eh[k]; !ok || have != v {
			if err := m.maps.putSession(k, v); err != nil {
				errs = append(errs, err)
				m.refused[valueFrom(v).Handle] = struct{}{}
			}
		}
	}
	m.stats.Resyncs++
	m.lastSeq = seq
	m.stats.LastSeq = seq
	m.needResync = false
	if len(errs) > 0 {
		return fmt.Errorf("resync: %w", errors.Join(errs...))
	}
	return nil
}

// Check compares the source's snapshot with the maps and counts what
// differs. When the snapshot is not at the sequence number the mirror has
// applied (changes are in flight), it compares nothing and returns
// ErrNotComparable.
func (m *Mirror) Check() (Divergence, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seq, changes := m.src.Snapshot()
	if seq != m.lastSeq || m.needResync {
		m.stats.NotCompared++
		return Divergence{}, fmt.Errorf("check: snapshot at %d, maps at %d: %w", seq, m.lastSeq, ErrNotComparable)
	}
	lw, ew, _ := m.want(changes)
	lh, err := m.maps.dumpListeners()
	if err != nil {
		return Divergence{}, fmt.Errorf("check: %w", err)
	}
	eh, err := m.maps.dumpSessions()
	if err != nil {
		return Divergence{}, fmt.Errorf("check: %w", err)
	}
	var d Divergence
	for k, v := range lw {
		if have, ok := lh[k]; !ok {
			d.Missing++
		} else if have != v {
			d.Mismatched++
		}
	}
	for k := range lh {
		if _, ok := lw[k]; !ok {
			d.Extra++
		}
	}
	for k, v := range ew {
		if have, ok := eh[k]; !ok {
			d.Missing++
		} else if have != v {
			d.Mismatched++
		}
	}
	for k := range eh {
		if _, ok := ew[k]; !ok {
			d.Extra++
		}
	}
	m.stats.Checks++
	if !d.IsZero() {
		m.stats.Divergent++
		m.stats.Missing += uint64(d.Missing)
		m.stats.Extra += uint64(d.Extra)
		m.stats.Mismatched += uint64(d.Mismatched)
	}
	return d, nil
}

// Run applies changes from feed until ctx ends or feed is closed. It
// resyncs when a change is out of order, and every checkEvery (0: never)
// compares source and maps, resyncing when they differ. It returns nil
// when feed is closed, ctx.Err() when ctx ends, and a resync's error.
func (m *Mirror) Run(ctx context.Context, feed <-chan flow.Change, checkEvery time.Duration) error {
	var tick <-chan time.Time
	if checkEvery > 0 {
		t := time.NewTicker(checkEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case c, ok := <-feed:
			if !ok {
				return nil
			}
			if err := m.Apply(c); errors.Is(err, ErrResyncNeeded) {
				if err := m.Resync(); err != nil {
					return err
				}
				// Ignored when the snapshot covered it.
				m.Apply(c)
			}
		case <-tick:
			if d, err := m.Check(); err == nil && !d.IsZero() {
				if err := m.Resync(); err != nil {
					return err
				}
			}
		}
	}
}
