package flow

import (
	"fmt"
	"net/netip"
)

// Transport is a transport protocol, numbered as IP protocol numbers.
type Transport uint8

// Transports known to the session layer.
const (
	TransportTCP  Transport = 6
	TransportUDP  Transport = 17
	TransportSCTP Transport = 132
)

func (t Transport) String() string {
	switch t {
	case TransportTCP:
		return "tcp"
	case TransportUDP:
		return "udp"
	case TransportSCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto(%d)", uint8(t))
}

// Scope says in which tables an app's listeners live and which tables its
// connects may use. Neither flag set means ScopeGlobal.
type Scope uint8

// Scope flags.
const (
	ScopeGlobal Scope = 1 << iota // the FIB's table: reachable from the wire
	ScopeLocal                    // the namespace's table: reachable by apps of the namespace only
)

func (s Scope) String() string {
	switch s {
	case ScopeGlobal:
		return "global"
	case ScopeLocal:
		return "local"
	case ScopeGlobal | ScopeLocal:
		return "local+global"
	}
	return fmt.Sprintf("scope(%#x)", uint8(s))
}

// FIBID names one FIB: a Linux network namespace's routing view for one
// address family, as nsbind identifies it.
type FIBID uint32

// Handle is a 64-bit session or listener handle. The upper 32 bits name the
// owning worker, the lower 32 bits the index in that worker's pool. A handle
// with the LocalHandleBit set names a listener of a namespace's local table;
// the rest of its bits encode that listener's endpoint (see the handle
// functions in this package).
type Handle uint64

// LocalHandleBit marks a handle that names a local-table listener.
const LocalHandleBit Handle = 1 << 63

// InvalidHandle is never a valid handle.
const InvalidHandle Handle = ^Handle(0)

// Pseudo-workers in handles of entries no datapath worker owns.
const (
	ListenerWorker   uint32 = 0x7ffffffd // global listeners
	CutThroughWorker uint32 = 0x7ffffffe // cut-through sessions (no packets, no shard)
	HalfOpenWorker   uint32 = 0x7fffffff // connects in progress, visible to all workers
)

// MakeHandle builds a session handle from its worker and index.
func MakeHandle(worker, index uint32) Handle {
	return Handle(uint64(worker&0x7fffffff)<<32 | uint64(index))
}

// Worker returns the worker that owns the session named by h.
func (h Handle) Worker() uint32 { return uint32(h>>32) & 0x7fffffff }

// Index returns the index of the session in its worker's pool.
func (h Handle) Index() uint32 { return uint32(h) }

// IsLocal reports whether h names a local-table listener.
func (h Handle) IsLocal() bool { return h&LocalHandleBit != 0 && h != InvalidHandle }

// Endpoint is one end of a session: transport, address and port, plus the
// interface and FIB filled in from the app's namespace.
type Endpoint struct {
	Transport Transport
	Addr      netip.Addr // IPv4 or IPv6; the unspecified address for a wildcard bind
	Port      uint16     // host byte order
	IfIndex   int        // the namespace's interface; 0 when not yet filled in
	FIB       FIBID      // the FIB of the namespace for Addr's family
}

// Is4 reports whether the endpoint is IPv4.
func (e Endpoint) Is4() bool { return e.Addr.Is4() }

// IsZero reports whether the endpoint's address is unspecified
// (0.0.0.0, ::, or no address at all).
func (e Endpoint) IsZero() bool { return !e.Addr.IsValid() || e.Addr.IsUnspecified() }

// Family returns the key family of e's address (IPv4 when e has none).
func (e Endpoint) Family() uint8 {
	if e.Addr.Is6() && !e.Addr.Is4In6() {
		return Family6
	}
	return Family4
}

// Normalized returns e with an IPv4-mapped address unmapped and a missing
// address replaced by the unspecified address of fam.
func (e Endpoint) Normalized(fam uint8) Endpoint {
	if !e.Addr.IsValid() {
		if fam == Family6 {
			e.Addr = netip.IPv6Unspecified()
		} else {
			e.Addr = netip.IPv4Unspecified()
		}
	}
	e.Addr = e.Addr.Unmap()
	return e
}

// Family of an address in keys: 4 or 6.
const (
	Family4 uint8 = 4
	Family6 uint8 = 6
)

// FiveTuple is the fixed-size, comparable key of an established session and,
// with Remote zero, of a listener. Addresses are stored in 16 bytes; IPv4
// addresses occupy the first 4 bytes and the rest is zero. Ports are in host
// byte order.
type FiveTuple struct {
	Local      [16]byte
	Remote     [16]byte
	LocalPort  uint16
	RemotePort uint16
	Proto      Transport
	Family     uint8 // Family4 or Family6
}

// AddrBytes stores a in the 16-byte key form used by FiveTuple.
func AddrBytes(a netip.Addr) (b [16]byte) {
	if a.Is4() || a.Is4In6() {
		v4 := a.Unmap().As4()
		copy(b[:4], v4[:])
		return b
	}
	if a.IsValid() {
		return a.As16()
	}
	return b
}

// AddrFrom reads an address stored by AddrBytes for the given family.
func AddrFrom(b [16]byte, family uint8) netip.Addr {
	if family == Family4 {
		return netip.AddrFrom4([4]byte{b[0], b[1], b[2], b[3]})
	}
	return netip.AddrFrom16(b)
}

// ChangeOp is what a change does to a table entry.
type ChangeOp uint8

// Change operations.
const (
	OpAdd ChangeOp = iota + 1
	OpDel
)

// ChangeKind says which table a change is about.
type ChangeKind uint8

// Change kinds.
const (
	KindListener    ChangeKind = iota + 1 // a global-table listener; Tuple.Remote and RemotePort are zero
	KindEstablished                       // an established (or half-open) session's 5-tuple
)

// Change is one entry of the ordered change feed of the global tables, as
// the loader mirrors it into the XDP program's maps. Entries are keyed by
// Kind, FIB and Tuple: an Add of a key already present replaces its entry
// (a half-open session becoming established changes only the handle, so
// the maps never lack the 5-tuple meanwhile); a Del removes the key's
// entry.
type Change struct {
	Seq     uint64 // strictly increasing per feed
	Op      ChangeOp
	Kind    ChangeKind
	IfIndex int   // the interface of the namespace the entry belongs to
	FIB     FIBID // the FIB of the entry
	Tuple   FiveTuple
	Handle  Handle // the listener or session handle
}

// LocalListenerHandle builds the handle of a local-table listener on the
// zero-address endpoint of transport t, family fam and port (seed:
// session_lookup_local_listener_make_handle). The handle has LocalHandleBit
// set and encodes the endpoint in its low bits, so it parses back with
// ParseLocalListenerHandle.
func LocalListenerHandle(t Transport, fam uint8, port uint16) Handle {
	return LocalHandleBit | Handle(fam)<<24 | Handle(t)<<16 | Handle(port)
}

// ParseLocalListenerHandle returns the zero-address endpoint a local-table
// listener handle names (seed: session_lookup_local_listener_parse_handle).
func ParseLocalListenerHandle(h Handle) (Endpoint, error) {
	if !h.IsLocal() || h&^(LocalHandleBit|0xffffffff) != 0 {
		return Endpoint{}, fmt.Errorf("handle %#x is not a local listener handle: %w", uint64(h), ErrInvalidValue)
	}
	fam := uint8(h >> 24)
	t := Transport(h >> 16)
	e := Endpoint{Transport: t, Port: uint16(h)}
	switch fam {
	case Family4:
		e.Addr = netip.IPv4Unspecified()
	case Family6:
		e.Addr = netip.IPv6Unspecified()
	default:
		return Endpoint{}, fmt.Errorf("local listener handle %#x: bad family %d: %w", uint64(h), fam, ErrInvalidValue)
	}
	if t != TransportTCP && t != TransportUDP && t != TransportSCTP {
		return Endpoint{}, fmt.Errorf("local listener handle %#x: bad transport %d: %w", uint64(h), uint8(t), ErrInvalidValue)
	}
	return e, nil
}
