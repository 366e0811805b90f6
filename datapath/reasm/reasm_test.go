package reasm

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/flow"
)

var (
	key4 = Key{Src: [16]byte{192, 0, 2, 1}, Dst: [16]byte{192, 0, 2, 2}, ID: 0x1234, Ifindex: 3, Family: flow.Family4, Proto: 17}
	key6 = Key{Src: [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}, Dst: [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 2}, ID: 0xdeadbeef, Ifindex: 3, Family: flow.Family6}
)

const (
	maxEnd4 = 65535 - 20
	maxEnd6 = 65535
)

// frag is one fragment of a test datagram.
type frag struct {
	off  int
	more bool
	data []byte
}

// split cuts d into fragments of size bytes (a multiple of 8), the last
// one shorter.
func split(d []byte, size int) []frag {
	var fs []frag
	for off := 0; off < len(d); off += size {
		end := min(off+size, len(d))
		fs = append(fs, frag{off, end < len(d), d[off:end]})
	}
	return fs
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i) + byte(i>>8)*3
	}
	return b
}

func maxEndOf(k *Key) int {
	if k.Family == flow.Family6 {
		return maxEnd6
	}
	return maxEnd4
}

// feed adds fs in order and returns the last outcome, failing when any
// fragment but the last does not return Pending.
func feed(t *testing.T, r *Reassembler, k *Key, fs []frag) ([]byte, Result) {
	t.Helper()
	for i, f := range fs {
		got, res := r.Add(k, f.off, f.more, f.data, maxEndOf(k), 0)
		if i == len(fs)-1 {
			return got, res
		}
		if res != Pending {
			t.Fatalf("fragment %d (offset %d): %v, want %v", i, f.off, res, Pending)
		}
	}
	return nil, Pending
}

func TestCleanSplit(t *testing.T) {
	for _, k := range []Key{key4, key6} {
		d := pattern(9000, 1)
		orders := map[string]func([]frag) []frag{
			"in-order": func(fs []frag) []frag { return fs },
			"reverse": func(fs []frag) []frag {
				out := make([]frag, len(fs))
				for i, f := range fs {
					out[len(fs)-1-i] = f
				}
				return out
			},
			"random": func(fs []frag) []frag {
				rng := rand.New(rand.NewPCG(7, 7))
				rng.Shuffle(len(fs), func(i, j int) { fs[i], fs[j] = fs[j], fs[i] })
				return fs
			},
		}
		for name, order := range orders {
			t.Run(name, func(t *testing.T) {
				r := New(Config{})
				fs := order(split(d, 1480))
				got, res := feed(t, r, &k, fs)
				if res != Done || !bytes.Equal(got, d) {
					t.Fatalf("family %d: %v, %d bytes equal=%v", k.Family, res, len(got), bytes.Equal(got, d))
				}
				st := r.Stats()
				if st.Fragments != uint64(len(fs)) || st.Reassembled != 1 || st.InFlight != 0 || st.Held != 0 {
					t.Fatalf("stats %+v", st)
				}
			})
		}
	}
}

func TestDuplicates(t *testing.T) {
	d := pattern(4000, 2)
	fs := split(d, 1000) // 0-1000, 1000-2000, 2000-3000, 3000-4000
	r := New(Config{})
	k := key4
	add := func(off int, more bool, data []byte) Result {
		_, res := r.Add(&k, off, more, data, maxEnd4, 0)
		return res
	}
	if res := add(fs[0].off, true, fs[0].data); res != Pending {
		t.Fatal(res)
	}
	if res := add(fs[1].off, true, fs[1].data); res != Pending {
		t.Fatal(res)
	}
	// Exact duplicate of the tail and one contained in the run 0-2000
	// (the tail was appended to it).
	if res := add(1000, true, d[1000:2000]); res != Duplicate {
		t.Fatalf("exact duplicate: %v", res)
	}
	if res := add(504, true, make([]byte, 1000)); res != Duplicate {
		t.Fatalf("contained duplicate: %v", res)
	}
	// A contained duplicate with other bytes is still ignored: the bytes
	// held win.
	if res := add(fs[3].off, false, fs[3].data); res != Pending {
		t.Fatal(res)
	}
	if res := add(3000, false, fs[3].data); res != Duplicate {
		t.Fatalf("last duplicate: %v", res)
	}
	got, res := r.Add(&k, fs[2].off, true, fs[2].data, maxEnd4, 0)
	if res != Done || !bytes.Equal(got, d) {
		t.Fatalf("%v equal=%v", res, bytes.Equal(got, d))
	}
	if st := r.Stats(); st.Duplicates != 3 || st.Killed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOverlapKills(t *testing.T) {
	cases := []struct {
		name string
		fs   []frag
	}{
		{"tail", []frag{{0, true, make([]byte, 16)}, {8, true, make([]byte, 16)}}},
		{"into-run", []frag{{16, true, make([]byte, 16)}, {40, true, make([]byte, 8)}, {8, true, make([]byte, 16)}}},
		// Adjacent fragments that arrived out of order are separate runs:
		// one spanning both overlaps.
		{"across-runs", []frag{{32, true, make([]byte, 16)}, {16, true, make([]byte, 16)}, {0, true, make([]byte, 16)}, {8, true, make([]byte, 16)}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := New(Config{})
			k := key6
			_, res := feed(t, r, &k, c.fs)
			if res != Overlap {
				t.Fatalf("%v, want %v", res, Overlap)
			}
			st := r.Stats()
			if st.InFlight != 0 || st.Killed != 1 || st.Drops[Overlap] != 1 {
				t.Fatalf("stats %+v", st)
			}
			// The key starts afresh.
			if _, res := r.Add(&k, 8, true, make([]byte, 8), maxEnd6, 0); res != Pending {
				t.Fatalf("after kill: %v", res)
			}
		})
	}
}

func TestLastFragmentRules(t *testing.T) {
	k := key4
	t.Run("second-last-other-end", func(t *testing.T) {
		r := New(Config{})
		_, _ = r.Add(&k, 16, false, make([]byte, 8), maxEnd4, 0)
		if _, res := r.Add(&k, 32, false, make([]byte, 8), maxEnd4, 0); res != Corrupt {
			t.Fatal(res)
		}
	})
	t.Run("last-before-held-data", func(t *testing.T) {
		r := New(Config{})
		_, _ = r.Add(&k, 64, true, make([]byte, 16), maxEnd4, 0)
		if _, res := r.Add(&k, 8, false, make([]byte, 8), maxEnd4, 0); res != Corrupt {
			t.Fatal(res)
		}
	})
	t.Run("beyond-last-end", func(t *testing.T) {
		r := New(Config{})
		_, _ = r.Add(&k, 16, false, make([]byte, 8), maxEnd4, 0)
		if _, res := r.Add(&k, 24, true, make([]byte, 8), maxEnd4, 0); res != Corrupt {
			t.Fatal(res)
		}
		if st := r.Stats(); st.InFlight != 0 || st.Killed != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("empty", func(t *testing.T) {
		r := New(Config{})
		_, _ = r.Add(&k, 16, true, make([]byte, 8), maxEnd4, 0)
		if _, res := r.Add(&k, 8, true, nil, maxEnd4, 0); res != Corrupt {
			t.Fatal(res)
		}
		if r.Stats().InFlight != 0 {
			t.Fatal("queue kept")
		}
	})
}

func TestUnalignedMoreFragments(t *testing.T) {
	t.Run("ipv4-cut", func(t *testing.T) {
		r := New(Config{})
		k := key4
		d := pattern(40, 3)
		// 21 bytes with more following: cut to 16, the rest ignored.
		if _, res := r.Add(&k, 0, true, append(bytes.Clone(d[:16]), 0xee, 0xee, 0xee, 0xee, 0xee), maxEnd4, 0); res != Pending {
			t.Fatal(res)
		}
		got, res := r.Add(&k, 16, false, d[16:], maxEnd4, 0)
		if res != Done || !bytes.Equal(got, d) {
			t.Fatalf("%v % x", res, got)
		}
	})
	t.Run("ipv4-cut-to-empty", func(t *testing.T) {
		r := New(Config{})
		k := key4
		if _, res := r.Add(&k, 8, true, make([]byte, 5), maxEnd4, 0); res != Corrupt {
			t.Fatal(res)
		}
	})
	t.Run("ipv6-dropped", func(t *testing.T) {
		r := New(Config{})
		k := key6
		d := pattern(48, 4)
		if _, res := r.Add(&k, 0, true, d[:16], maxEnd6, 0); res != Pending {
			t.Fatal(res)
		}
		if _, res := r.Add(&k, 16, true, d[16:37], maxEnd6, 0); res != BadFragment {
			t.Fatal(res)
		}
		// The kernel answers with a parameter problem and keeps the
		// queue: the datagram still completes.
		if _, res := r.Add(&k, 16, true, d[16:32], maxEnd6, 0); res != Pending {
			t.Fatal(res)
		}
		got, res := r.Add(&k, 32, false, d[32:], maxEnd6, 0)
		if res != Done || !bytes.Equal(got, d) {
			t.Fatal(res)
		}
		if st := r.Stats(); st.Drops[BadFragment] != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestTooLong(t *testing.T) {
	t.Run("ipv4", func(t *testing.T) {
		r := New(Config{})
		k := key4
		me := 65535 - 60 // a 60-byte IPv4 header
		if _, res := r.Add(&k, 0, true, make([]byte, 8), me, 0); res != Pending {
			t.Fatal(res)
		}
		// Ends beyond the limit: kept, as the kernel keeps it, but the
		// datagram cannot be delivered.
		if _, res := r.Add(&k, 65528-64, false, make([]byte, 100), me, 0); res != Pending {
			t.Fatal(res)
		}
		if _, res := r.Add(&k, 8, true, make([]byte, 65528-64-8), me, 0); res != TooLong {
			t.Fatal(res)
		}
		if st := r.Stats(); st.InFlight != 0 || st.Killed != 1 || st.Drops[TooLong] != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("ipv4-beyond-buffer", func(t *testing.T) {
		r := New(Config{})
		k := key4
		if _, res := r.Add(&k, 65528, true, make([]byte, 1480), maxEnd4, 0); res != Pending {
			t.Fatal(res)
		}
	})
	t.Run("ipv6", func(t *testing.T) {
		r := New(Config{})
		k := key6
		if _, res := r.Add(&k, 0, true, make([]byte, 8), maxEnd6, 0); res != Pending {
			t.Fatal(res)
		}
		if _, res := r.Add(&k, 65528, false, make([]byte, 16), maxEnd6, 0); res != TooLong {
			t.Fatal(res)
		}
		if st := r.Stats(); st.InFlight != 1 || st.Killed != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestTooManyFragments(t *testing.T) {
	r := New(Config{MaxFragments: 4})
	k := key4
	for i := range 4 {
		if _, res := r.Add(&k, i*8, true, make([]byte, 8), maxEnd4, 0); res != Pending {
			t.Fatal(i, res)
		}
	}
	if _, res := r.Add(&k, 32, false, make([]byte, 8), maxEnd4, 0); res != TooManyFragments {
		t.Fatal(res)
	}
	// Four fragments do complete.
	d := pattern(32, 9)
	if got, res := feed(t, r, &k, split(d, 8)); res != Done || !bytes.Equal(got, d) {
		t.Fatal(res)
	}
}

// TestLargestDatagramAtMinimumPMTU: with the defaults, the largest UDP
// datagram over IPv4 arrives whole when cut for Linux's smallest path MTU
// (min_pmtu, 552 bytes: 528 bytes of payload a fragment, 125 fragments),
// as Linux, which bounds only the memory, reassembles it.
func TestLargestDatagramAtMinimumPMTU(t *testing.T) {
	r := New(Config{})
	k := key4
	d := pattern(65507+8, 3)
	fs := split(d, 528)
	if len(fs) < 120 {
		t.Fatalf("%d fragments", len(fs))
	}
	if got, res := feed(t, r, &k, fs); res != Done || !bytes.Equal(got, d) {
		t.Fatalf("%d fragments of 528 bytes: %v", len(fs), res)
	}
}

func TestEvictOldest(t *testing.T) {
	r := New(Config{MaxDatagrams: 4})
	k := key4
	for i := range 4 {
		k.ID = uint32(i)
		if _, res := r.Add(&k, 0, true, make([]byte, 8), maxEnd4, int64(i)); res != Pending {
			t.Fatal(res)
		}
	}
	k.ID = 99
	d := pattern(3000, 5)
	if got, res := feed(t, r, &k, split(d, 1480)); res != Done || !bytes.Equal(got, d) {
		t.Fatal(res)
	}
	st := r.Stats()
	if st.Evicted != 1 || st.InFlight != 3 {
		t.Fatalf("stats %+v", st)
	}
	// ID 0 was the oldest: it starts afresh (its second fragment alone
	// cannot complete it), the others are still there.
	k.ID = 0
	if _, res := r.Add(&k, 8, false, make([]byte, 8), maxEnd4, 10); res != Pending {
		t.Fatal(res)
	}
	k.ID = 1
	if _, res := r.Add(&k, 8, false, make([]byte, 8), maxEnd4, 10); res != Done {
		t.Fatal(res)
	}
}

func TestExpire(t *testing.T) {
	r := New(Config{Timeout: time.Second, Timeout6: time.Second})
	k := key6
	_, _ = r.Add(&k, 0, true, make([]byte, 8), maxEnd6, 100)
	k.ID++
	_, _ = r.Add(&k, 0, true, make([]byte, 8), maxEnd6, 200)
	if n := r.Expire(100 + int64(time.Second) - 1); n != 0 {
		t.Fatal(n)
	}
	if n := r.Expire(100 + int64(time.Second)); n != 1 {
		t.Fatal(n)
	}
	if n := r.Expire(1e12); n != 1 {
		t.Fatal(n)
	}
	if st := r.Stats(); st.TimedOut != 2 || st.InFlight != 0 || st.Held != 0 {
		t.Fatalf("stats %+v", st)
	}
	if n := r.Expire(2e12); n != 0 {
		t.Fatal(n)
	}
}

// TestExpireByFamily: each family's datagrams live their own timeout, as
// the kernel's ipfrag_time and ip6frag_time: an IPv6 datagram started first
// with the longer timeout holds up neither the expiry of an IPv4 one
// started after it nor its own completion.
func TestExpireByFamily(t *testing.T) {
	r := New(Config{})
	if c := r.Config(); c.Timeout != 30*time.Second || c.Timeout6 != 60*time.Second {
		t.Fatalf("defaults %v and %v, want the kernel's 30 s and 60 s", c.Timeout, c.Timeout6)
	}
	k6, k4 := key6, key4
	_, _ = r.Add(&k6, 0, true, make([]byte, 8), maxEnd6, 100)
	_, _ = r.Add(&k4, 0, true, make([]byte, 8), maxEnd4, 200)
	if n := r.Expire(200 + int64(30*time.Second) - 1); n != 0 {
		t.Fatal(n)
	}
	if n := r.Expire(200 + int64(30*time.Second)); n != 1 {
		t.Fatalf("at 30 s: %d expired, want the IPv4 datagram", n)
	}
	if _, res := r.Add(&k4, 8, false, make([]byte, 8), maxEnd4, 200+int64(30*time.Second)); res != Pending {
		t.Fatalf("the IPv4 datagram's last fragment after its timeout: %v, want it to start afresh", res)
	}
	if d, res := r.Add(&k6, 8, false, make([]byte, 8), maxEnd6, 100+int64(60*time.Second)-1); res != Done || len(d) != 16 {
		t.Fatalf("the IPv6 datagram's last fragment within 60 s: %v, %d bytes", res, len(d))
	}
	if n := r.Expire(200 + int64(60*time.Second)); n != 1 {
		t.Fatalf("at 60 s: %d expired, want the IPv4 datagram started afresh", n)
	}
	if st := r.Stats(); st.TimedOut != 2 || st.InFlight != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAfterCompletion(t *testing.T) {
	r := New(Config{})
	k := key4
	d := pattern(2000, 6)
	fs := split(d, 1000)
	if _, res := feed(t, r, &k, fs); res != Done {
		t.Fatal(res)
	}
	// A late copy of the first fragment starts a new datagram.
	if _, res := r.Add(&k, 0, true, fs[0].data, maxEnd4, 0); res != Pending {
		t.Fatal(res)
	}
	if st := r.Stats(); st.InFlight != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBufferLifetime(t *testing.T) {
	r := New(Config{MaxDatagrams: 2})
	k := key4
	d1, d2 := pattern(3000, 10), pattern(3000, 20)
	got1, res := feed(t, r, &k, split(d1, 1480))
	if res != Done {
		t.Fatal(res)
	}
	// More datagrams, complete and not, under other and the same keys:
	// the first stays intact until Release.
	k2 := k
	k2.ID++
	_, _ = r.Add(&k2, 0, true, make([]byte, 1480), maxEnd4, 0)
	got2, res := feed(t, r, &k, split(d2, 1480))
	if res != Done || !bytes.Equal(got1, d1) || !bytes.Equal(got2, d2) {
		t.Fatal("datagram changed before Release")
	}
	if r.nbufs != 3 {
		t.Fatalf("%d buffers", r.nbufs)
	}
	r.Release()
	// The released buffers are used again: no new one is allocated.
	k.ID += 10
	got3, res := feed(t, r, &k, split(d2, 1480))
	if res != Done || r.nbufs != 3 || &got3[0] != &got2[0] && &got3[0] != &got1[0] {
		t.Fatalf("%v, %d buffers", res, r.nbufs)
	}
}

func TestNoBuffer(t *testing.T) {
	r := New(Config{MaxDatagrams: 1})
	k := key4
	for i := range 2 {
		k.ID = uint32(i)
		if _, res := feed(t, r, &k, split(pattern(100, 0), 64)); res != Done {
			t.Fatal(res)
		}
	}
	k.ID = 5
	if _, res := r.Add(&k, 0, true, make([]byte, 8), maxEnd4, 0); res != NoBuffer {
		t.Fatal(res)
	}
	r.Release()
	if _, res := r.Add(&k, 0, true, make([]byte, 8), maxEnd4, 0); res != Pending {
		t.Fatal(res)
	}
}

func TestFloodMemoryBound(t *testing.T) {
	r := New(Config{})
	k := key4
	d := pattern(9000, 7)
	fs := split(d, 1480)
	completed := 0
	for i := range 10000 {
		k.ID = uint32(i)
		k.Src[3] = byte(i >> 8)
		// Every fragment but the last: never completes.
		for _, f := range fs[:len(fs)-1] {
			if _, res := r.Add(&k, f.off, f.more, f.data, maxEnd4, int64(i)); res != Pending {
				t.Fatal(res)
			}
		}
		// A legitimate datagram now and then, fragments back to back.
		if i%100 == 0 {
			k.ID |= 1 << 31
			if got, res := feed(t, r, &k, fs); res != Done || !bytes.Equal(got, d) {
				t.Fatal(res)
			}
			completed++
			if i%300 == 0 {
				r.Release()
			}
		}
		if r.nbufs*BufferSize > r.MemoryBound() {
			t.Fatalf("%d buffers allocated, bound %d bytes", r.nbufs, r.MemoryBound())
		}
	}
	st := r.Stats()
	if st.InFlight != 64 || st.Reassembled != uint64(completed) || st.Evicted != 10000-64 {
		t.Fatalf("stats %+v", st)
	}
	if st.Held != 64*6*1480 {
		t.Fatalf("held %d", st.Held)
	}
	t.Logf("%d buffers, %d bytes; bound %d", r.nbufs, r.nbufs*BufferSize, r.MemoryBound())
}

func TestNotAFragment(t *testing.T) {
	r := New(Config{})
	k := key4
	_, _ = r.Add(&k, 8, true, make([]byte, 8), maxEnd4, 0)
	d := pattern(30, 1)
	got, res := r.Add(&k, 0, false, d, maxEnd4, 0)
	if res != Done || &got[0] != &d[0] {
		t.Fatal(res)
	}
	if r.Stats().InFlight != 1 {
		t.Fatal("queue touched")
	}
}

func TestResultNames(t *testing.T) {
	seen := map[string]bool{}
	for i := range NumResults {
		s := Result(i).String()
		if s == "" || seen[s] {
			t.Fatalf("result %d: name %q", i, s)
		}
		seen[s] = true
	}
	if Overlap.String() != "reasm-overlap" || !Overlap.Dropped() || Duplicate.Dropped() {
		t.Fatal(Overlap.String())
	}
}

func TestTableChurn(t *testing.T) {
	// Many keys through a small table, removed in every order: every
	// lookup still finds its queue.
	r := New(Config{MaxDatagrams: 8})
	rng := rand.New(rand.NewPCG(1, 2))
	live := map[uint32]bool{}
	for i := range 20000 {
		k := key6
		k.ID = uint32(rng.IntN(32))
		_, res := r.Add(&k, 8*rng.IntN(2), true, make([]byte, 8), maxEnd6, int64(i))
		if live[k.ID] && res != Pending && res != Duplicate {
			t.Fatalf("step %d: %v", i, res)
		}
		live = map[uint32]bool{}
		for q := range r.queues {
			if r.queues[q].live {
				live[r.queues[q].key.ID] = true
				if r.lookup(&r.queues[q].key, r.queues[q].hash) != int32(q) {
					t.Fatalf("step %d: queue %d not found", i, q)
				}
			}
		}
	}
}

func TestAddAllocations(t *testing.T) {
	r := New(Config{})
	fs := benchFrames()
	k := key4
	run := func() {
		k.ID++
		for i, f := range fs {
			if _, res := r.Add(&k, i*1480, i < len(fs)-1, f, maxEnd4, 0); res == Pending || res == Done {
				continue
			}
			t.Fatal("dropped")
		}
		r.Release()
	}
	for range 10 {
		run()
	}
	if n := testing.AllocsPerRun(1000, run); n != 0 {
		t.Fatalf("%v allocations per datagram", n)
	}
}
