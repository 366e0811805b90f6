package reasm

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/xsessiond/xsessiond/flow"
)

// model is a plain re-implementation of the reassembly rules, written for
// clarity over speed: maps and slices, every run kept in a slice searched
// in full, no pool. The fuzz target holds the Reassembler to it.
type model struct {
	maxDatagrams, maxFragments int
	timeout, timeout6          int64
	queues                     map[Key]*modelQueue
	order                      []Key // keys in creation order
	done                       int   // completed datagrams not yet released
}

type modelQueue struct {
	created         int64
	length          int
	firstIn, lastIn bool
	tooLong         bool
	meat            int
	nfrags          int
	runs            [][2]int // [start, end) of every run, in no order
	tailRun         int      // index in runs of the run holding the highest fragment
	data            []byte
}

func newModel(maxDatagrams, maxFragments int, timeout, timeout6 int64) *model {
	return &model{maxDatagrams: maxDatagrams, maxFragments: maxFragments, timeout: timeout, timeout6: timeout6, queues: map[Key]*modelQueue{}}
}

func (m *model) removeKey(k Key) {
	delete(m.queues, k)
	m.order = slices.DeleteFunc(m.order, func(o Key) bool { return o == k })
}

func (m *model) add(k Key, offset int, more bool, data []byte, maxEnd int, now int64) ([]byte, Result) {
	if offset == 0 && !more {
		return data, Done
	}
	if offset < 0 || offset > 65535 || offset%8 != 0 {
		return nil, BadFragment
	}
	end := offset + len(data)
	v6 := k.Family == flow.Family6
	if more && end%8 != 0 {
		if v6 {
			return nil, BadFragment
		}
		end = end / 8 * 8
		data = data[:end-offset]
	}
	if v6 && end > 65535 {
		return nil, TooLong
	}
	q := m.queues[k]
	if q == nil {
		if len(m.queues) == m.maxDatagrams {
			m.removeKey(m.order[0])
		}
		if len(m.queues)+m.done >= 2*m.maxDatagrams {
			if len(m.order) == 0 {
				return nil, NoBuffer
			}
			m.removeKey(m.order[0])
		}
		q = &modelQueue{created: now}
		m.queues[k] = q
		m.order = append(m.order, k)
	}
	kill := func(r Result) ([]byte, Result) {
		m.removeKey(k)
		return nil, r
	}
	if !more {
		if end < q.length || (q.lastIn && end != q.length) {
			return kill(Corrupt)
		}
		q.lastIn = true
		q.length = end
	} else if end > q.length {
		if q.lastIn {
			return kill(Corrupt)
		}
		q.length = end
	}
	if end == offset {
		return kill(Corrupt)
	}
	// Runs, as inet_frag_queue_insert keeps them.
	appendTo := -1
	if len(q.runs) > 0 {
		tailEnd := q.runs[q.tailRun][1]
		if tailEnd < end {
			if offset < tailEnd {
				return kill(Overlap)
			}
			if offset == tailEnd {
				appendTo = q.tailRun
			}
		} else {
			for _, rn := range q.runs {
				if end <= rn[0] || offset >= rn[1] {
					continue
				}
				if offset >= rn[0] && end <= rn[1] {
					return nil, Duplicate
				}
				return kill(Overlap)
			}
		}
		if appendTo < 0 && tailEnd >= end {
			q.runs = append(q.runs, [2]int{offset, end})
		}
	}
	if q.nfrags+1 > m.maxFragments {
		return kill(TooManyFragments)
	}
	q.nfrags++
	switch {
	case len(q.runs) == 0:
		q.runs = append(q.runs, [2]int{offset, end})
		q.tailRun = 0
	case appendTo >= 0:
		q.runs[appendTo][1] = end
	case q.runs[q.tailRun][1] < end:
		q.runs = append(q.runs, [2]int{offset, end})
		q.tailRun = len(q.runs) - 1
	}
	if end > maxEnd {
		q.tooLong = true
	}
	if len(q.data) < end {
		q.data = append(q.data, make([]byte, end-len(q.data))...)
	}
	copy(q.data[offset:], data)
	q.meat += end - offset
	if offset == 0 {
		q.firstIn = true
	}
	if q.firstIn && q.lastIn && q.meat == q.length {
		m.removeKey(k)
		if q.tooLong {
			return nil, TooLong
		}
		m.done++
		return q.data[:q.length], Done
	}
	return nil, Pending
}

func (m *model) expire(now int64) int {
	n := 0
	for _, k := range slices.Clone(m.order) {
		timeout := m.timeout
		if k.Family == flow.Family6 {
			timeout = m.timeout6
		}
		if now-m.queues[k].created >= timeout {
			m.removeKey(k)
			n++
		}
	}
	return n
}

func (m *model) held() int {
	n := 0
	for _, q := range m.queues {
		n += q.meat
	}
	return n
}

// fuzzKeys are the datagrams the fuzz target's fragments belong to.
var fuzzKeys = [4]Key{
	{Src: [16]byte{10, 0, 0, 1}, Dst: [16]byte{10, 0, 0, 2}, ID: 1, Ifindex: 2, Family: flow.Family4, Proto: 17},
	{Src: [16]byte{10, 0, 0, 1}, Dst: [16]byte{10, 0, 0, 2}, ID: 2, Ifindex: 2, Family: flow.Family4, Proto: 17},
	{Src: [16]byte{0xfd, 0, 15: 1}, Dst: [16]byte{0xfd, 0, 15: 2}, ID: 1, Ifindex: 2, Family: flow.Family6},
	{Src: [16]byte{0xfd, 0, 15: 1}, Dst: [16]byte{0xfd, 0, 15: 2}, ID: 0x10001, Ifindex: 2, Family: flow.Family6},
}

// fuzzFrag is one fragment the fuzz target adds.
type fuzzFrag struct {
	key    int
	offset int
	more   bool
	data   []byte
	maxEnd int
}

// fuzzData returns n bytes that differ from one call to the next, so that
// bytes taken from the wrong fragment show.
func fuzzData(n int, tag int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(tag*31 + i*7 + i>>8)
	}
	return b
}

func defaultMaxEnd(key int) int {
	if fuzzKeys[key].Family == flow.Family6 {
		return 65535 - 8
	}
	return 65535 - 20
}

// FuzzReassembly drives a Reassembler and the model with the same
// operations, read from the input, and compares every outcome.
func FuzzReassembly(f *testing.F) {
	f.Add([]byte{5, 0, 0x23, 0x28, 20, 1, 5, 2, 0x10, 0, 9, 3, 6})
	f.Add([]byte{5, 1, 0x01, 0x00, 2, 7, 0, 1, 0, 10, 1, 0, 1, 8, 9, 0, 0, 1, 6, 7, 200})
	f.Add([]byte{0, 0, 0, 16, 1, 0, 0, 2, 16, 1, 0, 0, 1, 8, 1, 0, 0, 3, 7, 0})
	f.Add([]byte{0, 2, 0, 13, 1, 0, 2, 2, 16, 0, 0, 2, 0, 3, 0x40, 5, 3, 0x11, 0x11, 40, 3})
	f.Add([]byte{5, 3, 0xff, 0xf0, 63, 99, 5, 2, 0x80, 0, 0, 1, 6, 5, 0, 0x10, 0, 31, 0})
	f.Add([]byte{0, 0, 20, 9, 0x21, 0, 0, 0, 100, 0x11, 0, 1, 0, 3, 0, 7, 50, 0, 0, 1, 25, 30, 0})
	f.Fuzz(func(t *testing.T, in []byte) { runModel(t, in, nil) })
}

// TestModelRandom runs the fuzz target's operations on random inputs and
// checks that they reach every Result.
func TestModelRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var seen [NumResults]int
	for range 1000 {
		in := make([]byte, rng.IntN(400))
		for i := range in {
			in[i] = byte(rng.Uint32())
		}
		runModel(t, in, &seen)
	}
	for res, n := range seen {
		if n == 0 {
			t.Errorf("%v never returned", Result(res))
		}
	}
	t.Logf("results: %v", seen)
}

// runModel reads operations from in, applies them to a Reassembler and to
// the model, and fails t when they disagree. It counts the results in seen
// when seen is not nil.
func runModel(t testing.TB, in []byte, seen *[NumResults]int) {
	const timeout, timeout6 = 1000, 1500
	if len(in) > 400 {
		in = in[:400] // enough operations to reach every bound, few enough to stay fast
	}
	r := New(Config{MaxDatagrams: 3, MaxFragments: 8, Timeout: timeout, Timeout6: timeout6})
	m := newModel(3, 8, timeout, timeout6)
	var now int64
	type held struct{ got, want []byte }
	var outstanding []held
	check := func() {
		for i, h := range outstanding {
			if !bytes.Equal(h.got, h.want) {
				t.Fatalf("completed datagram %d changed before Release", i)
			}
		}
	}
	next := func() byte {
		if len(in) == 0 {
			return 0
		}
		b := in[0]
		in = in[1:]
		return b
	}
	tag := 0
	var frags []fuzzFrag
	for len(in) > 0 {
		op := next()
		frags = frags[:0]
		switch op % 8 {
		case 0, 1, 2, 3, 4:
			key := int(next() % 4)
			o, l, fl := next(), next(), next()
			offset := int(o%40) * 8
			if fl&0x10 != 0 {
				offset = 65536 - 8*(int(o%16)+1)
			}
			n := int(l)
			if fl&0x20 != 0 {
				n = int(l)*8 + int(fl&7)
			}
			maxEnd := defaultMaxEnd(key)
			if fl&0x40 != 0 {
				maxEnd = 200
			}
			tag++
			frags = append(frags, fuzzFrag{key, offset, fl&1 != 0, fuzzData(n, tag), maxEnd})
		case 5:
			key := int(next() % 4)
			total := int(binary.BigEndian.Uint16([]byte{next(), next()}))%5000 + 1
			size := 8 * (int(next()%64) + 1)
			seed := next()
			tag++
			d := fuzzData(total, tag)
			for off := 0; off < total; off += size {
				e := min(off+size, total)
				frags = append(frags, fuzzFrag{key, off, e < total, d[off:e], defaultMaxEnd(key)})
			}
			if seed != 0 {
				rng := rand.New(rand.NewPCG(uint64(seed), 1))
				rng.Shuffle(len(frags), func(i, j int) { frags[i], frags[j] = frags[j], frags[i] })
			}
		case 6:
			if next()%4 != 0 {
				break // Release one time in four: completed datagrams pile up to the bound
			}
			check()
			outstanding = outstanding[:0]
			r.Release()
			m.done = 0
		case 7:
			now += int64(next()) * 10
			if got, want := r.Expire(now), m.expire(now); got != want {
				t.Fatalf("Expire(%d) = %d, model %d", now, got, want)
			}
		}
		for _, fr := range frags {
			now++
			k := fuzzKeys[fr.key]
			got, gres := r.Add(&k, fr.offset, fr.more, fr.data, fr.maxEnd, now)
			want, wres := m.add(k, fr.offset, fr.more, fr.data, fr.maxEnd, now)
			if gres != wres {
				t.Fatalf("Add(key %d, offset %d, more %v, %d bytes, maxEnd %d) = %v, model %v",
					fr.key, fr.offset, fr.more, len(fr.data), fr.maxEnd, gres, wres)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Add(key %d, offset %d, more %v, %d bytes): datagram differs from model (%d vs %d bytes)",
					fr.key, fr.offset, fr.more, len(fr.data), len(got), len(want))
			}
			if seen != nil {
				seen[gres]++
			}
			if gres == Done {
				outstanding = append(outstanding, held{got, bytes.Clone(got)})
			}
			st := r.Stats()
			if st.InFlight != len(m.queues) || st.Held != m.held() {
				t.Fatalf("in flight %d, held %d; model %d, %d", st.InFlight, st.Held, len(m.queues), m.held())
			}
		}
	}
	check()
	st := r.Stats()
	if st.InFlight > 3 || r.nbufs > 6 {
		t.Fatalf("bounds exceeded: %d in flight, %d buffers", st.InFlight, r.nbufs)
	}
}
