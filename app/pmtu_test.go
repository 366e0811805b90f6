package app

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPMTUCacheExpiry: an answer is kept pmtuTTL, then asked again; an
// answer not to keep is asked again at once; clear forgets everything.
func TestPMTUCacheExpiry(t *testing.T) {
	now := time.Unix(1000, 0)
	c := &pmtuCache{now: func() time.Time { return now }}
	dst := netip.MustParseAddr("10.77.0.1")
	var asked int
	query := func(mtu int, keep bool) func() (int, bool) {
		return func() (int, bool) { asked++; return mtu, keep }
	}
	if got := c.get(dst, query(1280, true), nil); got != 1280 || asked != 1 {
		t.Fatalf("miss: %d, asked %d", got, asked)
	}
	now = now.Add(pmtuTTL - time.Millisecond)
	if got := c.get(dst, query(1500, true), nil); got != 1280 || asked != 1 {
		t.Fatalf("before expiry: %d, asked %d; want the cached 1280, asked once", got, asked)
	}
	now = now.Add(time.Millisecond)
	if got := c.get(dst, query(1500, true), nil); got != 1500 || asked != 2 {
		t.Fatalf("at expiry: %d, asked %d; want 1500 asked anew", got, asked)
	}
	c.clear()
	if got := c.get(dst, query(0, false), nil); got != 0 || asked != 3 || c.len() != 0 {
		t.Fatalf("after clear, a failed query: %d, asked %d, %d entries", got, asked, c.len())
	}
	if got := c.get(dst, query(1400, true), nil); got != 1400 || asked != 4 {
		t.Fatalf("a failed query is not kept: %d, asked %d", got, asked)
	}
	// No limit known (0) is an answer too.
	other := netip.MustParseAddr("fd77::1")
	if got := c.get(other, query(0, true), nil); got != 0 || asked != 5 {
		t.Fatalf("no limit: %d, asked %d", got, asked)
	}
	if got := c.get(other, query(9000, true), nil); got != 0 || asked != 5 {
		t.Fatalf("no limit cached: %d, asked %d", got, asked)
	}
}

// TestPMTUCacheBound: the cache never holds more than pmtuEntries
// destinations; when full, the expired entries go first, and all of them
// when none expired.
func TestPMTUCacheBound(t *testing.T) {
	t0 := time.Unix(1000, 0)
	now := t0
	c := &pmtuCache{now: func() time.Time { return now }}
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	q := func() (int, bool) { return 1400, true }
	noQuery := func() (int, bool) { t.Error("asked for a cached destination"); return 0, false }
	for i := range pmtuEntries / 2 {
		c.get(addr(i), q, nil)
	}
	now = t0.Add(pmtuTTL / 2)
	for i := pmtuEntries / 2; i < pmtuEntries; i++ {
		c.get(addr(i), q, nil)
	}
	if n := c.len(); n != pmtuEntries {
		t.Fatalf("%d entries, want %d", n, pmtuEntries)
	}
	// The first half expired: one more drops those, and only those.
	now = t0.Add(pmtuTTL)
	c.get(addr(pmtuEntries), q, nil)
	if n := c.len(); n != pmtuEntries/2+1 {
		t.Fatalf("full, half expired: %d entries after one more, want %d", n, pmtuEntries/2+1)
	}
	if m := c.get(addr(pmtuEntries-1), noQuery, nil); m != 1400 {
		t.Fatalf("a live entry: %d", m)
	}
	// Full of live entries: one more starts over.
	for i := pmtuEntries + 1; c.len() < pmtuEntries; i++ {
		c.get(addr(i), q, nil)
	}
	c.get(addr(3*pmtuEntries), q, nil)
	if n := c.len(); n != 1 {
		t.Fatalf("full of live entries: %d entries after one more, want 1", n)
	}
}

// TestPMTUCacheOneQuery: concurrent writers to one destination ask once.
func TestPMTUCacheOneQuery(t *testing.T) {
	var c pmtuCache
	dst := netip.MustParseAddr("10.77.0.1")
	var asked atomic.Int32
	release := make(chan struct{})
	query := func() (int, bool) {
		asked.Add(1)
		<-release
		return 1280, true
	}
	var wg sync.WaitGroup
	got := make([]int, 16)
	for i := range got {
		wg.Go(func() { got[i] = c.get(dst, query, nil) })
	}
	// Let them all reach the cache (they wait for the first query).
	for deadline := time.Now().Add(5 * time.Second); asked.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := asked.Load(); n != 1 {
		t.Fatalf("asked %d times, want once", n)
	}
	for i, m := range got {
		if m != 1280 {
			t.Fatalf("caller %d got %d", i, m)
		}
	}
	// A waiter whose stop fires knows no limit.
	c.clear()
	block := make(chan struct{})
	go c.get(dst, func() (int, bool) { <-block; return 1280, true }, nil)
	for deadline := time.Now().Add(5 * time.Second); c.len() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	stop := make(chan struct{})
	close(stop)
	if m := c.get(dst, func() (int, bool) { t.Error("asked while another query is in flight"); return 0, false }, stop); m != 0 {
		t.Fatalf("stopped waiter got %d", m)
	}
	close(block)
}

// TestCheckPathSmall: datagrams that fit the minimum MTU of their family
// never touch the cache nor allocate.
func TestCheckPathSmall(t *testing.T) {
	a := &App{askMTU: true}
	var c pmtuCache
	var h half
	for _, tc := range []struct {
		dst string
		n   int
	}{{"10.77.0.1", minMTU4 - 28}, {"fd77::1", minMTU6 - 48}, {"::ffff:10.77.0.1", minMTU4 - 28}} {
		dst := netip.MustParseAddr(tc.dst)
		allocs := testing.AllocsPerRun(100, func() {
			if err := a.checkPath(&c, 1, dst, tc.n, &h, nil); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 || c.len() != 0 {
			t.Fatalf("%s, %d bytes: %v allocations, %d cache entries", tc.dst, tc.n, allocs, c.len())
		}
	}
}
