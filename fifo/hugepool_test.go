package fifo_test

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// hugeCounts reads HugePages_Total, HugePages_Free and HugePages_Rsvd
// from /proc/meminfo.
func hugeCounts(t *testing.T) (total, free, rsvd int) {
	t.Helper()
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "HugePages_Total:"); ok {
			total, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if v, ok := strings.CutPrefix(l, "HugePages_Free:"); ok {
			free, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if v, ok := strings.CutPrefix(l, "HugePages_Rsvd:"); ok {
			rsvd, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return total, free, rsvd
}

// TestSegmentHugePagesPool: with a small pool of huge pages, segments
// take them while the pool lasts and the next falls back to normal pages
// at creation, with the reason; every byte of a huge segment can be
// written from both mappings (the pages were reserved when it was mapped,
// so no access faults with SIGBUS later), and closing the segments gives
// every page back. The pool is grown or shrunk through
// /proc/sys/vm/nr_hugepages so that exactly pages of it are available
// (free and not reserved), beside whatever others hold, and restored.
func TestSegmentHugePagesPool(t *testing.T) {
	nstest.RequirePrivileged(t)
	const knob = "/proc/sys/vm/nr_hugepages"
	old, err := os.ReadFile(knob)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(knob, old, 0) })
	const pages = 4
	total, free, rsvd := hugeCounts(t)
	inUse := total - (free - rsvd) // held or promised to others
	if err := os.WriteFile(knob, []byte(strconv.Itoa(inUse+pages)), 0); err != nil {
		t.Fatalf("set %s: %v", knob, err)
	}
	available := func() int { _, f, r := hugeCounts(t); return f - r }
	if a := available(); a != pages {
		t.Fatalf("asked for %d huge pages beside the %d in use, the kernel has %d available", pages, inUse, a)
	}
	// Run after the segments and the peers' mappings are gone (cleanups
	// run last first), before the pool is restored.
	t.Cleanup(func() {
		if a := available(); a != pages {
			t.Errorf("after closing every segment: %d huge pages available; want %d", a, pages)
		}
	})
	const size = 2 * 2 << 20 // two huge pages a segment
	var segs []*fifo.Segment
	defer func() {
		for _, s := range segs {
			s.Close()
		}
	}()
	for i := range pages / 2 {
		s, err := fifo.CreateSegment(fifo.SegmentOptions{Name: "huge-pool", Size: size, HugePages: true})
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, s)
		if !s.HugePages() {
			t.Fatalf("segment %d: normal pages with %d huge ones for it: %v", i, pages, s.HugePagesErr())
		}
	}
	t.Logf("after %d segments: %d huge pages available", len(segs), available())
	s, err := fifo.CreateSegment(fifo.SegmentOptions{Name: "huge-pool-empty", Size: size, HugePages: true})
	if err != nil {
		t.Fatalf("a segment with the pool taken: %v; want normal pages", err)
	}
	segs = append(segs, s)
	if s.HugePages() || s.HugePagesErr() == nil {
		t.Fatalf("a segment with the pool taken: huge %v (%v); want normal pages and the reason", s.HugePages(), s.HugePagesErr())
	}
	t.Logf("fallback: %v", s.HugePagesErr())
	for i, s := range segs[:pages/2] {
		m := mapPeer(t, s)
		own, peer := s.Bytes(), m.Bytes()
		for off := 4096; off < len(own); off += 4096 {
			peer[off] = byte(i + 1)
			if own[off] != byte(i+1) {
				t.Fatalf("segment %d: the owner reads %d at %d, the peer wrote %d", i, own[off], off, i+1)
			}
		}
		if len(own) != size {
			t.Fatalf("segment %d: %d bytes mapped, want %d", i, len(own), size)
		}
	}
	for _, s := range segs {
		s.Close()
	}
	segs = nil
}
