package loader

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/xsessiond/xsessiond/flow"
)

func TestKeyValidation(t *testing.T) {
	good := listener(flow.TransportUDP, v4Local, 1)
	for _, c := range []struct {
		name    string
		ifindex int
		mod     func(*flow.FiveTuple)
	}{
		{"ifindex 0", 0, nil},
		{"negative ifindex", -1, nil},
		{"family 5", 1, func(t *flow.FiveTuple) { t.Family = 5 }},
		{"sctp", 1, func(t *flow.FiveTuple) { t.Proto = flow.TransportSCTP }},
		{"ipv4 with stray bytes", 1, func(t *flow.FiveTuple) { t.Local[5] = 1 }},
	} {
		tu := good
		if c.mod != nil {
			c.mod(&tu)
		}
		if _, err := lstKey(c.ifindex, &tu); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s: listener key: %v, want ErrInvalidKey", c.name, err)
		}
		if _, err := estKey(c.ifindex, &tu); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s: established key: %v, want ErrInvalidKey", c.name, err)
		}
	}
	bad := tuple(flow.TransportUDP, v4Local, 1, v4Remote, 2)
	bad.Remote[9] = 1
	if _, err := estKey(1, &bad); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("remote ipv4 with stray bytes: %v", err)
	}
	if _, err := ParseMode("turbo"); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("ParseMode: %v", err)
	}
}

func TestCounterNames(t *testing.T) {
	var c Counters
	f := c.fields()
	for i, p := range f {
		*p = uint64(i + 1)
	}
	i := 0
	seen := map[string]bool{}
	c.Each(func(name string, v uint64) {
		if v != uint64(i+1) || seen[name] || name == "" {
			t.Errorf("counter %d: %s=%d", i, name, v)
		}
		seen[name] = true
		i++
	})
	if d := c.Sub(c); d != (Counters{}) {
		t.Errorf("c - c = %+v", d)
	}
}

func TestMapsRoundTrip(t *testing.T) {
	o := loadObjects(t, ObjectsOptions{Queues: 2, MaxListeners: 8, MaxEstablished: 8})
	l := listener(flow.TransportTCP, v6Local, 443)
	if err := o.Listeners.Put(4, l, Value{Handle: flow.LocalHandleBit | 5, FIB: 2, Flags: 0}); err != nil {
		t.Fatal(err)
	}
	if v, err := o.Listeners.Lookup(4, l); err != nil || v.Handle != flow.LocalHandleBit|5 || v.FIB != 2 {
		t.Fatalf("lookup: %+v %v", v, err)
	}
	if _, err := o.Listeners.Lookup(5, l); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup of another interface: %v", err)
	}
	es, err := o.Listeners.Entries()
	if err != nil || len(es) != 1 || es[0].IfIndex != 4 || es[0].Tuple != l {
		t.Fatalf("entries %+v %v", es, err)
	}
	if err := o.Listeners.Delete(4, l); err != nil {
		t.Fatal(err)
	}
	if err := o.Listeners.Delete(4, l); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	tu := tuple(flow.TransportUDP, v4Local, 1, v4Remote, 2)
	for i := 0; i < 8; i++ {
		tu.RemotePort = uint16(i)
		if err := o.Established.Put(1, tu, Value{Handle: flow.Handle(i)}); err != nil {
			t.Fatal(err)
		}
	}
	tu.RemotePort = 100
	if err := o.Established.Put(1, tu, Value{}); err == nil {
		t.Fatal("put into a full map succeeded")
	}
	ee, err := o.Established.Entries()
	if err != nil || len(ee) != 8 {
		t.Fatalf("entries: %d %v", len(ee), err)
	}
	for _, e := range ee {
		if e.Value.Handle != flow.Handle(e.Tuple.RemotePort) {
			t.Fatalf("entry %+v", e)
		}
	}
	if o.XSKs.Queues() != 2 {
		t.Fatalf("xsks has %d slots", o.XSKs.Queues())
	}
	if err := o.XSKs.Set(2, 0); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("set beyond the map: %v", err)
	}
	if err := o.XSKs.Set(0, 0); err == nil {
		t.Fatal("set of a non-AF_XDP fd succeeded")
	}
}

func portBitsAt(t *testing.T, o *Objects, proto flow.Transport, port uint16) uint32 {
	t.Helper()
	var bits uint32
	if err := o.objs.Ports.Lookup(makePortSlot(proto, port, 0, flow.Family4).index, &bits); err != nil {
		t.Fatal(err)
	}
	return bits
}

// TestPortIndex checks that the port index follows the entries: a bit per
// kind and family while entries exist, none after the last is gone.
func TestPortIndex(t *testing.T) {
	o := loadObjects(t, ObjectsOptions{})
	const est4, exact6, wild6 = 1 << 0, 1 << 3, 1 << 5
	e1 := tuple(flow.TransportTCP, v4Local, 443, v4Remote, 1)
	e2 := tuple(flow.TransportTCP, v4Local, 443, v4Remote, 2)
	l6 := listener(flow.TransportTCP, zero6, 443)
	lx := listener(flow.TransportUDP, v6Local, 443)
	steps := []struct {
		do     func() error
		tcp443 uint32
		udp443 uint32
	}{
		{func() error { return o.Established.Put(1, e1, Value{}) }, est4, 0},
		{func() error { return o.Established.Put(2, e2, Value{}) }, est4, 0},
		{func() error { return o.Established.Put(2, e2, Value{Handle: 5}) }, est4, 0}, // replace
		{func() error { return o.Listeners.Put(1, l6, Value{}) }, est4 | wild6, 0},
		{func() error { return o.Listeners.Put(1, lx, Value{}) }, est4 | wild6, exact6},
		{func() error { return o.Established.Delete(1, e1) }, est4 | wild6, exact6},
		{func() error { return o.Established.Delete(2, e2) }, wild6, exact6},
		{func() error { return o.Listeners.Delete(1, l6) }, 0, exact6},
		{func() error { return o.Listeners.Delete(1, lx) }, 0, 0},
	}
	for i, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := portBitsAt(t, o, flow.TransportTCP, 443); got != s.tcp443 {
			t.Fatalf("step %d: tcp/443 bits %#x, want %#x", i, got, s.tcp443)
		}
		if got := portBitsAt(t, o, flow.TransportUDP, 443); got != s.udp443 {
			t.Fatalf("step %d: udp/443 bits %#x, want %#x", i, got, s.udp443)
		}
	}
}

// TestDumpBatches checks that a dump of more entries than one batch holds
// returns each of them once with its value, as an iteration does.
func TestDumpBatches(t *testing.T) {
	const n = 2*dumpBatch + 300
	o := loadObjects(t, ObjectsOptions{Queues: 1, MaxListeners: 8, MaxEstablished: n})
	if ee, err := o.Established.Entries(); err != nil || len(ee) != 0 {
		t.Fatalf("empty map: %d entries, %v", len(ee), err)
	}
	tu := tuple(flow.TransportTCP, v4Local, 80, v4Remote, 0)
	for i := range n {
		tu.RemotePort = uint16(1 + i%60000)
		tu.Remote[15] = byte(i / 60000)
		if err := o.Established.Put(1+i%3, tu, Value{Handle: flow.Handle(i), FIB: flow.FIBID(i % 7)}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := dumpBatched[xsessionXsEstKey](o.Established.m)
	if err != nil || len(got) != n {
		t.Fatalf("batched dump: %d entries, %v; want %d", len(got), err, n)
	}
	if l, err := dumpBatched[xsessionXsLstKey](o.Listeners.m); err != nil || len(l) != 0 {
		t.Fatalf("batched dump of the empty listener map: %d entries, %v", len(l), err)
	}
	var k xsessionXsEstKey
	var v xsessionXsValue
	seen := 0
	for it := o.Established.m.Iterate(); it.Next(&k, &v); seen++ {
		if g, ok := got[k]; !ok || g != v {
			t.Fatalf("entry %+v: dump has %+v (present %v), the map %+v", k, g, ok, v)
		}
	}
	if seen != n {
		t.Fatalf("the iteration saw %d entries, want %d", seen, n)
	}
	ee, err := o.Established.Entries()
	if err != nil || len(ee) != n {
		t.Fatalf("entries: %d, %v", len(ee), err)
	}
	for _, e := range ee {
		i := int(e.Value.Handle)
		if e.IfIndex != 1+i%3 || e.Tuple.RemotePort != uint16(1+i%60000) || e.Value.FIB != flow.FIBID(i%7) {
			t.Fatalf("entry %+v", e)
		}
	}
}

// TestLocalMapSet: Set makes the locals map hold exactly the addresses
// given (duplicates, zones and IPv4-mapped forms folded), replacing what
// it held; more than the map holds keeps the lowest and reports
// ErrLocalsFull.
func TestLocalMapSet(t *testing.T) {
	o := loadObjects(t, ObjectsOptions{CheckLocal: true})
	held := func() map[netip.Addr]bool {
		m := map[netip.Addr]bool{}
		var k xsessionXsLocalKey
		var v uint32
		it := o.objs.Locals.Iterate()
		for it.Next(&k, &v) {
			m[flow.AddrFrom(k.Addr, k.Family)] = true
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return m
	}
	a4, a6 := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fe80::1%eth0")
	if err := o.Locals.Set([]netip.Addr{a4, netip.AddrFrom16(a4.As16()), a6, {}}); err != nil {
		t.Fatal(err)
	}
	if got := held(); len(got) != 2 || !got[a4] || !got[a6.WithZone("")] {
		t.Fatalf("held %v, want %v and %v", got, a4, a6.WithZone(""))
	}
	b4 := netip.MustParseAddr("10.1.2.4")
	if err := o.Locals.Set([]netip.Addr{b4}); err != nil {
		t.Fatal(err)
	}
	if got := held(); len(got) != 1 || !got[b4] {
		t.Fatalf("held %v, want %v alone", got, b4)
	}
	room := int(o.objs.Locals.MaxEntries())
	var many []netip.Addr
	for i := room; i >= 0; i-- { // one more than it holds, highest first
		many = append(many, netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}))
	}
	err := o.Locals.Set(many)
	if !errors.Is(err, ErrLocalsFull) {
		t.Fatalf("Set of %d addresses: %v, want ErrLocalsFull", len(many), err)
	}
	if got := held(); len(got) != room || got[many[0]] || !got[many[len(many)-1]] {
		t.Fatalf("held %d, the highest %v: %v, the lowest %v: %v; want %d without the highest", len(got), many[0], got[many[0]], many[len(many)-1], got[many[len(many)-1]], room)
	}
}
