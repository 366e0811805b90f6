package nsbind

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
)

// ErrFIBWatched: Views already holds a View of that FIB.
var ErrFIBWatched = errors.New("FIB already watched")

// Views is a set of Views, one per watched namespace, that answers the
// session layer for all of them at once: the daemon's namespaces may live
// in several Linux network namespaces while the session layer has one view
// of the kernel. Reads are lock-free and allocation-free; Add and Remove
// are serialised. The zero value is an empty set.
type Views struct {
	mu  sync.Mutex // serialises Add and Remove
	set atomic.Pointer[map[FIBID]*View]
}

func (vs *Views) load() map[FIBID]*View {
	if m := vs.set.Load(); m != nil {
		return *m
	}
	return nil
}

// Add puts v in the set. It fails with ErrFIBWatched when a View of the
// same FIB is there already. The set does not take ownership of v.
func (vs *Views) Add(v *View) error {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	old := vs.load()
	if _, ok := old[v.fib]; ok {
		return fmt.Errorf("add view of %s: %w", v.desc, ErrFIBWatched)
	}
	m := make(map[FIBID]*View, len(old)+1)
	for k, x := range old {
		m[k] = x
	}
	m[v.fib] = v
	vs.set.Store(&m)
	return nil
}

// Remove takes the View of fib out of the set and returns it (nil when
// there was none) for the caller to close.
func (vs *Views) Remove(fib FIBID) *View {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	old := vs.load()
	v, ok := old[fib]
	if !ok {
		return nil
	}
	m := make(map[FIBID]*View, len(old))
	for k, x := range old {
		if k != fib {
			m[k] = x
		}
	}
	vs.set.Store(&m)
	return v
}

// Get returns the View of fib, or nil.
func (vs *Views) Get(fib FIBID) *View { return vs.load()[fib] }

// IsLocal reports whether a is an address of the namespace of fib; false
// when no View of fib is in the set.
func (vs *Views) IsLocal(fib FIBID, a netip.Addr) bool {
	v := vs.load()[fib]
	return v != nil && v.IsLocal(fib, a)
}

// HasAddressIn reports whether interface ifindex of the namespace of fib
// has address a.
func (vs *Views) HasAddressIn(fib FIBID, ifindex int, a netip.Addr) bool {
	v := vs.load()[fib]
	return v != nil && v.HasAddress(ifindex, a)
}

// HasAddress reports whether interface ifindex of any watched namespace
// has address a. Interface indexes are per namespace, so this alone does
// not say which namespace; the session layer pairs it with IsLocal on the
// namespace's FIB, which does. Where the pair could still mislead (the same
// address on interfaces with the same index in two namespaces, one of them
// not the endpoint's), use HasAddressIn.
func (vs *Views) HasAddress(ifindex int, a netip.Addr) bool {
	for _, v := range vs.load() {
		if v.HasAddress(ifindex, a) {
			return true
		}
	}
	return false
}
