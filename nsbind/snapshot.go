package nsbind

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Snapshot is one immutable state of a View: the namespace's interfaces
// and addresses at one generation. All methods are safe for concurrent use
// and cheap; HasAddress and IsLocal do not allocate.
type Snapshot struct {
	fib   FIBID
	gen   uint64
	links map[int]*Interface // by ifindex; Addrs filled in
	names map[string]int     // interface name → ifindex
	owned map[ifAddr]netip.Prefix
	local map[netip.Addr]struct{}
	next  chan struct{} // closed when a newer snapshot replaces this one
}

type ifAddr struct {
	ifindex int
	addr    netip.Addr
}

// FIB returns the FIB id of the snapshot's namespace.
func (s *Snapshot) FIB() FIBID { return s.fib }

// Gen returns the snapshot's generation: 1 for the first, one more for
// each later one.
func (s *Snapshot) Gen() uint64 { return s.gen }

// HasAddress reports whether a is an address of interface ifindex. An
// IPv4-mapped IPv6 address counts as the IPv4 address; a zone is ignored.
func (s *Snapshot) HasAddress(ifindex int, a netip.Addr) bool {
	_, ok := s.owned[ifAddr{ifindex, plain(a)}]
	return ok
}

// IsLocal reports whether a is an address of the namespace of fib: an
// address of any of its interfaces, or a loopback address (127.0.0.0/8,
// ::1). A fib other than the snapshot's gives false.
func (s *Snapshot) IsLocal(fib FIBID, a netip.Addr) bool {
	if fib != s.fib || fib == 0 {
		return false
	}
	a = plain(a)
	if a.IsLoopback() {
		return true
	}
	_, ok := s.local[a]
	return ok
}

// plain returns a unmapped and without zone.
func plain(a netip.Addr) netip.Addr {
	if a.Is4In6() {
		return a.Unmap()
	}
	if a.Zone() != "" {
		return a.WithZone("")
	}
	return a
}

// Interface returns a copy of interface ifindex.
func (s *Snapshot) Interface(ifindex int) (Interface, bool) {
	l, ok := s.links[ifindex]
	if !ok {
		return Interface{}, false
	}
	return l.clone(), true
}

// InterfaceByName returns a copy of the interface called name.
func (s *Snapshot) InterfaceByName(name string) (Interface, bool) {
	i, ok := s.names[name]
	if !ok {
		return Interface{}, false
	}
	return s.Interface(i)
}

// Interfaces returns copies of all interfaces in ifindex order.
func (s *Snapshot) Interfaces() []Interface {
	out := make([]Interface, 0, len(s.links))
	for _, i := range slices.Sorted(maps.Keys(s.links)) {
		out = append(out, s.links[i].clone())
	}
	return out
}

// viewState is the mutable state a View's goroutine keeps and builds
// snapshots from. Only that goroutine touches it.
type viewState struct {
	links map[int]Interface               // without Addrs
	addrs map[int]map[netip.Prefix]uint32 // ifindex → address/prefix → IFA flags
}

func newViewState() *viewState {
	return &viewState{links: map[int]Interface{}, addrs: map[int]map[netip.Prefix]uint32{}}
}

// applyLink applies one link message. Messages of families other than
// AF_UNSPEC (bridge port notifications) say nothing about the link itself
// and are ignored.
func (st *viewState) applyLink(u netlink.LinkUpdate) {
	if u.Link == nil || u.IfInfomsg.Family != unix.AF_UNSPEC {
		return
	}
	idx := u.Link.Attrs().Index
	if idx <= 0 {
		return
	}
	switch u.Header.Type {
	case unix.RTM_NEWLINK:
		st.links[idx] = interfaceOf(u.Link)
	case unix.RTM_DELLINK:
		delete(st.links, idx)
		delete(st.addrs, idx)
	}
}

// applyAddr applies one address message.
func (st *viewState) applyAddr(u netlink.AddrUpdate) {
	p, ok := prefixOf(&u.LinkAddress)
	if !ok || u.LinkIndex <= 0 {
		return
	}
	st.setAddr(u.LinkIndex, p, uint32(u.Flags), u.NewAddr)
}

func (st *viewState) setAddr(ifindex int, p netip.Prefix, flags uint32, present bool) {
	m := st.addrs[ifindex]
	if !present {
		delete(m, p)
		if len(m) == 0 {
			delete(st.addrs, ifindex)
		}
		return
	}
	if m == nil {
		m = map[netip.Prefix]uint32{}
		st.addrs[ifindex] = m
	}
	m[p] = flags
}

// snapshot builds an immutable snapshot of st. Only usable addresses are
// in it (see usableAddr). Addresses of an ifindex whose link message has
// not arrived yet count for HasAddress and IsLocal already.
func (st *viewState) snapshot(fib FIBID, gen uint64) *Snapshot {
	s := &Snapshot{
		fib:   fib,
		gen:   gen,
		links: make(map[int]*Interface, len(st.links)),
		names: make(map[string]int, len(st.links)),
		owned: map[ifAddr]netip.Prefix{},
		local: map[netip.Addr]struct{}{},
		next:  make(chan struct{}),
	}
	for idx, l := range st.links {
		c := l.clone()
		s.links[idx] = &c
		s.names[c.Name] = idx
	}
	for idx, m := range st.addrs {
		for p, flags := range m {
			if !usableAddr(flags) {
				continue
			}
			k := ifAddr{idx, p.Addr()}
			if old, dup := s.owned[k]; !dup || p.Bits() > old.Bits() {
				s.owned[k] = p
			}
			s.local[p.Addr()] = struct{}{}
			if l := s.links[idx]; l != nil {
				l.Addrs = append(l.Addrs, p)
			}
		}
	}
	for _, l := range s.links {
		sortPrefixes(l.Addrs)
	}
	return s
}

// EventKind says what an Event reports.
type EventKind uint8

// Event kinds.
const (
	EventLinkAdded   EventKind = iota + 1 // a new interface
	EventLinkRemoved                      // an interface left (deleted or moved away)
	EventLinkUp                           // an interface became up and running
	EventLinkDown                         // an interface stopped being up and running
	EventAddrAdded                        // an interface gained an address
	EventAddrRemoved                      // an interface lost an address
	EventResync                           // the view re-read the namespace after losing its subscription; the events that follow are the differences it found
	EventLinkChanged                      // an interface's hardware address or MTU changed
)

func (k EventKind) String() string {
	switch k {
	case EventLinkAdded:
		return "link-added"
	case EventLinkRemoved:
		return "link-removed"
	case EventLinkUp:
		return "link-up"
	case EventLinkDown:
		return "link-down"
	case EventAddrAdded:
		return "addr-added"
	case EventAddrRemoved:
		return "addr-removed"
	case EventResync:
		return "resync"
	case EventLinkChanged:
		return "link-changed"
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Event is one change a View saw. Gen is the generation of the first
// snapshot that reflects it.
type Event struct {
	Kind    EventKind
	FIB     FIBID
	Gen     uint64
	IfIndex int
	Name    string       // the interface's name, when known
	Addr    netip.Prefix // for address events
}

func (e Event) String() string {
	switch e.Kind {
	case EventAddrAdded, EventAddrRemoved:
		return fmt.Sprintf("fib %d gen %d: %s %s on %s (%d)", e.FIB, e.Gen, e.Kind, e.Addr, e.Name, e.IfIndex)
	case EventResync:
		return fmt.Sprintf("fib %d gen %d: %s", e.FIB, e.Gen, e.Kind)
	}
	return fmt.Sprintf("fib %d gen %d: %s %s (%d)", e.FIB, e.Gen, e.Kind, e.Name, e.IfIndex)
}

// diff lists the events that lead from old (nil for none) to cur, links
// added first, then addresses added and removed, then link state changes,
// then links removed; each group in ifindex and address order.
func diff(old, cur *Snapshot) []Event {
	if old == nil {
		old = &Snapshot{}
	}
	var added, addrs, state, removed []Event
	name := func(idx int) string {
		if l := cur.links[idx]; l != nil {
			return l.Name
		}
		if l := old.links[idx]; l != nil {
			return l.Name
		}
		return ""
	}
	for idx, l := range cur.links {
		o, ok := old.links[idx]
		switch {
		case !ok:
			added = append(added, Event{Kind: EventLinkAdded, IfIndex: idx, Name: l.Name})
		case o.Usable() && !l.Usable():
			state = append(state, Event{Kind: EventLinkDown, IfIndex: idx, Name: l.Name})
		case !o.Usable() && l.Usable():
			state = append(state, Event{Kind: EventLinkUp, IfIndex: idx, Name: l.Name})
		case !bytes.Equal(o.MAC, l.MAC) || o.MTU != l.MTU:
			state = append(state, Event{Kind: EventLinkChanged, IfIndex: idx, Name: l.Name})
		}
	}
	for idx, l := range old.links {
		if _, ok := cur.links[idx]; !ok {
			removed = append(removed, Event{Kind: EventLinkRemoved, IfIndex: idx, Name: l.Name})
		}
	}
	for k, p := range cur.owned {
		if _, ok := old.owned[k]; !ok {
			addrs = append(addrs, Event{Kind: EventAddrAdded, IfIndex: k.ifindex, Name: name(k.ifindex), Addr: p})
		}
	}
	for k, p := range old.owned {
		if _, ok := cur.owned[k]; !ok {
			addrs = append(addrs, Event{Kind: EventAddrRemoved, IfIndex: k.ifindex, Name: name(k.ifindex), Addr: p})
		}
	}
	byIndex := func(x, y Event) int {
		return cmp.Or(cmp.Compare(x.IfIndex, y.IfIndex), cmp.Compare(x.Kind, y.Kind), x.Addr.Addr().Compare(y.Addr.Addr()))
	}
	var out []Event
	for _, g := range [][]Event{added, addrs, state, removed} {
		slices.SortFunc(g, byIndex)
		out = append(out, g...)
	}
	for i := range out {
		out[i].FIB, out[i].Gen = cur.fib, cur.gen
	}
	return out
}
