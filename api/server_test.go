package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"golang.org/x/sys/unix"
)

// fakeDaemon is a Handler that answers requests from fixed data.
type fakeDaemon struct {
	t       *testing.T
	segFD   int // a memfd handed out in AttachReply and SegmentAdded
	eventFD int
	bigJSON []byte
	block   chan struct{} // Disconnect waits on it when not nil

	mu     sync.Mutex
	conns  []*Conn // guarded by mu
	closed []error // guarded by mu
}

func newFakeDaemon(t *testing.T) *fakeDaemon {
	fd := memfds(t, 1)[0]
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(efd) })
	return &fakeDaemon{t: t, segFD: fd, eventFD: efd, bigJSON: bytes.Repeat([]byte("[1,2,3],"), 40000)}
}

func (d *fakeDaemon) Open(c *Conn, hello *Hello) (ConnHandler, error) {
	if hello.Name == "refuse-me" {
		return nil, fmt.Errorf("open: %w", flow.ErrNotSupported)
	}
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	return &fakeConn{d: d}, nil
}

type fakeConn struct{ d *fakeDaemon }

func (h *fakeConn) Handle(ctx context.Context, req Request) (Message, []int, error) {
	d := h.d
	switch m := req.Msg.(type) {
	case *Attach:
		if m.Secret != 42 {
			return nil, nil, fmt.Errorf("attach %q: %w", m.Namespace, flow.ErrWrongSecret)
		}
		return &AttachReply{AppIndex: 1, Segments: []Segment{{Index: 0, Size: 4096}},
			EventQueue: QueueRef{Offset: 64, Capacity: 128}}, []int{d.segFD, d.eventFD}, nil
	case *Bind:
		return &BindReply{Handle: 77, Local: ep4}, nil, nil
	case *Unbind:
		if m.Handle != 77 {
			return nil, nil, fmt.Errorf("unbind %#x: %w", uint64(m.Handle), flow.ErrNoSession)
		}
		return nil, nil, nil
	case *Disconnect:
		if d.block != nil {
			<-d.block
		}
		return nil, nil, nil
	case *Show:
		return &ShowReply{JSON: d.bigJSON}, nil, nil
	case *NsAdd:
		return &OK{}, nil, nil
	case *Capture:
		return &CaptureReply{}, []int{d.eventFD}, nil
	case *Detach:
		return nil, nil, nil
	case *Connect:
		// A reply that does not encode: the server must answer an Error.
		return &ConnectReply{}, []int{d.segFD}, nil
	}
	return nil, nil, fmt.Errorf("%v: %w", req.Msg.Type(), flow.ErrNotSupported)
}

func (h *fakeConn) Close(err error) {
	h.d.mu.Lock()
	h.d.closed = append(h.d.closed, err)
	h.d.mu.Unlock()
}

// startServer runs a Server on a fresh socket until the test ends.
func startServer(t *testing.T, d *fakeDaemon) string {
	t.Helper()
	path, _ := runServer(t, &Server{Name: "fake"}, d)
	return path
}

func TestClientServer(t *testing.T) {
	leakcheck.AtCleanup(t, leakcheck.Options{FDs: true, Goroutines: true}) // sets of fds and goroutines at cleanup
	d := newFakeDaemon(t)
	path := startServer(t, d)
	ctx := context.Background()

	notices := make(chan Message, 4)
	var noticeFDs []int
	cl, err := DialClient(ctx, path, ClientOptions{Name: "test", Notify: func(m Message, fds []int) {
		noticeFDs = append(noticeFDs, fds...)
		notices <- m
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if s := cl.Server(); s.Major != VersionMajor || s.Name != "fake" {
		t.Fatalf("server hello %+v", s)
	}

	ar, fds, err := Do[*AttachReply](ctx, cl, &Attach{Namespace: "blue", Secret: 42})
	if err != nil || ar.AppIndex != 1 || len(fds) != 2 {
		t.Fatalf("attach: %+v %v %v", ar, fds, err)
	}
	if !sameFile(t, fds[0], d.segFD) || !sameFile(t, fds[1], d.eventFD) {
		t.Fatal("attach descriptors are other files")
	}
	closeFDs(fds)

	_, _, err = cl.Call(ctx, &Attach{Secret: 1})
	if !errors.Is(err, flow.ErrWrongSecret) || !errors.Is(err, ErrRemote) {
		t.Fatalf("wrong secret: %v", err)
	}
	if br, _, err := Do[*BindReply](ctx, cl, &Bind{URI: "udp://0.0.0.0/9000"}); err != nil || br.Handle != 77 {
		t.Fatalf("bind: %v %v", br, err)
	}
	if _, _, err := Do[*OK](ctx, cl, &Unbind{Handle: 77}); err != nil {
		t.Fatalf("unbind: %v", err)
	}
	if _, _, err := cl.Call(ctx, &Unbind{Handle: 5}); !errors.Is(err, flow.ErrNoSession) {
		t.Fatalf("unbind unknown: %v", err)
	}
	if _, _, err := Do[*BindReply](ctx, cl, &NsAdd{ID: "x"}); !errors.Is(err, ErrUnexpectedReply) {
		t.Fatalf("wrong reply type: %v", err)
	}
	sr, _, err := Do[*ShowReply](ctx, cl, &Show{What: ShowApps})
	if err != nil || !bytes.Equal(sr.JSON, d.bigJSON) {
		t.Fatalf("show: %d bytes, %v", len(sr.JSON), err)
	}
	if _, _, err := cl.Call(ctx, &Connect{URI: "udp://1.2.3.4/5"}); err == nil || !errors.Is(err, ErrRemote) {
		t.Fatalf("unencodable reply: %v", err)
	}
	if _, _, err := cl.Call(ctx, &StatsClear{}); !errors.Is(err, flow.ErrNotSupported) {
		t.Fatalf("unhandled: %v", err)
	}

	// Concurrent calls are matched to their replies.
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := flow.Handle(77)
			if i%2 == 1 {
				h = flow.Handle(i)
			}
			_, _, err := cl.Call(ctx, &Unbind{Handle: h})
			if (i%2 == 0) != (err == nil) {
				t.Errorf("call %d: %v", i, err)
			}
		}()
	}
	wg.Wait()

	// A notice with a descriptor, sent by the daemon side.
	d.mu.Lock()
	sc := d.conns[0]
	d.mu.Unlock()
	if err := sc.Send(&SegmentAdded{Segments: []Segment{{Index: 3, Size: 4096}}}, d.segFD); err != nil {
		t.Fatal(err)
	}
	if m := <-notices; m.Type() != TypeSegmentAdded || len(noticeFDs) != 1 || !sameFile(t, noticeFDs[0], d.segFD) {
		t.Fatalf("notice %v fds %v", m, noticeFDs)
	}
	closeFDs(noticeFDs)

	cl.Close()
	if _, _, err := cl.Call(ctx, &Detach{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after close: %v", err)
	}
}

// blockingClient returns a fake daemon whose Disconnect waits until its
// block is closed, and a client of it; no descriptor or goroutine may be
// left at the test's end.
func blockingClient(t *testing.T) (*fakeDaemon, *Client) {
	t.Helper()
	leakcheck.AtCleanup(t, leakcheck.Options{FDs: true, Goroutines: true}) // sets of fds and goroutines at cleanup
	d := newFakeDaemon(t)
	d.block = make(chan struct{})
	path := startServer(t, d)
	cl, err := DialClient(context.Background(), path, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return d, cl
}

func TestCallContext(t *testing.T) {
	d, cl := blockingClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := cl.Call(ctx, &Disconnect{Handle: 1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocked call: %v", err)
	}
	close(d.block) // the late reply arrives and is dropped
	if _, _, err := cl.Call(context.Background(), &Unbind{Handle: 77}); err != nil {
		t.Fatalf("call after an abandoned one: %v", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, _, err := cl.Call(ctx, &Unbind{Handle: 77}); !errors.Is(err, context.Canceled) {
		t.Fatalf("call with a done context: %v", err)
	}
}

// TestCallLate: a reply to a call its context gave up goes to the call's
// late handler (here an OK), once; a call without one drops it.
func TestCallLate(t *testing.T) {
	d, cl := blockingClient(t)
	lateReplies := make(chan Message, 2)
	late := func(m Message, fds []int) {
		closeFDs(fds)
		lateReplies <- m
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := cl.CallLate(ctx, &Disconnect{Handle: 1}, late); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocked call: %v", err)
	}
	close(d.block)
	select {
	case m := <-lateReplies:
		if m.Type() != TypeOK {
			t.Fatalf("late reply %v, want OK", m.Type())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the late reply never reached the handler")
	}
	// The connection goes on; nothing more reaches the handler.
	if _, _, err := cl.Call(context.Background(), &Unbind{Handle: 77}); err != nil {
		t.Fatalf("call after an abandoned one: %v", err)
	}
	select {
	case m := <-lateReplies:
		t.Fatalf("a second late reply: %v", m.Type())
	default:
	}
}

// rawHello dials path and says Hello on a bare Conn.
func rawHello(t *testing.T, path string) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SendID(1, &Hello{Major: VersionMajor}); err != nil {
		t.Fatal(err)
	}
	if m, _, err := c.Recv(); err != nil || m.Type() != TypeHelloReply {
		t.Fatalf("hello: %v %v", m, err)
	}
	return c
}

// expectRefusal reads the Error the server sends before closing, then the
// end of the stream.
func expectRefusal(t *testing.T, name string, c *Conn, code flow.Code) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, fds, err := c.Recv()
	closeFDs(fds)
	e, ok := m.(*Error)
	if err != nil || !ok || e.Code != code {
		t.Errorf("%s: got %v %v, want Error code %d", name, m, err, code)
		return
	}
	if _, _, err := c.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("%s: connection not closed after the Error: %v", name, err)
	}
}

func TestServerClosesOnlyBadConnection(t *testing.T) {
	leakcheck.AtCleanup(t, leakcheck.Options{FDs: true, Goroutines: true}) // sets of fds and goroutines at cleanup
	d := newFakeDaemon(t)
	path := startServer(t, d)
	good, err := DialClient(context.Background(), path, ClientOptions{Name: "good"})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	fds := memfds(t, MaxFDs+1)

	type badCase struct {
		name string
		rec  []byte
		fds  []int
	}
	var cases []badCase
	for _, c := range malformedCases(t) {
		if len(c.rec) > 0 {
			cases = append(cases, badCase{c.name, c.rec, nil})
		}
	}
	cases = append(cases,
		badCase{"unexpected fds", encode(t, 3, &Unbind{Handle: 77}), fds[:2]},
		badCase{"too many fds", encode(t, 3, &Unbind{Handle: 77}), fds},
		badCase{"request id 0", encode(t, 0, &Unbind{Handle: 77}), nil},
		badCase{"reply sent as request", encode(t, 3, &SegmentAdded{Segments: []Segment{{}}}), fds[:1]},
		badCase{"second hello", encode(t, 3, &Hello{Major: VersionMajor}), nil},
	)
	for _, c := range cases {
		bad := rawHello(t, path)
		rawSend(t, bad, c.rec, c.fds...)
		expectRefusal(t, c.name, bad, flow.CodeInvalidValue)
		bad.Close()
		if _, _, err := good.Call(context.Background(), &Unbind{Handle: 77}); err != nil {
			t.Fatalf("after %s: good connection failed: %v", c.name, err)
		}
	}

	// Garbage before Hello, a non-Hello first message, another major
	// version, a refused Open.
	for _, c := range []struct {
		name string
		rec  []byte
		code flow.Code
	}{
		{"garbage first", []byte("GET / HTTP/1.0\r\n\r\n"), flow.CodeInvalidValue},
		{"no hello", encode(t, 1, &Unbind{}), flow.CodeInvalidValue},
		{"another major", encode(t, 1, &Hello{Major: VersionMajor + 1}), flow.CodeNotSupported},
		{"major 1", encode(t, 1, &Hello{Major: 1, Minor: 3}), flow.CodeNotSupported},
		{"refused by handler", encode(t, 1, &Hello{Major: VersionMajor, Name: "refuse-me"}), flow.CodeNotSupported},
	} {
		c2, err := Dial(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		rawSend(t, c2, c.rec)
		expectRefusal(t, c.name, c2, c.code)
		c2.Close()
	}
	if _, _, err := good.Call(context.Background(), &Unbind{Handle: 77}); err != nil {
		t.Fatalf("good connection failed: %v", err)
	}
	d.mu.Lock()
	nclosed := len(d.closed)
	d.mu.Unlock()
	if nclosed != len(cases) {
		t.Errorf("handler Close called %d times, want %d", nclosed, len(cases))
	}
}

func TestClientVersionMismatch(t *testing.T) {
	a, b := pair(t)
	go func() {
		id, _, _, err := b.RecvID()
		if err == nil {
			b.SendID(id, &HelloReply{Major: VersionMajor + 1})
		}
	}()
	if _, err := NewClient(context.Background(), a, ClientOptions{}); !errors.Is(err, ErrVersion) {
		t.Fatalf("newer daemon: %v", err)
	}
	c, dd := pair(t)
	go func() {
		id, _, _, err := dd.RecvID()
		if err == nil {
			dd.SendID(id, &Error{Code: flow.CodeNotSupported, Message: "protocol version 1.0 not supported"})
		}
	}()
	if _, err := NewClient(context.Background(), c, ClientOptions{}); !errors.Is(err, ErrVersion) || !errors.Is(err, flow.ErrNotSupported) {
		t.Fatalf("refused hello: %v", err)
	}
}

func TestClientFailsPendingOnHangup(t *testing.T) {
	leakcheck.AtCleanup(t, leakcheck.Options{Goroutines: true}) // the set of goroutines at cleanup
	a, b := pair(t)
	go func() {
		id, _, _, err := b.RecvID()
		if err == nil {
			b.SendID(id, &HelloReply{Major: VersionMajor})
		}
		b.RecvID() // the call
		b.Close()  // hang up without answering
	}()
	cl, err := NewClient(context.Background(), a, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, _, err := cl.Call(context.Background(), &Detach{}); !errors.Is(err, io.EOF) {
		t.Fatalf("call on hung-up daemon: %v", err)
	}
	<-cl.Done()
	if !errors.Is(cl.Err(), io.EOF) {
		t.Fatalf("Err: %v", cl.Err())
	}
}
