package api

import (
	"bytes"
	"errors"
	"io"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"golang.org/x/sys/unix"
)

func pair(t *testing.T) (*Conn, *Conn) {
	t.Helper()
	a, b, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// memfds makes n memfds of distinct sizes.
func memfds(t *testing.T, n int) []int {
	t.Helper()
	fds := make([]int, n)
	for i := range fds {
		fd, err := unix.MemfdCreate("api-test", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Ftruncate(fd, int64(4096*(i+1))); err != nil {
			t.Fatal(err)
		}
		fds[i] = fd
	}
	t.Cleanup(func() { closeFDs(fds) })
	return fds
}

func sameFile(t *testing.T, a, b int) bool {
	t.Helper()
	var sa, sb unix.Stat_t
	if err := unix.Fstat(a, &sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(b, &sb); err != nil {
		t.Fatal(err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// rawSend sends bytes and descriptors on c's socket as they are.
func rawSend(t *testing.T, c *Conn, rec []byte, fds ...int) {
	t.Helper()
	var err error
	cerr := c.rc.Write(func(fd uintptr) bool {
		err = unix.Sendmsg(int(fd), rec, unix.UnixRights(fds...), nil, 0)
		return err != unix.EAGAIN
	})
	if cerr != nil || err != nil {
		t.Fatalf("raw send: %v %v", cerr, err)
	}
}

func TestSendRecvEveryType(t *testing.T) {
	leakcheck.AtCleanup(t, leakcheck.Options{FDs: true}) // the set of fds at cleanup
	a, b := pair(t)
	for i, m := range samples() {
		fds := memfds(t, m.FDs())
		if err := a.SendID(uint32(i), m, fds...); err != nil {
			t.Fatalf("%v: send: %v", m.Type(), err)
		}
		id, got, rfds, err := b.RecvID()
		if err != nil {
			t.Fatalf("%v: recv: %v", m.Type(), err)
		}
		if id != uint32(i) || !reflect.DeepEqual(got, m) {
			t.Fatalf("%v: got id %d %#v", m.Type(), id, got)
		}
		if len(rfds) != len(fds) {
			t.Fatalf("%v: %d descriptors, want %d", m.Type(), len(rfds), len(fds))
		}
		for j := range rfds {
			if !sameFile(t, rfds[j], fds[j]) {
				t.Errorf("%v: descriptor %d is another file", m.Type(), j)
			}
			flags, err := unix.FcntlInt(uintptr(rfds[j]), unix.F_GETFD, 0)
			if err != nil || flags&unix.FD_CLOEXEC == 0 {
				t.Errorf("%v: descriptor %d without close-on-exec", m.Type(), j)
			}
		}
		closeFDs(rfds)
	}
}

func TestSendBadFDs(t *testing.T) {
	a, _ := pair(t)
	fds := memfds(t, 2)
	for _, c := range []struct {
		m   Message
		fds []int
	}{
		{&OK{}, fds[:1]},
		{&AttachReply{}, nil},
		{&AttachReply{}, fds},
		{&SegmentAdded{Segments: []Segment{{}}}, []int{-1}},
	} {
		if err := a.Send(c.m, c.fds...); !errors.Is(err, ErrBadFDs) {
			t.Errorf("%v with %d fds: %v", c.m.Type(), len(c.fds), err)
		}
	}
}

// TestRecvRefuses sends bad records and checks that each is refused with
// its error, that its descriptors are closed, and that the next good record
// still comes through.
func TestRecvRefuses(t *testing.T) {
	leakcheck.AtCleanup(t, leakcheck.Options{FDs: true}) // the set of fds at cleanup
	a, b := pair(t)
	fds := memfds(t, MaxFDs+1)
	cases := []struct {
		name string
		rec  []byte
		fds  []int
		want error
	}{
		{"unexpected fds", encode(t, 1, &OK{}), fds[:2], ErrUnexpectedFDs},
		{"missing fds", encode(t, 1, &AttachReply{Segments: []Segment{{}}}), fds[:1], ErrUnexpectedFDs},
		{"extra fds", encode(t, 1, &SegmentAdded{Segments: []Segment{{}}}), fds[:3], ErrUnexpectedFDs},
		{"too many fds", encode(t, 1, &SegmentAdded{Segments: make([]Segment, MaxFDs)}), fds, ErrTruncated},
		{"oversized with fds", append(encode(t, 1, &OK{}), make([]byte, MaxRecordSize)...), fds[:1], ErrTooLarge},
		{"bad magic with fds", append([]byte{0, 0}, encode(t, 1, &Detach{})[2:]...), fds[:1], ErrMalformed},
	}
	for _, c := range malformedCases(t) {
		if len(c.rec) == 0 {
			continue // an empty record reads as end of stream
		}
		cases = append(cases, struct {
			name string
			rec  []byte
			fds  []int
			want error
		}{c.name, c.rec, fds[:1], c.want})
	}
	for _, c := range cases {
		// leakcheck: the set of descriptors after each case, polled
		// until it settles.
		leaks := leakcheck.Take(t, leakcheck.Options{FDs: true})
		rawSend(t, a, c.rec, c.fds...)
		_, m, rfds, err := b.RecvID()
		if !errors.Is(err, c.want) || !errors.Is(err, ErrMalformed) || m != nil || rfds != nil {
			t.Errorf("%s: got %v %v %v, want %v", c.name, m, rfds, err, c.want)
		}
		if !leaks.Check(t) {
			t.Errorf("%s: descriptors left", c.name)
		}
		if err := a.Send(&Detach{}); err != nil {
			t.Fatal(err)
		}
		if m, _, err := b.Recv(); err != nil || m.Type() != TypeDetach {
			t.Fatalf("%s: next record: %v %v", c.name, m, err)
		}
	}
}

func TestContinuedShowReply(t *testing.T) {
	a, b := pair(t)
	doc := bytes.Repeat([]byte(`{"k":"0123456789"},`), 20000) // ~380 KiB: several records
	errc := make(chan error, 1)
	go func() { errc <- a.SendID(9, &ShowReply{JSON: doc}) }()
	id, m, fds, err := b.RecvID()
	if err != nil || id != 9 || fds != nil {
		t.Fatalf("recv: %d %v %v", id, fds, err)
	}
	if !bytes.Equal(m.(*ShowReply).JSON, doc) {
		t.Fatalf("reassembled %d bytes, want %d", len(m.(*ShowReply).JSON), len(doc))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := a.Send(&ShowReply{JSON: make([]byte, MaxReassembled+1)}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized document: %v", err)
	}
}

func TestContinuedInterleaved(t *testing.T) {
	a, b := pair(t)
	more, err := AppendRecord(nil, 4, FlagMore, &ShowReply{JSON: []byte("{")})
	if err != nil {
		t.Fatal(err)
	}
	rawSend(t, a, more)
	rawSend(t, a, encode(t, 5, &OK{}))
	if _, _, err := b.Recv(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("interleaved record: %v", err)
	}
}

func TestContinuedCap(t *testing.T) {
	a, b := pair(t)
	chunk, err := AppendRecord(nil, 4, FlagMore, &ShowReply{JSON: make([]byte, maxShowChunk)})
	if err != nil {
		t.Fatal(err)
	}
	n := MaxReassembled/maxShowChunk + 2
	go func() {
		for i := 0; i < n; i++ {
			if err := a.writeRaw(chunk); err != nil {
				return
			}
		}
	}()
	if _, _, err := b.Recv(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("endless continuation: %v", err)
	}
	b.Close() // unblocks the sender
}

// writeRaw sends a record as is, for tests.
func (c *Conn) writeRaw(rec []byte) error {
	c.wsem <- struct{}{}
	defer func() { <-c.wsem }()
	return c.writeLocked(rec, nil)
}

func TestPeerCredPair(t *testing.T) {
	a, b := pair(t)
	for _, c := range []*Conn{a, b} {
		p := c.Peer()
		if int(p.PID) != os.Getpid() || int(p.UID) != os.Getuid() || int(p.GID) != os.Getgid() {
			t.Errorf("peer %+v, want pid %d uid %d gid %d", p, os.Getpid(), os.Getuid(), os.Getgid())
		}
	}
}

func TestEOFAndClose(t *testing.T) {
	a, b := pair(t)
	a.Close()
	if _, _, err := b.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after peer close: %v", err)
	}
	if err := b.Send(&OK{}); !errors.Is(err, io.EOF) {
		t.Fatalf("send after peer close: %v", err)
	}
	c, d := pair(t)
	errc := make(chan error, 1)
	go func() { _, _, err := c.Recv(); errc <- err }()
	c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("recv unblocked by close: %v", err)
	}
	if err := c.Send(&OK{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("send on closed: %v", err)
	}
	_ = d
}

func TestReadDeadline(t *testing.T) {
	a, _ := pair(t)
	a.SetReadDeadline(time.Now().Add(-time.Second))
	if _, _, err := a.Recv(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("recv past deadline: %v", err)
	}
}

func TestConcurrentSenders(t *testing.T) {
	a, b := pair(t)
	const senders, each = 8, 200
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id := uint32(s*each + i + 1)
				if err := a.SendID(id, &Unbind{Handle: 1000 + handleOf(id)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	seen := make(map[uint32]bool)
	for len(seen) < senders*each {
		id, m, _, err := b.RecvID()
		if err != nil {
			t.Fatal(err)
		}
		if u, ok := m.(*Unbind); !ok || u.Handle != 1000+handleOf(id) || seen[id] {
			t.Fatalf("record %d: %#v (dup %v)", id, m, seen[id])
		}
		seen[id] = true
	}
	wg.Wait()
}

func handleOf(id uint32) flow.Handle { return flow.Handle(id) * 3 }

// TestRoundTripAllocs: a small request and its reply cost one allocation,
// the decoded request (the reply OK is zero-sized); encoding, sending,
// receiving and the syscalls allocate nothing.
func TestRoundTripAllocs(t *testing.T) {
	a, b := pair(t)
	req, ok := &Unbind{Handle: 77}, &OK{}
	allocs := testing.AllocsPerRun(200, func() {
		if err := a.SendID(5, req); err != nil {
			t.Fatal(err)
		}
		id, m, _, err := b.RecvID()
		if err != nil || m.(*Unbind).Handle != 77 {
			t.Fatal(m, err)
		}
		if err := b.SendID(id, ok); err != nil {
			t.Fatal(err)
		}
		if _, m, _, err := a.RecvID(); err != nil || m.Type() != TypeOK {
			t.Fatal(m, err)
		}
	})
	if allocs > 1 {
		t.Fatalf("round trip allocates %.1f times, want at most 1", allocs)
	}
}
