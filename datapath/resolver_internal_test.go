package datapath

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/nsbind"
)

// TestResolverChanged: a neighbour's new MAC replaces the old one in every
// destination that goes through it, at once; a neighbour gone or a route
// change makes destinations resolve again (usable meanwhile); a change
// that moves nothing leaves gen alone; a resolution in flight when its
// next hop changed is asked again once stored. A change walks the
// destinations of its next hop alone (byHop), which follows each store.
func TestResolverChanged(t *testing.T) {
	gw := netip.MustParseAddr("10.0.0.1")
	other := netip.MustParseAddr("10.0.0.2")
	key := func(s string) nbKey {
		a := netip.MustParseAddr(s).As4()
		var k nbKey
		copy(k.addr[:], a[:])
		k.fam = 4
		return k
	}
	at := time.Now()
	r := newResolver(nil, 1)
	put := func(k nbKey, e nbResult) { // as get, then a resolution's store
		r.m[k] = &nbResult{}
		r.store(k, e)
	}
	put(key("192.0.2.1"), nbResult{ok: true, nh: gw, mac: [6]byte{2, 0, 0, 0, 0, 1}, at: at})
	put(key("192.0.2.2"), nbResult{ok: true, nh: gw, mac: [6]byte{2, 0, 0, 0, 0, 1}, at: at, pending: true})
	put(key("10.0.0.2"), nbResult{ok: true, nh: other, mac: [6]byte{2, 0, 0, 0, 0, 2}, at: at})

	r.changed(nsbind.NextHopChange{IP: gw, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Usable: true})
	if r.gen.Load() != 0 {
		t.Fatal("the same MAC moved gen")
	}
	r.changed(nsbind.NextHopChange{IP: gw, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, Usable: true})
	if r.gen.Load() != 1 {
		t.Fatalf("gen %d after a new MAC", r.gen.Load())
	}
	for _, k := range []string{"192.0.2.1", "192.0.2.2"} {
		if e := r.m[key(k)]; e.mac != [6]byte{2, 0, 0, 0, 0, 9} || !e.ok {
			t.Errorf("%s through the gateway: %+v", k, e)
		}
	}
	if e := r.m[key("10.0.0.2")]; e.mac != [6]byte{2, 0, 0, 0, 0, 2} || e.at != at {
		t.Errorf("another neighbour's destination changed: %+v", e)
	}
	// What was in flight for 192.0.2.2 read the old MAC: the notice's
	// MAC stays, and it is asked again at once.
	r.store(key("192.0.2.2"), nbResult{ok: true, nh: gw, mac: [6]byte{2, 0, 0, 0, 0, 1}, at: time.Now()})
	if e := r.m[key("192.0.2.2")]; !e.stale || e.dirty || !e.pending || e.mac != [6]byte{2, 0, 0, 0, 0, 9} {
		t.Errorf("a resolution in flight across the change: %+v, want the new MAC kept and asked again now", e)
	}
	if k := <-r.req; k != key("192.0.2.2") {
		t.Errorf("asked again for %v", k)
	}
	r.changed(nsbind.NextHopChange{IP: other})
	if e := r.m[key("10.0.0.2")]; !e.at.IsZero() || !e.ok || r.gen.Load() != 2 {
		t.Errorf("a neighbour gone: %+v gen %d, want asked again, usable meanwhile", e, r.gen.Load())
	}
	r.changed(nsbind.NextHopChange{Route: true})
	if e := r.m[key("192.0.2.1")]; !e.at.IsZero() || r.gen.Load() != 3 {
		t.Errorf("a route change: %+v gen %d, want asked again", e, r.gen.Load())
	}

	// A next hop that did not resolve (in time, or for want of a slot):
	// the kernel's verdict answers it at once. Usable, it is asked again
	// now; failed, its connects hear it is unreachable. One a resolution
	// still waits for is left to that resolution.
	slow, late := netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4")
	put(key("10.0.0.3"), nbResult{failed: true, nh: slow, at: at})
	put(key("10.0.0.4"), nbResult{failed: true, nh: late, at: at})
	put(key("10.0.0.5"), nbResult{failed: true, nh: late, at: at, pending: true})
	r.changed(nsbind.NextHopChange{IP: slow, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 3}, Usable: true})
	if e := r.m[key("10.0.0.3")]; !e.at.IsZero() || r.gen.Load() != 4 {
		t.Errorf("a failed next hop turned usable: %+v gen %d, want asked again", e, r.gen.Load())
	}
	r.changed(nsbind.NextHopChange{IP: late, Failed: true})
	if e := r.m[key("10.0.0.4")]; !e.unreachable || e.at != at || r.gen.Load() != 5 {
		t.Errorf("a failed next hop's entry failed: %+v gen %d, want unreachable", e, r.gen.Load())
	}
	if e := r.m[key("10.0.0.5")]; e.unreachable {
		t.Errorf("a resolution in flight was answered by the change: %+v", e)
	}
	r.changed(nsbind.NextHopChange{IP: late, Failed: true})
	if r.gen.Load() != 5 {
		t.Errorf("the same failure again moved gen to %d", r.gen.Load())
	}

	// A destination whose route moved to another next hop is that one's
	// to change, no longer the old one's.
	r.store(key("192.0.2.1"), nbResult{ok: true, nh: other, mac: [6]byte{2, 0, 0, 0, 0, 2}, at: at})
	r.changed(nsbind.NextHopChange{IP: gw, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 7}, Usable: true})
	if e := r.m[key("192.0.2.1")]; e.mac != [6]byte{2, 0, 0, 0, 0, 2} {
		t.Errorf("the old next hop's change reached a destination that left it: %+v", e)
	}
	r.changed(nsbind.NextHopChange{IP: other, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 8}, Usable: true})
	if e := r.m[key("192.0.2.1")]; e.mac != [6]byte{2, 0, 0, 0, 0, 8} {
		t.Errorf("the new next hop's change missed a destination that came to it: %+v", e)
	}
	if n := len(r.byHop[gw]); n != 1 {
		t.Errorf("%d destinations indexed under the old next hop, want 1", n)
	}
}

// TestStackAddrs: gVisor gets the served interface's addresses with their
// prefixes and the others' as host addresses, without loopback addresses
// and without the other interfaces' IPv6 link-local ones.
func TestStackAddrs(t *testing.T) {
	pfx := netip.MustParsePrefix
	ifcs := []nsbind.Interface{
		{Index: 1, Name: "lo", Addrs: []netip.Prefix{pfx("127.0.0.1/8"), pfx("::1/128"), pfx("10.99.9.9/32")}},
		{Index: 2, Name: "eth0", Addrs: []netip.Prefix{pfx("10.77.0.2/24"), pfx("fe80::2/64"), pfx("fd77::2/64")}},
		{Index: 3, Name: "eth1", Addrs: []netip.Prefix{pfx("192.0.2.1/24"), pfx("fe80::3/64")}},
	}
	got := stackAddrs(ifcs, 2)
	want := []netip.Prefix{pfx("10.99.9.9/32"), pfx("10.77.0.2/24"), pfx("fe80::2/64"), pfx("fd77::2/64"), pfx("192.0.2.1/32")}
	if !slices.Equal(got, want) {
		t.Fatalf("stackAddrs:\n got %v\nwant %v", got, want)
	}
}
