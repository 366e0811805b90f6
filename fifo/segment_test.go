package fifo_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
)

func dup(t *testing.T, fd int) int {
	t.Helper()
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mapPeer(t *testing.T, s *fifo.Segment) *fifo.Segment {
	t.Helper()
	fd := dup(t, s.FD())
	m, err := fifo.MapSegment(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestSegmentCreateSealMap(t *testing.T) {
	s, err := fifo.CreateSegment(fifo.SegmentOptions{Name: "app1", Size: 10000})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Size() != 12288 || !s.Owned() || s.FD() < 0 {
		t.Fatalf("size %d owned %v fd %d", s.Size(), s.Owned(), s.FD())
	}
	seals, err := unix.FcntlInt(uintptr(s.FD()), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL; seals&want != want {
		t.Fatalf("seals %#x, want %#x", seals, want)
	}
	if err := unix.Ftruncate(s.FD(), 4096); err == nil {
		t.Fatal("a sealed segment could be shrunk")
	}
	if flags, _ := unix.FcntlInt(uintptr(s.FD()), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
		t.Fatal("segment fd is not close-on-exec")
	}
	f, err := s.AllocFifo(4096)
	if err != nil {
		t.Fatal(err)
	}
	f.Enqueue([]byte("hello"))

	m := mapPeer(t, s)
	if m.Owned() || m.Name() != "app1" || m.Size() != s.Size() {
		t.Fatalf("mapped: owned %v name %q size %d", m.Owned(), m.Name(), m.Size())
	}
	g, err := m.FifoAt(f.Offset())
	if err != nil {
		t.Fatal(err)
	}
	if g.Size() != 4096 {
		t.Fatalf("mapped fifo size %d", g.Size())
	}
	buf := make([]byte, 10)
	if n, _ := g.Dequeue(buf); string(buf[:n]) != "hello" {
		t.Fatalf("read %q through the second mapping", buf[:n])
	}
	if _, err := m.AllocFifo(64); !errors.Is(err, fifo.ErrNotOwner) {
		t.Fatalf("alloc in a mapped segment: %v", err)
	}
	if u := f.MaxEnqueue(); u != 4096 {
		t.Fatalf("owner does not see the peer's dequeue: %d free", u)
	}
}

// mapsLine finds the /proc/self/maps line of the mapping holding addr, and
// the lines before and after it.
func mapsLines(t *testing.T, addr uintptr) (before, at, after string) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for i, l := range lines {
		rng, _, _ := strings.Cut(l, " ")
		lo, hi, _ := strings.Cut(rng, "-")
		a, _ := strconv.ParseUint(lo, 16, 64)
		b, _ := strconv.ParseUint(hi, 16, 64)
		if uint64(addr) >= a && uint64(addr) < b {
			if i > 0 {
				before = lines[i-1]
			}
			if i+1 < len(lines) {
				after = lines[i+1]
			}
			return before, l, after
		}
	}
	t.Fatalf("no mapping holds %#x", addr)
	return
}

func addrOf(b []byte) uintptr {
	var a uintptr
	fmt.Sscanf(fmt.Sprintf("%p", &b[0]), "0x%x", &a)
	return a
}

func TestSegmentGuardPagesAndNoDump(t *testing.T) {
	s, err := fifo.CreateSegment(fifo.SegmentOptions{Name: "guard", Size: 1 << 16, NoDump: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lo := addrOf(s.Bytes())
	before, at, after := mapsLines(t, lo)
	if !strings.Contains(at, " rw-s ") || !strings.Contains(at, "memfd:xsessiond:guard") {
		t.Fatalf("segment mapping: %q", at)
	}
	for _, g := range []string{before, after} {
		if !strings.Contains(g, " ---p ") {
			t.Fatalf("no guard around the segment: %q / %q / %q", before, at, after)
		}
	}
	// VmFlags of the segment's mapping carry "dd" (do not dump).
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		l := sc.Text()
		if l == at {
			in = true
		}
		if in && strings.HasPrefix(l, "VmFlags:") {
			if !strings.Contains(l, " dd") {
				t.Fatalf("NoDump segment without dd: %q", l)
			}
			return
		}
	}
	t.Fatal("segment not found in smaps")
}

func TestSegmentHugePages(t *testing.T) {
	s, err := fifo.CreateSegment(fifo.SegmentOptions{Name: "huge", Size: 1 << 20, HugePages: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	free := 0
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "HugePages_Free:"); ok {
				free, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
	}
	t.Logf("huge pages free: %d; segment huge: %v (fallback: %v)", free, s.HugePages(), s.HugePagesErr())
	if s.HugePages() == (s.HugePagesErr() != nil) {
		t.Fatalf("HugePages %v with HugePagesErr %v", s.HugePages(), s.HugePagesErr())
	}
	if free == 0 && s.HugePages() {
		t.Fatal("huge pages with none free")
	}
	f, err := s.AllocFifo(4096)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.Enqueue(make([]byte, 100)); n != 100 || err != nil {
		t.Fatal(n, err)
	}
	m := mapPeer(t, s)
	if m.HugePages() != s.HugePages() {
		t.Fatalf("mapped side sees huge %v, owner %v", m.HugePages(), s.HugePages())
	}
}

func TestMapSegmentRejects(t *testing.T) {
	memfd := func(t *testing.T, size int, seal bool, init func([]byte)) int {
		fd, err := unix.MemfdCreate("t", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		unix.Ftruncate(fd, int64(size))
		if init != nil {
			b := make([]byte, fifo.SegmentHeaderSize)
			init(b)
			unix.Pwrite(fd, b, 0)
		}
		if seal {
			unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW)
		}
		return fd
	}
	good := func(b []byte) {
		s := fifotest.Segment(t, 4096)
		copy(b, s.Bytes()[:fifo.SegmentHeaderSize])
	}
	cases := []struct {
		name string
		fd   func(t *testing.T) int
	}{
		{"unsealed", func(t *testing.T) int { return memfd(t, 4096, false, good) }},
		{"zero", func(t *testing.T) int { return memfd(t, 4096, true, nil) }},
		{"small", func(t *testing.T) int { return memfd(t, 100, true, good) }},
		{"size-mismatch", func(t *testing.T) int { return memfd(t, 8192, true, good) }},
		{"version", func(t *testing.T) int {
			return memfd(t, 4096, true, func(b []byte) { good(b); b[fifo.SegOffVersion] = 9 })
		}},
		{"alloc-start", func(t *testing.T) int {
			return memfd(t, 4096, true, func(b []byte) { good(b); b[fifo.SegOffAllocStart] = 0 })
		}},
		{"pipe", func(t *testing.T) int {
			var p [2]int
			unix.Pipe2(p[:], unix.O_CLOEXEC)
			t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
			return p[0]
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fd := c.fd(t)
			s, err := fifo.MapSegment(fd)
			if err == nil {
				s.Close()
				t.Fatal("accepted")
			}
			t.Log(err)
		})
	}
}

func TestFifoAtValidates(t *testing.T) {
	s := fifotest.MemfdSegment(t, 1<<16)
	f, _ := s.AllocFifo(1024)
	m := mapPeer(t, s)
	for _, off := range []uint32{0, 64, f.Offset() + 1, f.Offset() + 64, uint32(s.Size()), uint32(s.Size()) - 64, ^uint32(0) &^ 63} {
		if _, err := m.FifoAt(off); !errors.Is(err, fifo.ErrBadFifo) {
			t.Errorf("FifoAt(%d): %v", off, err)
		}
	}
	if _, err := s.FifoAt(f.Offset() + 64); !errors.Is(err, fifo.ErrBadFifo) {
		t.Errorf("owner FifoAt of an unallocated offset: %v", err)
	}
	hdr := fifotest.Header(f)
	put := func(off int, v uint32) {
		hdr[off], hdr[off+1], hdr[off+2], hdr[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	for _, size := range []uint32{0, 1000, 32, 1 << 31, 1 << 16} {
		put(fifo.FifoOffSize, size)
		if _, err := m.FifoAt(f.Offset()); !errors.Is(err, fifo.ErrBadFifo) {
			t.Errorf("mapped FifoAt with size %d: %v", size, err)
		}
		// The owner never re-reads the size.
		if g, err := s.FifoAt(f.Offset()); err != nil || g.Size() != 1024 {
			t.Errorf("owner FifoAt with size %d in the header: %v", size, err)
		}
	}
	put(fifo.FifoOffSize, 1024)
	put(fifo.FifoOffSelf, 0)
	if _, err := m.FifoAt(f.Offset()); !errors.Is(err, fifo.ErrBadFifo) {
		t.Errorf("wrong self offset: %v", err)
	}
	put(fifo.FifoOffSelf, f.Offset())
	fifotest.SetTail(f, 2000)
	if _, err := m.FifoAt(f.Offset()); !errors.Is(err, fifo.ErrBadFifo) {
		t.Errorf("inconsistent indices: %v", err)
	}
	fifotest.SetTail(f, 0)
	if _, err := m.FifoAt(f.Offset()); err != nil {
		t.Errorf("repaired header: %v", err)
	}
	s.FreeFifo(f)
	if _, err := m.FifoAt(f.Offset()); !errors.Is(err, fifo.ErrBadFifo) {
		t.Errorf("freed fifo: %v", err)
	}
}

func TestAllocFree(t *testing.T) {
	s := fifotest.Segment(t, 1<<16)
	if _, err := s.AllocFifo(1000); !errors.Is(err, fifo.ErrInvalidSize) {
		t.Fatalf("non power of two: %v", err)
	}
	if _, err := s.AllocFifo(32); !errors.Is(err, fifo.ErrInvalidSize) {
		t.Fatalf("too small: %v", err)
	}
	var fs []*fifo.Fifo
	for {
		f, err := s.AllocFifo(4096)
		if errors.Is(err, fifo.ErrSegmentFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	// (65536-128) / (4096+256) = 15
	if len(fs) != 15 || s.Fifos() != 15 || s.Allocated() != 15*(4096+256) {
		t.Fatalf("%d fifos, %d allocated bytes", len(fs), s.Allocated())
	}
	seen := map[uint32]bool{}
	for _, f := range fs {
		if f.Offset()%64 != 0 || seen[f.Offset()] {
			t.Fatalf("bad offset %d", f.Offset())
		}
		seen[f.Offset()] = true
	}
	// Free every other one: no room for an 8 KiB fifo, then free the rest.
	for i := 0; i < len(fs); i += 2 {
		if err := s.FreeFifo(fs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.FreeFifo(fs[0]); !errors.Is(err, fifo.ErrBadFifo) {
		t.Fatalf("double free: %v", err)
	}
	if _, err := s.AllocFifo(8192); !errors.Is(err, fifo.ErrSegmentFull) {
		t.Fatalf("8 KiB in a fragmented segment: %v", err)
	}
	for i := 1; i < len(fs); i += 2 {
		s.FreeFifo(fs[i])
	}
	if s.Fifos() != 0 || s.Allocated() != 0 {
		t.Fatalf("after freeing all: %d fifos, %d bytes", s.Fifos(), s.Allocated())
	}
	f, err := s.AllocFifo(32768)
	if err != nil {
		t.Fatalf("after coalescing: %v", err)
	}
	other := fifotest.Segment(t, 1<<16)
	if err := other.FreeFifo(f); !errors.Is(err, fifo.ErrBadFifo) {
		t.Fatalf("free in the wrong segment: %v", err)
	}
	// A reused fifo starts empty even if the old one was not.
	f.Enqueue(make([]byte, 100))
	s.FreeFifo(f)
	g, _ := s.AllocFifo(32768)
	if g.MaxDequeue() != 0 || g.Offset() != f.Offset() {
		t.Fatalf("reused fifo: offset %d, %d queued", g.Offset(), g.MaxDequeue())
	}
}
