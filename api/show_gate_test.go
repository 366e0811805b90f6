package api

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
)

// showDaemon answers every Show with a document of its own of size bytes,
// built per request as the daemon builds its show documents; a Show from
// a client whose Hello names "block" waits for block to close first.
type showDaemon struct {
	size    int
	block   chan struct{}
	built   atomic.Int64 // documents built
	blocked atomic.Int64 // Shows waiting on block
}

func (d *showDaemon) Open(_ *Conn, h *Hello) (ConnHandler, error) {
	return &showConn{d: d, block: h.Name == "block"}, nil
}

type showConn struct {
	d     *showDaemon
	block bool
}

func (h *showConn) Close(error) {}

func (h *showConn) Handle(ctx context.Context, req Request) (Message, []int, error) {
	if _, ok := req.Msg.(*Show); !ok {
		return nil, nil, nil
	}
	if h.block {
		h.d.blocked.Add(1)
		select {
		case <-h.d.block:
		case <-ctx.Done():
		}
	}
	doc := make([]byte, h.d.size)
	for i := range doc {
		doc[i] = '1'
	}
	h.d.built.Add(1)
	return &ShowReply{JSON: doc}, nil, nil
}

// serveShows runs s with d on a socket every uid may connect to, its
// drops unlogged unless s logs them.
func serveShows(t *testing.T, s *Server, d *showDaemon) string {
	t.Helper()
	if s.Logf == nil {
		s.Logf = func(string, ...any) {}
	}
	path, _ := runServer(t, s, d)
	return path
}

// dialAs connects to path as uid (its effective uid) and says Hello as
// name.
func dialAs(t *testing.T, path string, uid int, name string) *Client {
	t.Helper()
	var fd int
	var err error
	withEUID(t, uid, func() {
		fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err == nil {
			if err = unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
				unix.Close(fd)
			}
		}
	})
	if err != nil {
		t.Fatalf("connect as uid %d: %v", uid, err)
	}
	c, err := fileConn(fd)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := NewClient(ctx, c, ClientOptions{Name: name})
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func callShow(cl *Client, d time.Duration) (Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	m, fds, err := cl.Call(ctx, &Show{What: ShowSessions})
	closeFDs(fds)
	return m, err
}

// Clients of other users that ask for show documents and never read the
// replies, 32 connections of 8 uids asking 6 each, make the server build
// at most MaxShows documents at once, not documents in proportion to the
// connections: the heap grows by a few documents, not by hundreds, and
// an administrator's show still answers at once. Before, each connection
// had up to three documents built and queued (the one being written, one
// queued, one waiting for room) until the send timeout dropped it: 96
// documents of 4 MiB, with their encoded records 700 MiB of heap.
func TestShowFloodBounded(t *testing.T) {
	needRoot(t)
	const size = 4 << 20
	d := &showDaemon{size: size}
	s := &Server{}
	path := serveShows(t, s, d)
	peak := leakcheck.HeapPeak()
	hello := encode(t, 1, &Hello{Major: VersionMajor, Name: "flood"})
	var fds []int
	defer func() { closeFDs(fds) }()
	for u := range 8 {
		withEUID(t, 20001+u, func() {
			for range 4 {
				fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					t.Error(err)
					return
				}
				fds = append(fds, fd)
				if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
					t.Error(err)
					return
				}
				unix.Sendmsg(fd, hello, nil, nil, 0)
				for i := range 6 {
					unix.Sendmsg(fd, encode(t, uint32(i+2), &Show{What: ShowSessions}), nil, nil, unix.MSG_DONTWAIT)
				}
			}
		})
	}
	if t.Failed() {
		return
	}
	time.Sleep(300 * time.Millisecond)
	root := dialAs(t, path, 0, "ctl")
	t0 := time.Now()
	m, err := callShow(root, 5*time.Second)
	if err != nil || m.Type() != TypeShowReply {
		t.Fatalf("root's show during the flood: %v %v", typeOf(m), err)
	}
	rootTook := time.Since(t0)
	// The send timeout (2 s) has dropped none of the flooding clients yet.
	time.Sleep(time.Second)
	built := d.built.Load()
	grew := peak()
	t.Logf("documents built: %d (the root's one included); heap peak %d MiB above the start; root's show took %v",
		built, grew>>20, rootTook)
	if max := int64(DefaultMaxShows); built > max {
		t.Errorf("%d documents built in the first 1.3 s for 32 connections that do not read: want at most %d", built, max)
	}
	if grew > 160<<20 {
		t.Errorf("heap grew by %d MiB for 32 connections that do not read %d-byte shows", grew>>20, size)
	}
	if rootTook > time.Second {
		t.Errorf("root's show took %v during the flood", rootTook)
	}
	// Once the clients are gone, every slot is back.
	closeFDs(fds)
	fds = nil
	if !waitFor(5*time.Second, func() bool { return s.showGate().inUse() == 0 }) {
		t.Fatalf("%d show slots still held after the clients left", s.showGate().inUse())
	}
}

// A Show waits for a slot while MaxShows are taken, and gets a limit
// error after twice the send timeout, its connection kept: a uid holds one
// slot at a time, other uids together all but one, and root gets the one
// kept for it. Slots come back when the documents are sent.
func TestShowSlots(t *testing.T) {
	needRoot(t)
	leakcheck.AtCleanup(t, leakcheck.Options{Goroutines: true}) // the set of goroutines at cleanup
	d := &showDaemon{size: 1 << 10, block: make(chan struct{})}
	const sendTimeout = 200 * time.Millisecond
	s := &Server{SendTimeout: sendTimeout}
	path := serveShows(t, s, d)
	unblock := func() {
		select {
		case <-d.block:
		default:
			close(d.block)
		}
	}
	defer unblock()
	// Three uids each hold a slot with a Show the handler is building.
	for u := range 3 {
		cl := dialAs(t, path, 21001+u, "block")
		go callShow(cl, 10*time.Second)
	}
	if !waitFor(5*time.Second, func() bool { return d.blocked.Load() == 3 }) {
		t.Fatalf("%d shows blocked, want 3", d.blocked.Load())
	}
	refused := func(cl *Client, who string) {
		t.Helper()
		t0 := time.Now()
		m, err := callShow(cl, 5*time.Second)
		took := time.Since(t0)
		if !errors.Is(err, flow.ErrLimit) {
			t.Fatalf("%s: show with every slot it may take held: %v %v, want a limit error", who, typeOf(m), err)
		}
		if took < 2*sendTimeout-50*time.Millisecond || took > 2*sendTimeout+time.Second {
			t.Errorf("%s: refused after %v, want after about %v", who, took, 2*sendTimeout)
		}
		// The connection is kept.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, _, err := cl.Call(ctx, &Bind{URI: "udp://0.0.0.0:9"}); err != nil {
			t.Errorf("%s: the next request after the refusal: %v", who, err)
		}
	}
	// The same uid again: its one slot is held.
	same := dialAs(t, path, 21001, "again")
	refused(same, "uid 21001's second connection")
	// A fourth uid: the slots other uids may hold are all taken.
	other := dialAs(t, path, 21004, "other")
	refused(other, "uid 21004")
	if n := s.Stats().ShowsRefused; n != 2 {
		t.Errorf("Stats().ShowsRefused %d after two refusals, want 2", n)
	}
	// Root gets the slot kept for it, at once.
	root := dialAs(t, path, 0, "ctl")
	t0 := time.Now()
	if m, err := callShow(root, 5*time.Second); err != nil || m.Type() != TypeShowReply {
		t.Fatalf("root's show: %v %v", typeOf(m), err)
	}
	if took := time.Since(t0); took > sendTimeout {
		t.Errorf("root's show took %v", took)
	}
	// A Show waiting for a slot gets it when one comes back.
	got := make(chan error, 1)
	go func() {
		m, err := callShow(other, 5*time.Second)
		if err == nil && m.Type() != TypeShowReply {
			err = errors.New(m.Type().String())
		}
		got <- err
	}()
	time.Sleep(sendTimeout / 2)
	unblock()
	if err := <-got; err != nil {
		t.Fatalf("uid 21004's show once slots came back: %v", err)
	}
	if m, err := callShow(same, 5*time.Second); err != nil || m.Type() != TypeShowReply {
		t.Fatalf("uid 21001's second connection once its slot came back: %v %v", typeOf(m), err)
	}
	if !waitFor(2*time.Second, func() bool { return s.showGate().inUse() == 0 }) {
		t.Fatalf("%d show slots held with no show in progress", s.showGate().inUse())
	}
}

// A client that reads a long show reply one record at a time, each just
// within the send timeout, is dropped once the reply took twice the send
// timeout, not after the time it takes to read every record (64 for 4
// MiB): it would hold the reply, and its Show slot, that long.
func TestContinuedReplyDeadline(t *testing.T) {
	d := &showDaemon{size: 4 << 20}
	const sendTimeout = 250 * time.Millisecond
	s := &Server{SendTimeout: sendTimeout}
	path := serveShows(t, s, d)
	fd := rawHelloFD(t, path)
	if err := unix.Sendmsg(fd, encode(t, 2, &Show{What: ShowSessions}), nil, nil, 0); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	records := 0
	for {
		_, _, err := rawRecv(fd, 5*time.Second)
		if errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET) {
			break
		}
		if err != nil {
			t.Fatalf("after %d records: %v", records, err)
		}
		records++
		if time.Since(t0) > 2*time.Second {
			t.Fatalf("still receiving after %v (%d records, one every %v)", time.Since(t0), records, sendTimeout/5)
		}
		// Fast enough for the records the socket holds (the writer
		// finds room once they are all read) to leave within the send
		// timeout.
		time.Sleep(sendTimeout / 5)
	}
	took := time.Since(t0)
	t.Logf("dropped after %v, %d records", took, records)
	if records < 2 {
		t.Errorf("dropped after %d records: the send timeout of one record ran out", records)
	}
	if !waitFor(2*time.Second, func() bool { return s.Stats().Disconnects[DisconnectSendTimeout] == 1 }) {
		t.Errorf("disconnects %v, want one send_timeout", s.Stats().ByReason())
	}
}

// typeOf names m's type, or nil.
func typeOf(m Message) any {
	if m == nil {
		return nil
	}
	return m.Type()
}

// A slot a uid gives back goes to a waiter of another uid before the
// uid's own, however many of its connections wait ahead: three uids each
// holding a slot and queueing more Shows cannot keep a fourth uid out.
func TestShowGateFairAcrossUIDs(t *testing.T) {
	g := newShowGate(4)
	ctx := context.Background()
	var rels []func()
	for uid := uint32(1); uid <= 3; uid++ {
		rel, err := g.acquire(ctx, uid, time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		rels = append(rels, rel)
	}
	type got struct {
		uid uint32
		rel func()
		err error
	}
	granted := make(chan got, 16)
	wait := func(uid uint32) {
		go func() {
			rel, err := g.acquire(ctx, uid, 5*time.Second, nil)
			granted <- got{uid, rel, err}
		}()
	}
	waiting := func(n int) {
		t.Helper()
		if !waitFor(2*time.Second, func() bool {
			g.mu.Lock()
			defer g.mu.Unlock()
			return len(g.waiters) == n
		}) {
			t.Fatalf("want %d waiters", n)
		}
	}
	for i := range 5 {
		wait(1)
		waiting(i + 1)
	}
	wait(4)
	waiting(6)
	rels[0]() // uid 1 gives its slot back
	select {
	case r := <-granted:
		if r.uid != 4 || r.err != nil {
			t.Fatalf("uid %d got the slot uid 1 gave back (%v); want uid 4, waiting behind 5 Shows of uid 1", r.uid, r.err)
		}
		r.rel()
	case <-time.After(2 * time.Second):
		t.Fatal("no waiter got the slot")
	}
	// Then uid 1's waiters, one at a time.
	r := <-granted
	if r.uid != 1 || r.err != nil {
		t.Fatalf("uid %d %v; want uid 1", r.uid, r.err)
	}
	r.rel()
	for range 4 {
		r := <-granted
		r.rel()
	}
	rels[1]()
	rels[2]()
	if n := g.inUse(); n != 0 {
		t.Fatalf("%d slots held", n)
	}
}
