package datapath

import (
	"testing"

	"github.com/xsessiond/xsessiond/datapath/udp"
)

// TestHoldersNoteOnlyWhatNothingHolds: retryHeld's notes of kept
// datagrams take a slot only for one no earlier kept datagram holds, so
// that many datagrams waiting for one neighbour, or for one session's
// kernel socket, do not fill the notes and hold every later datagram, to
// any neighbour, until they are dropped.
func TestHoldersNoteOnlyWhatNothingHolds(t *testing.T) {
	a, b := nbKey{addr: [16]byte{10, 0, 0, 1}, fam: 4}, nbKey{addr: [16]byte{10, 0, 0, 2}, fam: 4}
	s1, s2 := &udp.Target{}, &udp.Target{}
	var kept []held
	for range 3 * len(holders{}.h) {
		kept = append(kept, held{t: s1, key: a}) // all wait for neighbour a
	}
	var s holders
	for i := range kept {
		s.add(&kept[i])
	}
	if s.n != 1 {
		t.Fatalf("%d noted for %d datagrams to one neighbour, want 1", s.n, len(kept))
	}
	if !s.hold(&held{t: s2, key: a}) {
		t.Error("a datagram to the unresolved neighbour is not held behind the ones waiting for it")
	}
	if s.hold(&held{t: s1, key: b}) {
		t.Error("a datagram to another neighbour is held behind datagrams waiting for neighbour a")
	}

	// One session's full kernel socket holds that session's datagrams,
	// whatever their next hop, and nobody else's.
	k := held{t: s1, key: b, kernel: true}
	s.add(&k)
	if s.n != 2 || !s.hold(&held{t: s1, key: b}) || s.hold(&held{t: s2, key: b}) {
		t.Errorf("kernel-held notes %d: holds its session's %v, another's %v", s.n,
			s.hold(&held{t: s1, key: b}), s.hold(&held{t: s2, key: b}))
	}

	// Past its slots, every datagram counts as held.
	var full holders
	others := make([]held, len(full.h))
	for i := range others {
		others[i] = held{t: s2, key: nbKey{addr: [16]byte{10, 1, 0, byte(i)}, fam: 4}}
		full.add(&others[i])
	}
	if full.n != len(full.h) || !full.hold(&held{t: s1, key: b}) {
		t.Errorf("full notes (%d) do not hold a datagram to a neighbour none waits for", full.n)
	}
}
