package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/xsessiond/xsessiond/flow"
)

// Key conventions shared with bpf/xsession.h:
//
//   - addresses take 16 bytes, an IPv4 address the first 4 with the rest
//     zero, exactly as flow.FiveTuple stores them;
//   - ports are stored in network byte order (as on the wire, so the program
//     copies them from the packet without swapping); the typed API takes and
//     returns host-order ports as sessions does;
//   - family is 4 or 6, proto the IP protocol number (UDP or TCP);
//   - ifindex is the receiving interface (the packet's ingress_ifindex), part
//     of both the listener and the established key.

// Value is what the listener and established maps hold for a key: the
// handle of the listener or session, its FIB, and flags (none defined yet;
// zero). The program only tests for presence; the value is for humans
// (bpftool map dump) and for the mirror's comparison.
type Value struct {
	Handle flow.Handle
	FIB    flow.FIBID
	Flags  uint32
}

func (v Value) raw() xsessionXsValue {
	return xsessionXsValue{Handle: uint64(v.Handle), Fib: uint32(v.FIB), Flags: v.Flags}
}

func valueFrom(r xsessionXsValue) Value {
	return Value{Handle: flow.Handle(r.Handle), FIB: flow.FIBID(r.Fib), Flags: r.Flags}
}

// netPort turns a host-order port into the value whose in-memory bytes are
// the port in network byte order.
func netPort(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// hostPort undoes netPort.
func hostPort(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

func checkAddr(fam uint8, a *[16]byte) error {
	switch fam {
	case flow.Family4:
		for _, b := range a[4:] {
			if b != 0 {
				return fmt.Errorf("ipv4 address with bytes beyond the fourth: %w", ErrInvalidKey)
			}
		}
	case flow.Family6:
	default:
		return fmt.Errorf("family %d: %w", fam, ErrInvalidKey)
	}
	return nil
}

func checkTuple(ifindex int, t *flow.FiveTuple, established bool) error {
	if ifindex <= 0 || ifindex > math.MaxUint32 {
		return fmt.Errorf("ifindex %d: %w", ifindex, ErrInvalidKey)
	}
	if t.Proto != flow.TransportUDP && t.Proto != flow.TransportTCP {
		return fmt.Errorf("transport %v: %w", t.Proto, ErrInvalidKey)
	}
	if err := checkAddr(t.Family, &t.Local); err != nil {
		return err
	}
	if established {
		return checkAddr(t.Family, &t.Remote)
	}
	return nil
}

func lstKey(ifindex int, t *flow.FiveTuple) (xsessionXsLstKey, error) {
	if err := checkTuple(ifindex, t, false); err != nil {
		return xsessionXsLstKey{}, err
	}
	return xsessionXsLstKey{
		Ifindex: uint32(ifindex),
		Addr:    t.Local,
		Port:    netPort(t.LocalPort),
		Proto:   uint8(t.Proto),
		Family:  t.Family,
	}, nil
}

func (k xsessionXsLstKey) tuple() (int, flow.FiveTuple) {
	return int(k.Ifindex), flow.FiveTuple{
		Local:     k.Addr,
		LocalPort: hostPort(k.Port),
		Proto:     flow.Transport(k.Proto),
		Family:    k.Family,
	}
}

func estKey(ifindex int, t *flow.FiveTuple) (xsessionXsEstKey, error) {
	if err := checkTuple(ifindex, t, true); err != nil {
		return xsessionXsEstKey{}, err
	}
	return xsessionXsEstKey{
		Local:      t.Local,
		Remote:     t.Remote,
		LocalPort:  netPort(t.LocalPort),
		RemotePort: netPort(t.RemotePort),
		Proto:      uint8(t.Proto),
		Family:     t.Family,
		Ifindex:    uint32(ifindex),
	}, nil
}

func (k xsessionXsEstKey) tuple() (int, flow.FiveTuple) {
	return int(k.Ifindex), flow.FiveTuple{
		Local:      k.Local,
		Remote:     k.Remote,
		LocalPort:  hostPort(k.LocalPort),
		RemotePort: hostPort(k.RemotePort),
		Proto:      flow.Transport(k.Proto),
		Family:     k.Family,
	}
}

// ListenerEntry is one entry of the listener map. Tuple.Remote and
// Tuple.RemotePort are zero.
type ListenerEntry struct {
	IfIndex int
	Tuple   flow.FiveTuple
	Value   Value
}

// EstablishedEntry is one entry of the established map.
type EstablishedEntry struct {
	IfIndex int
	Tuple   flow.FiveTuple
	Value   Value
}

// ListenerMap is the program's listener map, keyed by (ifindex, transport,
// family, local address, local port) taken from a flow.FiveTuple whose
// remote half is ignored. A zero local address is a wildcard listener. Safe
// for concurrent use.
type ListenerMap struct {
	m     *ebpf.Map
	ports *portIndex
}

// Put adds or replaces the listener for (ifindex, t).
func (l *ListenerMap) Put(ifindex int, t flow.FiveTuple, v Value) error {
	k, err := lstKey(ifindex, &t)
	if err != nil {
		return err
	}
	return l.put(k, v.raw())
}

func (l *ListenerMap) put(k xsessionXsLstKey, v xsessionXsValue) error {
	err := l.ports.put(lstPortSlot(&k), func(flags ebpf.MapUpdateFlags) error { return l.m.Update(&k, &v, flags) })
	if err != nil {
		return fmt.Errorf("put listener: %w", err)
	}
	return nil
}

func lstPortSlot(k *xsessionXsLstKey) portSlot {
	kind := portExact
	if k.Addr == ([16]byte{}) {
		kind = portWild
	}
	return makePortSlot(flow.Transport(k.Proto), hostPort(k.Port), kind, k.Family)
}

// Delete removes the listener for (ifindex, t). It returns ErrNotFound when
// there is none.
func (l *ListenerMap) Delete(ifindex int, t flow.FiveTuple) error {
	k, err := lstKey(ifindex, &t)
	if err != nil {
		return err
	}
	return l.del(k)
}

func (l *ListenerMap) del(k xsessionXsLstKey) error {
	if err := l.ports.del(lstPortSlot(&k), func() error { return l.m.Delete(&k) }); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete listener: %w", ErrNotFound)
		}
		return fmt.Errorf("delete listener: %w", err)
	}
	return nil
}

// Lookup returns the value stored for (ifindex, t), or ErrNotFound.
func (l *ListenerMap) Lookup(ifindex int, t flow.FiveTuple) (Value, error) {
	k, err := lstKey(ifindex, &t)
	if err != nil {
		return Value{}, err
	}
	var v xsessionXsValue
	if err := l.m.Lookup(&k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Value{}, fmt.Errorf("lookup listener: %w", ErrNotFound)
		}
		return Value{}, fmt.Errorf("lookup listener: %w", err)
	}
	return valueFrom(v), nil
}

// Entries returns every entry of the map.
func (l *ListenerMap) Entries() ([]ListenerEntry, error) {
	raw, err := l.dump()
	if err != nil {
		return nil, err
	}
	out := make([]ListenerEntry, 0, len(raw))
	for k, v := range raw {
		ifi, t := k.tuple()
		out = append(out, ListenerEntry{IfIndex: ifi, Tuple: t, Value: valueFrom(v)})
	}
	return out, nil
}

func (l *ListenerMap) dump() (map[xsessionXsLstKey]xsessionXsValue, error) {
	out, err := dumpMap[xsessionXsLstKey](l.m)
	if err != nil {
		return nil, fmt.Errorf("dump listeners: %w", err)
	}
	return out, nil
}

// dumpBatch is how many entries dumpMap asks for in one system call.
const dumpBatch = 1024

// dumpMap reads every entry of a hash map, dumpBatch entries per
// BPF_MAP_LOOKUP_BATCH: the mirror's periodic check reads the whole
// established map, and an iteration took two system calls per entry (the
// next key, then its value), 130,000 for a full map. Where the batch
// lookup fails (a kernel without it for the map's type, or a hash bucket
// larger than a batch), it iterates instead. As with an iteration, an
// entry added or deleted meanwhile may be missed or seen; the Mirror,
// the maps' only writer, dumps them under its lock.
func dumpMap[K comparable](m *ebpf.Map) (map[K]xsessionXsValue, error) {
	if out, err := dumpBatched[K](m); err == nil {
		return out, nil
	}
	out := make(map[K]xsessionXsValue)
	var k K
	var v xsessionXsValue
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// dumpBatched is dumpMap's batched read, failing where the kernel does.
func dumpBatched[K comparable](m *ebpf.Map) (map[K]xsessionXsValue, error) {
	out := make(map[K]xsessionXsValue)
	keys := make([]K, dumpBatch)
	vals := make([]xsessionXsValue, dumpBatch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			out[keys[i]] = vals[i]
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// EstablishedMap is the program's established-session map, keyed by the
// receiving ifindex and the session's flow.FiveTuple as the local host
// sees it (Local is the packet's destination). Safe for concurrent use.
type EstablishedMap struct {
	m     *ebpf.Map
	ports *portIndex
}

// Put adds or replaces the session (ifindex, t).
func (e *EstablishedMap) Put(ifindex int, t flow.FiveTuple, v Value) error {
	k, err := estKey(ifindex, &t)
	if err != nil {
		return err
	}
	return e.put(k, v.raw())
}

func (e *EstablishedMap) put(k xsessionXsEstKey, v xsessionXsValue) error {
	err := e.ports.put(estPortSlot(&k), func(flags ebpf.MapUpdateFlags) error { return e.m.Update(&k, &v, flags) })
	if err != nil {
		return fmt.Errorf("put session: %w", err)
	}
	return nil
}

func estPortSlot(k *xsessionXsEstKey) portSlot {
	return makePortSlot(flow.Transport(k.Proto), hostPort(k.LocalPort), portEst, k.Family)
}

// Delete removes the session (ifindex, t). It returns ErrNotFound when there
// is none.
func (e *EstablishedMap) Delete(ifindex int, t flow.FiveTuple) error {
	k, err := estKey(ifindex, &t)
	if err != nil {
		return err
	}
	return e.del(k)
}

func (e *EstablishedMap) del(k xsessionXsEstKey) error {
	if err := e.ports.del(estPortSlot(&k), func() error { return e.m.Delete(&k) }); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete session: %w", ErrNotFound)
		}
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// Lookup returns the value stored for (ifindex, t), or ErrNotFound.
func (e *EstablishedMap) Lookup(ifindex int, t flow.FiveTuple) (Value, error) {
	k, err := estKey(ifindex, &t)
	if err != nil {
		return Value{}, err
	}
	var v xsessionXsValue
	if err := e.m.Lookup(&k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Value{}, fmt.Errorf("lookup session: %w", ErrNotFound)
		}
		return Value{}, fmt.Errorf("lookup session: %w", err)
	}
	return valueFrom(v), nil
}

// Entries returns every entry of the map.
func (e *EstablishedMap) Entries() ([]EstablishedEntry, error) {
	raw, err := e.dump()
	if err != nil {
		return nil, err
	}
	out := make([]EstablishedEntry, 0, len(raw))
	for k, v := range raw {
		ifi, t := k.tuple()
		out = append(out, EstablishedEntry{IfIndex: ifi, Tuple: t, Value: valueFrom(v)})
	}
	return out, nil
}

func (e *EstablishedMap) dump() (map[xsessionXsEstKey]xsessionXsValue, error) {
	out, err := dumpMap[xsessionXsEstKey](e.m)
	if err != nil {
		return nil, fmt.Errorf("dump sessions: %w", err)
	}
	return out, nil
}

// XSKMap is the program's XSKMAP: slot q holds the AF_XDP socket bound to rx
// queue q. A queue without a socket passes its hits to the kernel. Safe for
// concurrent use.
type XSKMap struct{ m *ebpf.Map }

// Queues returns the number of slots.
func (x *XSKMap) Queues() int { return int(x.m.MaxEntries()) }

// Set puts the AF_XDP socket fd in the slot of queue. The map takes its own
// reference; the caller keeps fd.
func (x *XSKMap) Set(queue int, fd int) error {
	if queue < 0 || queue >= x.Queues() {
		return fmt.Errorf("queue %d of %d: %w", queue, x.Queues(), ErrInvalidKey)
	}
	if fd < 0 || fd > math.MaxInt32 {
		return fmt.Errorf("fd %d: %w", fd, ErrInvalidKey)
	}
	if err := x.m.Put(uint32(queue), uint32(fd)); err != nil {
		return fmt.Errorf("set xsk of queue %d: %w", queue, err)
	}
	return nil
}

// Delete empties the slot of queue. Emptying an empty slot is not an error
// (the kernel does not report it).
func (x *XSKMap) Delete(queue int) error {
	if queue < 0 || queue >= x.Queues() {
		return fmt.Errorf("queue %d of %d: %w", queue, x.Queues(), ErrInvalidKey)
	}
	if err := x.m.Delete(uint32(queue)); err != nil {
		return fmt.Errorf("delete xsk of queue %d: %w", queue, err)
	}
	return nil
}

// Kinds of entries in the port index, as bit numbers for IPv4; the IPv6
// bit is the next one (XS_PORT_* in bpf/xsession.h).
const (
	portEst   = 0
	portExact = 2
	portWild  = 4
	portBits  = 6
)

// portSlot names one bit of the port index.
type portSlot struct {
	index uint32 // XS_PORT_INDEX(proto, port), the port in network byte order
	bit   uint8
}

func makePortSlot(proto flow.Transport, port uint16, kind int, family uint8) portSlot {
	s := portSlot{index: uint32(netPort(port)), bit: uint8(kind)}
	if proto == flow.TransportTCP {
		s.index |= 1 << 16
	}
	if family == flow.Family6 {
		s.bit++
	}
	return s
}

// portIndex keeps the program's port index in step with the listener and
// established maps: it counts the entries behind each bit, sets a bit
// before the first entry is inserted and clears it after the last one is
// deleted, so that the program never skips a lookup that could hit. Every
// write of the two maps goes through it. Safe for concurrent use.
type portIndex struct {
	m *ebpf.Map

	mu     sync.Mutex // guards counts; held across an entry's write and its bit's
	counts map[uint32]*[portBits]uint32
}

func newPortIndex(m *ebpf.Map) *portIndex {
	return &portIndex{m: m, counts: make(map[uint32]*[portBits]uint32)}
}

// writeLocked stores the bits of index: those with entries, plus extra.
func (p *portIndex) writeLocked(index uint32, c *[portBits]uint32, extra uint32) error {
	bits := extra
	for i, n := range c {
		if n > 0 {
			bits |= 1 << i
		}
	}
	if err := p.m.Put(index, bits); err != nil {
		return fmt.Errorf("update port index: %w", err)
	}
	return nil
}

// put runs update (an insert or replace of the map entry behind s) with
// the index kept.
func (p *portIndex) put(s portSlot, update func(ebpf.MapUpdateFlags) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.counts[s.index]
	if c == nil {
		c = new([portBits]uint32)
		p.counts[s.index] = c
	}
	if c[s.bit] == 0 {
		if err := p.writeLocked(s.index, c, 1<<s.bit); err != nil {
			return err
		}
	}
	err := update(ebpf.UpdateNoExist)
	if err == nil {
		c[s.bit]++
		return nil
	}
	if errors.Is(err, ebpf.ErrKeyExist) {
		return update(ebpf.UpdateExist)
	}
	if c[s.bit] == 0 {
		p.writeLocked(s.index, c, 0)
	}
	return err
}

// del runs remove (a delete of the map entry behind s) with the index kept.
func (p *portIndex) del(s portSlot, remove func() error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := remove(); err != nil {
		return err
	}
	c := p.counts[s.index]
	if c == nil || c[s.bit] == 0 {
		return nil // an entry written around the index: leave the bit set
	}
	c[s.bit]--
	if c[s.bit] == 0 {
		if err := p.writeLocked(s.index, c, 0); err != nil {
			return err
		}
		if *c == ([portBits]uint32{}) {
			delete(p.counts, s.index)
		}
	}
	return nil
}

// LocalMap is the program's locals map: the namespace's own addresses,
// which a packet to a wildcard listener's port must be addressed to for
// the program to steer it (ObjectsOptions.CheckLocal). The others are the
// kernel's: routed through the host, or broadcasts, which the kernel
// hands the port's reservation.
type LocalMap struct {
	mu sync.Mutex // serializes Set
	m  *ebpf.Map
}

// Set makes the map hold addrs and nothing else, writing only what
// changed: what is missing is put before what is gone is deleted, so an
// address in both the old and the new set is never missing. IPv4-mapped addresses count as IPv4. More
// addresses than the map holds: it holds the lowest ones (IPv4 first) and
// Set returns an error wrapping ErrLocalsFull.
func (lm *LocalMap) Set(addrs []netip.Addr) error {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	var list []netip.Addr
	for _, a := range addrs {
		if a.IsValid() {
			list = append(list, a.Unmap().WithZone(""))
		}
	}
	slices.SortFunc(list, netip.Addr.Compare)
	list = slices.Compact(list)
	var full error
	if room := int(lm.m.MaxEntries()); len(list) > room {
		full = fmt.Errorf("%w: %d addresses, room for %d", ErrLocalsFull, len(list), room)
		list = list[:room]
	}
	want := make(map[xsessionXsLocalKey]bool, len(list))
	for _, a := range list {
		var k xsessionXsLocalKey
		k.Addr = flow.AddrBytes(a)
		k.Family = flow.Family6
		if a.Is4() {
			k.Family = flow.Family4
		}
		want[k] = true
	}
	have := map[xsessionXsLocalKey]bool{}
	var k xsessionXsLocalKey
	var v uint32
	it := lm.m.Iterate()
	for it.Next(&k, &v) {
		have[k] = true
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("locals map: %w", err)
	}
	// Only what changed is written: the datapath calls Set on each address
	// change and every ten seconds besides.
	put := func() error {
		for w := range want {
			if have[w] {
				continue
			}
			if err := lm.m.Put(w, uint32(1)); err != nil {
				return fmt.Errorf("locals map: put %v: %w", flow.AddrFrom(w.Addr, w.Family), err)
			}
		}
		return nil
	}
	drop := func() error {
		for h := range have {
			if !want[h] {
				if err := lm.m.Delete(h); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return fmt.Errorf("locals map: delete %v: %w", flow.AddrFrom(h.Addr, h.Family), err)
				}
			}
		}
		return nil
	}
	// Put first, unless the old and the new would not fit together: then
	// an address going away goes first, and one in both stays all along.
	kept := 0
	for h := range have {
		if want[h] {
			kept++
		}
	}
	first, then := put, drop
	if len(have)+len(want)-kept > int(lm.m.MaxEntries()) {
		first, then = drop, put
	}
	if err := first(); err != nil {
		return err
	}
	if err := then(); err != nil {
		return err
	}
	return full
}
