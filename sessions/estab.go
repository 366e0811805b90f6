package sessions

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
)

// tupleHasher is a keyed hash of FiveTuples. The key is random per table so
// that peers choosing addresses and ports cannot aim at one probe chain.
type tupleHasher struct {
	k [6]uint64
}

func newTupleHasher() tupleHasher {
	var h tupleHasher
	for i := range h.k {
		h.k[i] = rand.Uint64() | 1
	}
	return h
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// hash returns a 64-bit hash of t. It reads the tuple as five words and
// folds them with three 64x64->128 multiplies.
func (h *tupleHasher) hash(t *FiveTuple) uint64 {
	l0 := binary.LittleEndian.Uint64(t.Local[0:8])
	l1 := binary.LittleEndian.Uint64(t.Local[8:16])
	r0 := binary.LittleEndian.Uint64(t.Remote[0:8])
	r1 := binary.LittleEndian.Uint64(t.Remote[8:16])
	tail := uint64(t.LocalPort) | uint64(t.RemotePort)<<16 | uint64(t.Proto)<<32 | uint64(t.Family)<<40
	a := mix(l0^h.k[0], l1^h.k[1])
	b := mix(r0^h.k[2], r1^h.k[3])
	return mix(a^tail^h.k[4], b^h.k[5])
}

// tupleEqual compares two tuples word by word.
func tupleEqual(a, b *FiveTuple) bool {
	return binary.LittleEndian.Uint64(a.Local[0:8]) == binary.LittleEndian.Uint64(b.Local[0:8]) &&
		binary.LittleEndian.Uint64(a.Remote[0:8]) == binary.LittleEndian.Uint64(b.Remote[0:8]) &&
		a.LocalPort == b.LocalPort && a.RemotePort == b.RemotePort &&
		a.Proto == b.Proto && a.Family == b.Family &&
		binary.LittleEndian.Uint64(a.Local[8:16]) == binary.LittleEndian.Uint64(b.Local[8:16]) &&
		binary.LittleEndian.Uint64(a.Remote[8:16]) == binary.LittleEndian.Uint64(b.Remote[8:16])
}

// tupleSlot is one slot of a tupleTable: 48 bytes, the key, a 32-bit tag
// from the key's hash (compared before the key) and the value. A slot whose
// key has Family 0 is empty: every stored key has Family4 or Family6.
type tupleSlot struct {
	key FiveTuple // 38 bytes, 2-byte aligned
	_   uint16
	tag uint32
	val uint32
}

// tupleTable is an open-addressing hash table from FiveTuple to a uint32,
// with linear probing, at most half full, and backward-shift deletion (no
// tombstones). Lookups do not allocate. It is not safe for concurrent use.
type tupleTable struct {
	slots []tupleSlot
	mask  uint64
	n     int
	h     tupleHasher
}

const minTableSlots = 16

func newTupleTable(capacity int) *tupleTable {
	t := &tupleTable{h: newTupleHasher()}
	t.alloc(slotsFor(capacity))
	return t
}

func slotsFor(n int) int {
	s := minTableSlots
	for s < 2*n {
		s <<= 1
	}
	return s
}

func (t *tupleTable) alloc(n int) {
	t.slots = make([]tupleSlot, n)
	t.mask = uint64(n - 1)
}

// lookup returns the value stored for k.
func (t *tupleTable) lookup(k *FiveTuple) (uint32, bool) {
	h := t.h.hash(k)
	tag := uint32(h >> 32)
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.tag == tag && tupleEqual(&s.key, k) {
			return s.val, true
		}
		if s.key.Family == 0 {
			return 0, false
		}
	}
}

// insert stores v for k, replacing any value there, and reports whether k
// was new. k.Family must be Family4 or Family6.
func (t *tupleTable) insert(k *FiveTuple, v uint32) bool {
	if 2*(t.n+1) > len(t.slots) {
		t.grow()
	}
	h := t.h.hash(k)
	tag := uint32(h >> 32)
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.key.Family == 0 {
			*s = tupleSlot{key: *k, tag: tag, val: v}
			t.n++
			return true
		}
		if s.tag == tag && tupleEqual(&s.key, k) {
			s.val = v
			return false
		}
	}
}

func (t *tupleTable) grow() {
	old := t.slots
	t.alloc(2 * len(old))
	for i := range old {
		s := &old[i]
		if s.key.Family == 0 {
			continue
		}
		h := t.h.hash(&s.key)
		for j := h & t.mask; ; j = (j + 1) & t.mask {
			if t.slots[j].key.Family == 0 {
				t.slots[j] = *s
				break
			}
		}
	}
}

// remove deletes k and reports whether it was there.
func (t *tupleTable) remove(k *FiveTuple) bool {
	h := t.h.hash(k)
	tag := uint32(h >> 32)
	i := h & t.mask
	for ; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.key.Family == 0 {
			return false
		}
		if s.tag == tag && tupleEqual(&s.key, k) {
			break
		}
	}
	// Backward-shift: move later members of the probe run into the hole
	// when their home slot does not lie cyclically in (hole, j].
	hole := i
	for j := (i + 1) & t.mask; ; j = (j + 1) & t.mask {
		s := &t.slots[j]
		if s.key.Family == 0 {
			break
		}
		home := t.h.hash(&s.key) & t.mask
		if (j-home)&t.mask >= (j-hole)&t.mask {
			t.slots[hole] = *s
			hole = j
		}
	}
	t.slots[hole] = tupleSlot{}
	t.n--
	return true
}

// len returns the number of keys stored.
func (t *tupleTable) len() int { return t.n }
