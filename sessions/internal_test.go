package sessions

import (
	"net/netip"
	"testing"
)

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

func TestShard_MailboxOrder(t *testing.T) {
	s := NewShard(3)
	k := FiveTuple{Local: AddrBytes(netip.MustParseAddr("10.0.0.1")), Remote: AddrBytes(netip.MustParseAddr("10.0.0.2")),
		LocalPort: 1, RemotePort: 2, Proto: TransportUDP, Family: Family4}
	h := MakeHandle(3, 7)
	s.Post(func(s *Shard) { s.Add(&ShardSession{Handle: h, Tuple: k, FIB: 5}) })
	s.Post(func(s *Shard) { s.Del(h) })
	s.Post(func(s *Shard) { s.Add(&ShardSession{Handle: h, Tuple: k, FIB: 5}) })
	if s.Get(h.Index()) != nil || s.Pending() != 3 {
		t.Fatal("change visible before Drain")
	}
	if n := s.Drain(); n != 3 {
		t.Fatalf("Drain ran %d, want 3", n)
	}
	if ss := s.Get(h.Index()); ss == nil || ss.Handle != h || ss.Tuple != k {
		t.Fatalf("Get = %v", ss)
	}
	if s.Del(MakeHandle(3, 8)) != nil || s.Len() != 1 {
		t.Fatal("Del of unknown handle removed something")
	}
	if s.Del(h) == nil || s.Len() != 0 || s.Get(h.Index()) != nil {
		t.Fatal("Del did not remove the session")
	}
}

// TestShard_DrainWithinDrain: a Drain that runs while another is running
// its batch (here: from inside a posted function), whose functions post
// more, neither loses nor repeats a posted function and never runs a nil
// one.
func TestShard_DrainWithinDrain(t *testing.T) {
	s := NewShard(0)
	ran := map[int]int{}
	var post func(i int)
	post = func(i int) {
		s.Post(func(*Shard) {
			ran[i]++
			if i < 8 {
				post(i + 100) // posts while the inner Drain runs its batch
			}
		})
	}
	// A Drain of 32 leaves a spare array of that capacity behind, so
	// that what follows is appended in place.
	for range 32 {
		s.Post(func(*Shard) {})
	}
	s.Drain()
	s.Post(func(*Shard) {
		for i := range 8 {
			post(i)
		}
		s.Drain()
	})
	for s.Pending() > 0 {
		s.Drain()
	}
	for i := range 8 {
		if ran[i] != 1 || ran[i+100] != 1 {
			t.Fatalf("posted functions %d and %d ran %d and %d times, want once (all: %v)", i, i+100, ran[i], ran[i+100], ran)
		}
	}
}

// TestShard_Notify: with a notify function set, Post calls it once per
// post (with the function already queued) and leaves the Wake channel
// alone; SetNotify(nil) brings the channel back.
func TestShard_Notify(t *testing.T) {
	s := NewShard(0)
	calls, pendingSeen := 0, 0
	s.SetNotify(func() {
		calls++
		pendingSeen = len(s.mbox) // Post holds mu: read the mailbox directly
	})
	s.Post(func(*Shard) {})
	s.Post(func(*Shard) {})
	if calls != 2 || pendingSeen != 2 {
		t.Fatalf("notify called %d times, last with %d queued; want 2, 2", calls, pendingSeen)
	}
	select {
	case <-s.Wake():
		t.Fatal("Post with a notify function sent on Wake")
	default:
	}
	s.SetNotify(nil)
	s.Post(func(*Shard) {})
	if calls != 2 {
		t.Fatalf("notify called after SetNotify(nil)")
	}
	select {
	case <-s.Wake():
	default:
		t.Fatal("Post without a notify function did not send on Wake")
	}
	if n := s.Drain(); n != 3 {
		t.Fatalf("Drain ran %d, want 3", n)
	}
}
