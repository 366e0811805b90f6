package nsbind

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// These tests drive the view's state with hand-made netlink updates and
// need no privileges.

func linkUpdate(typ uint16, index int, name string, flags uint32) netlink.LinkUpdate {
	l := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: index, Name: name, RawFlags: flags, MTU: 1500, NumRxQueues: 4}}
	u := netlink.LinkUpdate{Link: l}
	u.Header.Type = typ
	return u
}

func addrUpdate(index int, p string, add bool, flags int) netlink.AddrUpdate {
	pfx := netip.MustParsePrefix(p)
	return netlink.AddrUpdate{
		LinkAddress: net.IPNet{IP: pfx.Addr().AsSlice(), Mask: net.CIDRMask(pfx.Bits(), pfx.Addr().BitLen())},
		LinkIndex:   index, NewAddr: add, Flags: flags,
	}
}

const up = unix.IFF_UP | unix.IFF_RUNNING

func TestStateAndDiff(t *testing.T) {
	st := newViewState()
	st.applyLink(linkUpdate(unix.RTM_NEWLINK, 1, "lo", up))
	st.applyLink(linkUpdate(unix.RTM_NEWLINK, 5, "eth0", unix.IFF_UP))
	st.applyAddr(addrUpdate(1, "127.0.0.1/8", true, 0))
	st.applyAddr(addrUpdate(5, "192.0.2.1/24", true, 0))
	st.applyAddr(addrUpdate(5, "2001:db8::1/64", true, 0))
	st.applyAddr(addrUpdate(5, "2001:db8::2/64", true, unix.IFA_F_TENTATIVE))
	st.applyAddr(addrUpdate(5, "2001:db8::3/64", true, unix.IFA_F_TENTATIVE|unix.IFA_F_OPTIMISTIC))
	st.applyAddr(addrUpdate(5, "2001:db8::4/64", true, unix.IFA_F_DADFAILED))
	s1 := st.snapshot(7, 1)

	a := netip.MustParseAddr
	for _, c := range []struct {
		ifindex int
		addr    string
		has     bool
		local   bool
	}{
		{5, "192.0.2.1", true, true},
		{5, "::ffff:192.0.2.1", true, true},
		{5, "2001:db8::1", true, true},
		{5, "2001:db8::2", false, false}, // tentative
		{5, "2001:db8::3", true, true},   // optimistic
		{5, "2001:db8::4", false, false}, // DAD failed
		{1, "192.0.2.1", false, true},
		{5, "192.0.2.2", false, false},
		{5, "127.0.0.1", false, true},
		{1, "127.0.0.1", true, true},
		{9, "127.5.5.5", false, true},
		{9, "::1", false, true},
		{5, "0.0.0.0", false, false},
	} {
		if got := s1.HasAddress(c.ifindex, a(c.addr)); got != c.has {
			t.Errorf("HasAddress(%d, %s) = %v", c.ifindex, c.addr, got)
		}
		if got := s1.IsLocal(7, a(c.addr)); got != c.local {
			t.Errorf("IsLocal(%s) = %v", c.addr, got)
		}
		if s1.IsLocal(8, a(c.addr)) || s1.IsLocal(0, a(c.addr)) {
			t.Errorf("IsLocal(%s) in another FIB", c.addr)
		}
	}
	if s1.IsLocal(7, netip.Addr{}) || s1.HasAddress(5, netip.Addr{}) {
		t.Error("the zero Addr counted")
	}
	i, ok := s1.InterfaceByName("eth0")
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("2001:db8::1/64"), netip.MustParsePrefix("2001:db8::3/64")}
	if !ok || i.Index != 5 || !slices.Equal(i.Addrs, want) || i.Usable() || i.RxQueues != 4 {
		t.Fatalf("eth0 = %+v", i)
	}
	// Copies do not alias the snapshot.
	i.Addrs[0] = netip.Prefix{}
	if j, _ := s1.Interface(5); j.Addrs[0] != want[0] {
		t.Fatal("Interface returned the snapshot's own slice")
	}

	// Carrier comes, an address goes, a link appears and another leaves.
	st.applyLink(linkUpdate(unix.RTM_NEWLINK, 5, "eth0", up))
	st.applyAddr(addrUpdate(5, "192.0.2.1/24", false, 0))
	st.applyLink(linkUpdate(unix.RTM_NEWLINK, 6, "eth1", 0))
	st.applyAddr(addrUpdate(6, "198.51.100.1/24", true, 0))
	st.applyLink(linkUpdate(unix.RTM_DELLINK, 1, "lo", 0))
	// A bridge-port message is not about the link itself.
	br := linkUpdate(unix.RTM_DELLINK, 5, "eth0", 0)
	br.IfInfomsg.Family = unix.AF_BRIDGE
	st.applyLink(br)
	s2 := st.snapshot(7, 2)
	got := diff(s1, s2)
	wantEv := []Event{
		{Kind: EventLinkAdded, IfIndex: 6, Name: "eth1"},
		{Kind: EventAddrRemoved, IfIndex: 1, Name: "lo", Addr: netip.MustParsePrefix("127.0.0.1/8")},
		{Kind: EventAddrRemoved, IfIndex: 5, Name: "eth0", Addr: netip.MustParsePrefix("192.0.2.1/24")},
		{Kind: EventAddrAdded, IfIndex: 6, Name: "eth1", Addr: netip.MustParsePrefix("198.51.100.1/24")},
		{Kind: EventLinkUp, IfIndex: 5, Name: "eth0"},
		{Kind: EventLinkRemoved, IfIndex: 1, Name: "lo"},
	}
	for k := range wantEv {
		wantEv[k].FIB, wantEv[k].Gen = 7, 2
	}
	if !slices.Equal(got, wantEv) {
		t.Fatalf("diff:\n got %v\nwant %v", got, wantEv)
	}
	if !s2.HasAddress(6, a("198.51.100.1")) || s2.HasAddress(5, a("192.0.2.1")) || s2.HasAddress(1, a("127.0.0.1")) {
		t.Fatal("second snapshot wrong")
	}
	// The first snapshot did not change.
	if !s1.HasAddress(5, a("192.0.2.1")) || s1.Gen() != 1 || s2.Gen() != 2 {
		t.Fatal("first snapshot changed")
	}
	// Nothing to report between equal snapshots.
	s3 := st.snapshot(7, 3)
	if d := diff(s2, s3); len(d) != 0 {
		t.Fatalf("diff of equal states: %v", d)
	}
	// A new hardware address, then a new MTU, each a link-changed event.
	u := linkUpdate(unix.RTM_NEWLINK, 5, "eth0", up)
	u.Link.Attrs().HardwareAddr = net.HardwareAddr{2, 0, 0, 0, 0, 5}
	st.applyLink(u)
	s4 := st.snapshot(7, 4)
	u = linkUpdate(unix.RTM_NEWLINK, 5, "eth0", up)
	u.Link.Attrs().HardwareAddr = net.HardwareAddr{2, 0, 0, 0, 0, 5}
	u.Link.Attrs().MTU = 9000
	st.applyLink(u)
	s5 := st.snapshot(7, 5)
	for _, c := range []struct{ old, cur *Snapshot }{{s3, s4}, {s4, s5}} {
		want := []Event{{Kind: EventLinkChanged, FIB: 7, Gen: c.cur.Gen(), IfIndex: 5, Name: "eth0"}}
		if d := diff(c.old, c.cur); !slices.Equal(d, want) {
			t.Fatalf("diff %d→%d: %v, want %v", c.old.Gen(), c.cur.Gen(), d, want)
		}
	}
}

func TestBadUpdatesIgnored(t *testing.T) {
	st := newViewState()
	st.applyAddr(netlink.AddrUpdate{LinkIndex: 3, NewAddr: true})                                                                                    // no address
	st.applyAddr(netlink.AddrUpdate{LinkAddress: net.IPNet{IP: net.IP{1, 2, 3}}, LinkIndex: 3, NewAddr: true})                                       // 3-byte address
	st.applyAddr(netlink.AddrUpdate{LinkAddress: net.IPNet{IP: net.IP{10, 0, 0, 1}, Mask: net.IPMask{255, 0, 255, 0}}, LinkIndex: 3, NewAddr: true}) // odd mask: host address
	st.applyAddr(addrUpdate(0, "10.0.0.2/8", true, 0))
	st.applyAddr(addrUpdate(-4, "10.0.0.3/8", true, 0))
	st.applyLink(netlink.LinkUpdate{})
	st.applyLink(linkUpdate(unix.RTM_NEWLINK, 0, "zero", up))
	st.applyAddr(addrUpdate(3, "10.0.0.9/8", false, 0)) // removal of what is not there
	s := st.snapshot(1, 1)
	if len(s.links) != 0 || len(s.owned) != 1 || !s.HasAddress(3, netip.MustParseAddr("10.0.0.1")) {
		t.Fatalf("links %v owned %v", s.links, s.owned)
	}
}

func TestPrefixOf(t *testing.T) {
	for _, c := range []struct {
		n    *net.IPNet
		want string
	}{
		{&net.IPNet{IP: net.ParseIP("10.1.2.3"), Mask: net.CIDRMask(24, 32)}, "10.1.2.3/24"},
		{&net.IPNet{IP: net.ParseIP("fd00::1"), Mask: net.CIDRMask(200, 256)}, "fd00::1/128"}, // invalid mask: nil
		{&net.IPNet{IP: net.ParseIP("fd00::1"), Mask: net.CIDRMask(64, 128)}, "fd00::1/64"},
		{&net.IPNet{IP: net.ParseIP("10.1.2.3")}, "10.1.2.3/32"},
	} {
		p, ok := prefixOf(c.n)
		if !ok || p.String() != c.want {
			t.Errorf("prefixOf(%v) = %v %v, want %s", c.n, p, ok, c.want)
		}
	}
	for _, n := range []*net.IPNet{nil, {IP: net.IP{1}}, {IP: net.ParseIP("fd00::1"), Mask: net.CIDRMask(24, 32)}, {IP: net.ParseIP("10.1.2.3"), Mask: net.CIDRMask(24, 128)}} {
		if p, ok := prefixOf(n); ok {
			t.Errorf("prefixOf(%v) = %v", n, p)
		}
	}
}

func TestNeighState(t *testing.T) {
	for _, c := range []struct {
		s      NeighState
		usable bool
		name   string
	}{
		{NeighReachable, true, "reachable"},
		{NeighStale, true, "stale"},
		{NeighDelay, true, "delay"},
		{NeighProbe, true, "probe"},
		{NeighPermanent, true, "permanent"},
		{NeighIncomplete, false, "incomplete"},
		{NeighFailed, false, "failed"},
		{NeighNoARP, true, "noarp"},
		{0, false, "none"},
		{NeighReachable | 0x1000, true, "reachable|0x1000"},
	} {
		if c.s.Usable() != c.usable || c.s.String() != c.name {
			t.Errorf("%#x: usable %v name %q", uint16(c.s), c.s.Usable(), c.s.String())
		}
	}
}

func TestCheckUnicast(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "::", "224.0.0.1", "ff02::1"} {
		if _, err := checkUnicast(netip.MustParseAddr(s)); err == nil {
			t.Errorf("%s accepted", s)
		}
	}
	if _, err := checkUnicast(netip.Addr{}); err == nil {
		t.Error("zero Addr accepted")
	}
	a, err := checkUnicast(netip.MustParseAddr("fe80::1%eth0"))
	if err != nil || a.Zone() != "" {
		t.Errorf("zone kept: %v %v", a, err)
	}
	a, err = checkUnicast(netip.MustParseAddr("::ffff:10.0.0.1"))
	if err != nil || !a.Is4() {
		t.Errorf("mapped address not unmapped: %v %v", a, err)
	}
}

func testSnapshot(n int) *Snapshot {
	st := newViewState()
	st.applyLink(linkUpdate(unix.RTM_NEWLINK, 2, "eth0", up))
	for i := range n {
		st.setAddr(2, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 16), 0, true)
	}
	st.setAddr(2, netip.MustParsePrefix("fd00::1/64"), 0, true)
	return st.snapshot(3, 1)
}

// TestReadsDoNotAllocate: HasAddress and IsLocal sit on the bind and
// connect paths and must not allocate.
func TestReadsDoNotAllocate(t *testing.T) {
	s := testSnapshot(64)
	v := &View{fib: 3}
	v.cur.Store(s)
	addrs := []netip.Addr{
		netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("::ffff:10.0.0.5"), netip.MustParseAddr("fd00::1"),
		netip.MustParseAddr("fd00::1%eth0"), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.1"),
	}
	var hits int
	allocs := testing.AllocsPerRun(100, func() {
		for _, a := range addrs {
			if v.HasAddress(2, a) {
				hits++
			}
			if v.IsLocal(3, a) {
				hits++
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run", allocs)
	}
	if hits == 0 {
		t.Fatal("no lookup hit")
	}
}

// BenchmarkIsLocal measures a View read against its baseline, a plain Go
// map lookup of the same key type.
func BenchmarkIsLocal(b *testing.B) {
	s := testSnapshot(256)
	v := &View{fib: 3}
	v.cur.Store(s)
	a := netip.MustParseAddr("10.0.0.77")
	b.Run("view", func(b *testing.B) {
		for b.Loop() {
			if !v.IsLocal(3, a) {
				b.Fatal("miss")
			}
		}
	})
	b.Run("view-hasaddress", func(b *testing.B) {
		for b.Loop() {
			if !v.HasAddress(2, a) {
				b.Fatal("miss")
			}
		}
	})
	b.Run("baseline-map", func(b *testing.B) {
		m := s.local
		for b.Loop() {
			if _, ok := m[a]; !ok {
				b.Fatal("miss")
			}
		}
	})
}

func TestViews(t *testing.T) {
	mk := func(fib FIBID, ifindex int, addr string) *View {
		st := newViewState()
		st.setAddr(ifindex, netip.MustParsePrefix(addr), 0, true)
		v := &View{fib: fib, desc: "test"}
		v.cur.Store(st.snapshot(fib, 1))
		return v
	}
	var vs Views
	a := netip.MustParseAddr
	if vs.IsLocal(1, a("127.0.0.1")) || vs.HasAddress(2, a("10.0.0.1")) || vs.Get(1) != nil {
		t.Fatal("empty set answers")
	}
	v1, v2 := mk(1, 2, "10.0.0.1/24"), mk(9, 2, "10.9.0.1/24")
	if err := vs.Add(v1); err != nil {
		t.Fatal(err)
	}
	if err := vs.Add(v2); err != nil {
		t.Fatal(err)
	}
	if err := vs.Add(mk(1, 3, "10.0.0.2/24")); !errors.Is(err, ErrFIBWatched) {
		t.Fatalf("second view of a FIB: %v", err)
	}
	if !vs.IsLocal(1, a("10.0.0.1")) || vs.IsLocal(1, a("10.9.0.1")) || !vs.IsLocal(9, a("10.9.0.1")) || vs.IsLocal(5, a("127.0.0.1")) {
		t.Fatal("IsLocal does not follow the FIB")
	}
	if !vs.HasAddress(2, a("10.9.0.1")) || !vs.HasAddressIn(9, 2, a("10.9.0.1")) || vs.HasAddressIn(1, 2, a("10.9.0.1")) {
		t.Fatal("HasAddress")
	}
	allocs := testing.AllocsPerRun(100, func() {
		vs.IsLocal(9, a("10.9.0.1"))
		vs.HasAddress(2, a("10.0.0.1"))
	})
	if allocs != 0 {
		t.Fatalf("%v allocations", allocs)
	}
	if vs.Remove(1) != v1 || vs.Remove(1) != nil || vs.IsLocal(1, a("10.0.0.1")) || vs.Get(9) != v2 {
		t.Fatal("Remove")
	}
}
