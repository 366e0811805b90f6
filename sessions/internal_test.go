package sessions

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func randTuple(r *rand.Rand) FiveTuple {
	var t FiveTuple
	if r.IntN(2) == 0 {
		t.Family = Family4
		for i := 0; i < 4; i++ {
			t.Local[i] = byte(r.IntN(4))
			t.Remote[i] = byte(r.IntN(4))
		}
	} else {
		t.Family = Family6
		for i := 0; i < 16; i += 5 {
			t.Local[i] = byte(r.IntN(4))
			t.Remote[i] = byte(r.IntN(4))
		}
	}
	t.LocalPort = uint16(r.IntN(8))
	t.RemotePort = uint16(r.IntN(8))
	t.Proto = []Transport{TransportTCP, TransportUDP}[r.IntN(2)]
	return t
}

// TestTupleTable_AgainstMap runs random inserts, removes and lookups on a
// small key space (many collisions and deletions inside probe runs) and
// compares every answer with a Go map.
func TestTupleTable_AgainstMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tab := newTupleTable(0)
	ref := map[FiveTuple]uint32{}
	for i := 0; i < 200000; i++ {
		k := randTuple(r)
		switch r.IntN(3) {
		case 0:
			v := r.Uint32()
			_, had := ref[k]
			if isNew := tab.insert(&k, v); isNew == had {
				t.Fatalf("step %d: insert new=%v, map had=%v", i, isNew, had)
			}
			ref[k] = v
		case 1:
			_, had := ref[k]
			if got := tab.remove(&k); got != had {
				t.Fatalf("step %d: remove=%v, map had=%v", i, got, had)
			}
			delete(ref, k)
		default:
			v, ok := tab.lookup(&k)
			rv, rok := ref[k]
			if ok != rok || v != rv {
				t.Fatalf("step %d: lookup=(%d,%v), map=(%d,%v)", i, v, ok, rv, rok)
			}
		}
		if tab.len() != len(ref) {
			t.Fatalf("step %d: len %d, map %d", i, tab.len(), len(ref))
		}
	}
	for k, v := range ref {
		if got, ok := tab.lookup(&k); !ok || got != v {
			t.Fatalf("final: %v -> (%d,%v), want %d", k, got, ok, v)
		}
	}
}

func TestTupleTable_LookupAllocs(t *testing.T) {
	tab := newTupleTable(0)
	r := rand.New(rand.NewPCG(3, 4))
	keys := make([]FiveTuple, 1000)
	for i := range keys {
		keys[i] = randTuple(r)
		keys[i].LocalPort = uint16(i)
		tab.insert(&keys[i], uint32(i))
	}
	i := 0
	if a := testing.AllocsPerRun(1000, func() {
		tab.lookup(&keys[i%len(keys)])
		i++
	}); a != 0 {
		t.Fatalf("lookup allocates %v per run", a)
	}
}

func TestMaskAddr(t *testing.T) {
	a := AddrBytes(netip.MustParseAddr("10.255.255.255"))
	for _, c := range []struct {
		bits uint8
		want string
	}{{0, "0.0.0.0"}, {8, "10.0.0.0"}, {12, "10.240.0.0"}, {32, "10.255.255.255"}} {
		if got := AddrFrom(maskAddr(&a, c.bits), Family4); got.String() != c.want {
			t.Errorf("mask /%d = %v, want %s", c.bits, got, c.want)
		}
	}
	b := AddrBytes(netip.MustParseAddr("fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
	for _, c := range []struct {
		bits uint8
		want string
	}{{16, "fd00::"}, {64, "fd00:ffff:ffff:ffff::"}, {72, "fd00:ffff:ffff:ffff:ff00::"}, {128, "fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}} {
		if got := AddrFrom(maskAddr(&b, c.bits), Family6); got.String() != c.want {
			t.Errorf("mask /%d = %v, want %s", c.bits, got, c.want)
		}
	}
}

func TestShard_MailboxOrderAndLookup(t *testing.T) {
	s := NewShard(3)
	k := FiveTuple{Local: AddrBytes(netip.MustParseAddr("10.0.0.1")), Remote: AddrBytes(netip.MustParseAddr("10.0.0.2")),
		LocalPort: 1, RemotePort: 2, Proto: TransportUDP, Family: Family4}
	h := MakeHandle(3, 7)
	s.Post(func(s *Shard) { s.Add(&ShardSession{Handle: h, Tuple: k, FIB: 5}) })
	s.Post(func(s *Shard) { s.Del(h) })
	s.Post(func(s *Shard) { s.Add(&ShardSession{Handle: h, Tuple: k, FIB: 5}) })
	if _, ok := s.Lookup(5, &k); ok {
		t.Fatal("change visible before Drain")
	}
	if n := s.Drain(); n != 3 {
		t.Fatalf("Drain ran %d, want 3", n)
	}
	ss, ok := s.Lookup(5, &k)
	if !ok || ss.Handle != h {
		t.Fatalf("Lookup = %v, %v", ss, ok)
	}
	if _, ok := s.Lookup(6, &k); ok {
		t.Fatal("found in another FIB")
	}
	tab := s.Table(5)
	if a := testing.AllocsPerRun(100, func() { tab.Lookup(&k) }); a != 0 {
		t.Fatalf("EstablishedTable.Lookup allocates %v", a)
	}
	if s.Del(MakeHandle(3, 8)) != nil || s.Len() != 1 {
		t.Fatal("Del of unknown handle removed something")
	}
}
