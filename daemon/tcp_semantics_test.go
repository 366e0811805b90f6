package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// A Go program written for the kernel's TCP connections and listeners is
// meant to run unchanged on the app library's. The tests of this file run
// one sequence of calls on a kernel connection (both of its ends in host
// A) and on the app's (dialed to and accepted from a kernel peer on host
// A, and cut-through between two apps of host B), note what each call
// returned (n, the error as errors.Is classes it, the types of the
// addresses) and compare: each step must give what the kernel's gave, or
// differ as doc.go says it does (semCase.documented).

// semStep is one call of a sequence and what it returned.
type semStep struct{ what, got string }

// semTrace is what the calls of a sequence returned, in order.
type semTrace []semStep

func (tr *semTrace) note(what, got string) { *tr = append(*tr, semStep{what, got}) }

// call notes a data call's n and error.
func (tr *semTrace) call(what string, n int, err error) {
	tr.note(what, fmt.Sprintf("n=%d %s", n, errClass(err)))
}

// err notes a call's error.
func (tr *semTrace) err(what string, err error) { tr.note(what, errClass(err)) }

func (tr semTrace) String() string {
	var b strings.Builder
	for _, s := range tr {
		fmt.Fprintf(&b, "\n\t%s: %s", s.what, s.got)
	}
	return b.String()
}

// errClass names err as a Go program tests it: nil, io.EOF itself (which
// programs compare with ==), or the errors it wraps among those a TCP
// user looks for, and whether it is a net.Error whose Timeout is true.
func errClass(err error) string {
	switch {
	case err == nil:
		return "nil"
	case err == io.EOF:
		return "io.EOF"
	case errors.Is(err, errNoMethod):
		return "no such method"
	}
	var cls []string
	for _, s := range []struct {
		name string
		err  error
	}{
		{"io.EOF(wrapped)", io.EOF},
		{"net.ErrClosed", net.ErrClosed},
		{"os.ErrDeadlineExceeded", os.ErrDeadlineExceeded},
		{"EPIPE", syscall.EPIPE},
		{"ECONNRESET", syscall.ECONNRESET},
		{"ECONNREFUSED", syscall.ECONNREFUSED},
		{"EADDRINUSE", syscall.EADDRINUSE},
		{"ETIMEDOUT", syscall.ETIMEDOUT},
		{"ENETUNREACH", syscall.ENETUNREACH},
		{"context.Canceled", context.Canceled},
		{"context.DeadlineExceeded", context.DeadlineExceeded},
		{"flow.ErrNotSupported", flow.ErrNotSupported},
		{"EMSGSIZE", syscall.EMSGSIZE},
		{"EDESTADDRREQ", syscall.EDESTADDRREQ},
		{"EAFNOSUPPORT", syscall.EAFNOSUPPORT},
		{"EINVAL", syscall.EINVAL},
	} {
		if errors.Is(err, s.err) {
			cls = append(cls, s.name)
		}
	}
	if len(cls) == 0 {
		cls = append(cls, "other")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		cls = append(cls, "timeout")
	}
	return strings.Join(cls, "|")
}

// errNoMethod stands for the result of a method the object lacks.
var errNoMethod = errors.New("no such method")

// Methods a Go program reaches by interface assertion on a net.Conn or a
// net.Listener.
type (
	closeWriter interface{ CloseWrite() error }
	closeReader interface{ CloseRead() error }
	keepAliver  interface{ SetKeepAlive(bool) error }
	keepAlivePr interface{ SetKeepAlivePeriod(time.Duration) error }
	keepAliveCf interface {
		SetKeepAliveConfig(net.KeepAliveConfig) error
	}
	lingerer     interface{ SetLinger(int) error }
	noDelayer    interface{ SetNoDelay(bool) error }
	readBufferer interface{ SetReadBuffer(int) error }
	writeBuffer  interface{ SetWriteBuffer(int) error }
	filer        interface{ File() (*os.File, error) }
	syscallConn  interface {
		SyscallConn() (syscall.RawConn, error)
	}
	deadliner interface{ SetDeadline(time.Time) error }
)

// is reports whether x is a T: whether a program's type assertion finds
// the method set T on it.
func is[T any](x any) bool {
	_, ok := x.(T)
	return ok
}

// callMethod calls fn on x as a T, or returns errNoMethod when x is no T.
func callMethod[T any](x any, fn func(T) error) error {
	v, ok := x.(T)
	if !ok {
		return errNoMethod
	}
	return fn(v)
}

// semResult is what a call made on a goroutine of its own returned.
type semResult struct {
	n    int
	err  error
	took time.Duration
}

// goCall runs fn on a goroutine of its own.
func goCall(fn func() (int, error)) <-chan semResult {
	ch := make(chan semResult, 1)
	start := time.Now()
	go func() {
		n, err := fn()
		ch <- semResult{n, err, time.Since(start)}
	}()
	return ch
}

// blockedWrite starts a Write of b on c, whose peer does not read, and
// returns the call once it has blocked for 300 ms (the window and the
// buffers fill); a Write that returned instead is noted in tr, and ok is
// false.
func blockedWrite(c net.Conn, b []byte, tr *semTrace) (w <-chan semResult, ok bool) {
	c.SetWriteDeadline(time.Now().Add(10 * time.Second)) // not reached
	w = goCall(func() (int, error) { return c.Write(b) })
	time.Sleep(300 * time.Millisecond)
	select {
	case r := <-w:
		tr.call("Write did not block", r.n, r.err)
		return nil, false
	default:
		return w, true
	}
}

// awaitCall notes what a call of goCall returned, or that it still blocks
// after 5s.
func (tr *semTrace) awaitCall(what string, ch <-chan semResult) semResult {
	select {
	case r := <-ch:
		tr.call(what, r.n, r.err)
		return r
	case <-time.After(5 * time.Second):
		tr.note(what, "still blocked after 5s")
		return semResult{n: -1}
	}
}

// semKind makes the connections of one kind: the kernel's, or the app's
// on the wire or cut-through. c is the connection under test, peer its
// other end.
type semKind struct {
	name string
	app  bool // c is an app's
	ct   bool // c is a cut-through session
	open func(t *testing.T) (c, peer net.Conn)
}

// semCase is one sequence of calls on c and its peer.
type semCase struct {
	name string
	run  func(t *testing.T, c, peer net.Conn, tr *semTrace)
	// documented gives, for kind k, the steps whose result doc.go says
	// differs from the kernel's, and that result; nil: none.
	documented func(k semKind) map[string]string
}

// runSemCases runs every case on kinds[0] (the kernel's connections, the
// reference) and then on each other kind, and compares what each step
// returned with what it returned on the kernel's.
func runSemCases(t *testing.T, kinds []semKind, cases []semCase) {
	for _, sc := range cases {
		t.Run(sc.name, func(t *testing.T) {
			var ref semTrace
			for i, k := range kinds {
				c, peer := k.open(t)
				var tr semTrace
				sc.run(t, c, peer, &tr)
				c.Close()
				peer.Close()
				if i == 0 {
					ref = tr
					t.Logf("%s:%v", k.name, tr)
					continue
				}
				var doc map[string]string
				if sc.documented != nil {
					doc = sc.documented(k)
				}
				compareSem(t, k.name, ref, tr, doc)
			}
		})
	}
}

// compareSem fails the test for each step of got that differs from the
// kernel's result (ref), or from what doc (documented) says the app gives
// instead.
func compareSem(t *testing.T, kind string, ref, got semTrace, doc map[string]string) {
	t.Helper()
	if len(ref) != len(got) {
		t.Errorf("%s: %d steps, the kernel's %d:\nkernel:%v\n%s:%v", kind, len(got), len(ref), ref, kind, got)
		return
	}
	for what := range doc {
		found := false
		for _, s := range ref {
			found = found || s.what == what
		}
		if !found {
			t.Errorf("%s: a difference is given for a step %q the sequence does not have", kind, what)
		}
	}
	for i, s := range got {
		want, differs := doc[ref[i].what]
		if !differs {
			want = ref[i].got
		}
		switch {
		case s.what != ref[i].what:
			t.Errorf("%s: step %d is %q, the kernel's %q", kind, i, s.what, ref[i].what)
		case s.got != want && differs:
			t.Errorf("%s: %s: %s, want %s (documented; the kernel's: %s)", kind, s.what, s.got, want, ref[i].got)
		case s.got != want:
			t.Errorf("%s: %s: %s, the kernel's: %s", kind, s.what, s.got, want)
		case differs && want != ref[i].got:
			t.Logf("%s: %s: %s, the kernel's %s (documented)", kind, s.what, s.got, ref[i].got)
		}
	}
}

// Results the app library gives where doc.go and README.md say it differs
// from the kernel.
var (
	// A cut-through session has no IP address of its own: its end's
	// address is a *app.CutThroughAddr (doc.go, Conn.LocalAddr): the
	// local one of a session the app dialed, the remote one of a session
	// it accepted.
	ctLocal = map[string]string{
		"LocalAddr type": "*app.CutThroughAddr", "LocalAddr network": "xsession",
		"LocalAddr is the peer's RemoteAddr": "false", "LocalAddr": "*app.CutThroughAddr",
	}
	ctRemote = map[string]string{
		"RemoteAddr type": "*app.CutThroughAddr", "RemoteAddr network": "xsession",
		"RemoteAddr is the peer's LocalAddr": "false", "RemoteAddr": "*app.CutThroughAddr",
	}
)

// ctAddrs is ctLocal or ctRemote for a cut-through kind, as it was
// dialed or accepted, restricted to the steps a case has.
func ctAddrs(k semKind, steps ...string) map[string]string {
	if !k.ct {
		return nil
	}
	m := ctRemote
	if strings.HasSuffix(k.name, "-dialed") {
		m = ctLocal
	}
	out := map[string]string{}
	for _, s := range steps {
		if v, ok := m[s]; ok {
			out[s] = v
		}
	}
	return out
}

// semConnRig is a rig with the daemon on host B, the app under test (a),
// a second app for cut-through sessions (b), and the listeners the kinds
// of connection are made with.
type semConnRig struct {
	rig  *nstest.Pair
	a, b *app.App
	kl   net.Listener // a kernel listener on host A, port 7500
	aln  net.Listener // a's listener on B's address, port 7501 (wire and cut-through)
	bln  net.Listener // b's listener on B's address, port 7502 (cut-through)
}

func newSemConnRig(t *testing.T) *semConnRig {
	rig, d := tcpRig(t)
	r := &semConnRig{rig: rig, a: attach(t, d, app.Options{Name: "semantics"}), b: attach(t, d, app.Options{Name: "peer"})}
	r.kl = kernelListen(t, rig.A, ":7500")
	r.aln = listenApp(t, r.a, "tcp://"+netip.AddrPortFrom(rig.B.IPv4, 7501).String())
	r.bln = listenApp(t, r.b, "tcp://"+netip.AddrPortFrom(rig.B.IPv4, 7502).String())
	return r
}

// acceptWithin accepts from ln, failing t after 10s.
func acceptWithin(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	ln.(deadliner).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept on %v: %v", ln.Addr(), err)
	}
	return c
}

// kernelDial dials addr from host h with a kernel socket.
func kernelDial(t *testing.T, h *nstest.Host, addr netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	if err := h.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr.String(), 10*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %v from %s: %v", addr, h.Name, err)
	}
	return c
}

// appDial dials addr from app a.
func appDial(t *testing.T, a *app.App, addr netip.AddrPort) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, "tcp://"+addr.String())
	if err != nil {
		t.Fatalf("dial %v: %v", addr, err)
	}
	return c
}

// kinds are the connections the cases run on: the kernel's first.
func (r *semConnRig) kinds() []semKind {
	toA := netip.AddrPortFrom(r.rig.A.IPv4, 7500)
	return []semKind{
		{name: "kernel", open: func(t *testing.T) (net.Conn, net.Conn) {
			c := kernelDial(t, r.rig.A, toA)
			return c, acceptWithin(t, r.kl)
		}},
		{name: "wire-dialed", app: true, open: func(t *testing.T) (net.Conn, net.Conn) {
			c := appDial(t, r.a, toA)
			return c, acceptWithin(t, r.kl)
		}},
		{name: "wire-accepted", app: true, open: func(t *testing.T) (net.Conn, net.Conn) {
			peer := kernelDial(t, r.rig.A, netip.AddrPortFrom(r.rig.B.IPv4, 7501))
			return acceptWithin(t, r.aln), peer
		}},
		{name: "cut-through-dialed", app: true, ct: true, open: func(t *testing.T) (net.Conn, net.Conn) {
			c := appDial(t, r.a, netip.AddrPortFrom(r.rig.B.IPv4, 7502))
			return c, acceptWithin(t, r.bln)
		}},
		{name: "cut-through-accepted", app: true, ct: true, open: func(t *testing.T) (net.Conn, net.Conn) {
			peer := appDial(t, r.b, netip.AddrPortFrom(r.rig.B.IPv4, 7501))
			return acceptWithin(t, r.aln), peer
		}},
	}
}

// resetConn closes c with an RST (SO_LINGER 0).
func resetConn(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.(lingerer).SetLinger(0); err != nil {
		t.Fatalf("set linger: %v", err)
	}
	c.Close()
}

// readOne reads one byte of c, waiting at most 5s.
func readOne(c net.Conn) (int, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	return io.ReadFull(c, b[:])
}

// TestTCPConnMatchesKernel: a TCP Conn of the app library, dialed to and
// accepted from a kernel peer on host A and cut-through between two apps,
// returns what a kernel connection returns, call for call: a write after
// CloseWrite fails with EPIPE; after the peer's CloseWrite every read
// returns io.EOF and writes go on; a peer's reset fails the next read or
// write with ECONNRESET; a write after the peer closed; a Close wakes a
// Write waiting for room and a Read waiting for data with net.ErrClosed;
// a past deadline fails calls even with data waiting, one moved while a
// Read waits counts from then, one cleared after it fired lets calls go
// on; after Close every call and setter fails with net.ErrClosed; the
// addresses' types and values, and the methods a program reaches by
// interface assertion.
func TestTCPConnMatchesKernel(t *testing.T) {
	r := newSemConnRig(t)
	big := make([]byte, 64<<20)
	cases := []semCase{
		{name: "write after CloseWrite", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			tr.err("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			n, err := c.Write([]byte("x"))
			tr.call("Write", n, err)
			n, err = c.Write([]byte("x"))
			tr.call("Write again", n, err)
			tr.err("CloseWrite again", callMethod(c, closeWriter.CloseWrite))
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(peer)
			tr.call("peer reads to the end", len(got), err)
			peer.Write([]byte("y"))
			n, err = readOne(c)
			tr.call("Read the peer's byte", n, err)
		}},
		{name: "reads after the peer's CloseWrite", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			peer.Write([]byte("hi"))
			tr.err("peer CloseWrite", callMethod(peer, closeWriter.CloseWrite))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 16)
			n, err := io.ReadFull(c, buf[:2])
			tr.call("Read the data", n, err)
			for i := range 3 {
				n, err = c.Read(buf)
				tr.call(fmt.Sprintf("Read at the end %d", i+1), n, err)
			}
			n, err = c.Read(nil)
			tr.call("Read of 0 bytes at the end", n, err)
			n, err = c.Write([]byte("back"))
			tr.call("Write", n, err)
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err = io.ReadFull(peer, buf[:4])
			tr.call("peer reads it", n, err)
			tr.err("Close", c.Close())
			n, err = peer.Read(buf)
			tr.call("peer reads after the Close", n, err)
		}},
		{name: "read after the peer reset", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			resetConn(t, peer)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 16)
			n, err := c.Read(buf)
			tr.call("Read", n, err)
			n, err = c.Read(buf)
			tr.call("Read again", n, err)
			n, err = c.Write([]byte("x"))
			tr.call("Write", n, err)
		}},
		{name: "write after the peer reset", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			resetConn(t, peer)
			time.Sleep(300 * time.Millisecond) // the RST arrives
			c.SetDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Write([]byte("x"))
			tr.call("Write", n, err)
			n, err = c.Write([]byte("x"))
			tr.call("Write again", n, err)
			n, err = c.Read(make([]byte, 16))
			tr.call("Read", n, err)
		}},
		{name: "write after the peer closed", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			tr.err("peer Close", peer.Close())
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 16)
			n, err := c.Read(buf)
			tr.call("Read", n, err)
			n, err = c.Write([]byte("x"))
			tr.call("Write", n, err)
			time.Sleep(300 * time.Millisecond) // the peer's RST arrives
			n, err = c.Write([]byte("x"))
			tr.call("Write after the peer's answer", n, err)
			time.Sleep(300 * time.Millisecond)
			n, err = c.Write([]byte("x"))
			tr.call("Write again", n, err)
			n, err = c.Read(buf)
			tr.call("Read again", n, err)
		}, documented: func(k semKind) map[string]string {
			if !k.ct {
				return nil
			}
			// A cut-through peer that closed is gone at once: a write
			// fails with EPIPE (doc.go), where a kernel connection takes
			// the first write and learns from the peer's RST.
			return map[string]string{"Write": "n=0 EPIPE"}
		}},
		{name: "Close wakes a blocked Write", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			w, ok := blockedWrite(c, big, tr)
			if !ok {
				return
			}
			tr.err("Close", c.Close())
			select {
			case r := <-w:
				tr.note("blocked Write", fmt.Sprintf("some written %v, all %v, %s", r.n > 0, r.n == len(big), errClass(r.err)))
			case <-time.After(5 * time.Second):
				tr.note("blocked Write", "still blocked after 5s")
			}
		}},
		{name: "Close wakes a blocked Read", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			rd := goCall(func() (int, error) { return c.Read(make([]byte, 16)) })
			time.Sleep(50 * time.Millisecond)
			tr.err("Close", c.Close())
			tr.awaitCall("blocked Read", rd)
		}},
		{name: "deadline past on a fresh conn", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			peer.Write([]byte("x"))
			time.Sleep(50 * time.Millisecond) // the byte is there to read
			tr.err("SetDeadline in the past", c.SetDeadline(time.Unix(1, 0)))
			n, err := c.Read(nil)
			tr.call("Read of 0 bytes", n, err)
			n, err = c.Read(make([]byte, 16))
			tr.call("Read", n, err)
			n, err = c.Write([]byte("y"))
			tr.call("Write", n, err)
			tr.err("SetDeadline zero", c.SetDeadline(time.Time{}))
			n, err = readOne(c)
			tr.call("Read after", n, err)
			n, err = c.Write([]byte("y"))
			tr.call("Write after", n, err)
		}},
		{name: "deadline extended while a Read waits", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			rd := goCall(func() (int, error) { return c.Read(make([]byte, 16)) })
			time.Sleep(30 * time.Millisecond)
			tr.err("SetReadDeadline later", c.SetReadDeadline(time.Now().Add(3*time.Second)))
			time.Sleep(150 * time.Millisecond) // past the first deadline
			peer.Write([]byte("x"))
			tr.awaitCall("waiting Read", rd)
		}},
		{name: "deadline set while a Read waits", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			rd := goCall(func() (int, error) { return c.Read(make([]byte, 16)) })
			time.Sleep(30 * time.Millisecond)
			tr.err("SetReadDeadline soon", c.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
			res := tr.awaitCall("waiting Read", rd)
			tr.note("it returned within 1s", fmt.Sprint(res.took < time.Second))
			tr.err("SetReadDeadline zero", c.SetReadDeadline(time.Time{}))
			rd = goCall(func() (int, error) { return c.Read(make([]byte, 16)) })
			time.Sleep(30 * time.Millisecond)
			tr.err("SetReadDeadline in the past", c.SetReadDeadline(time.Unix(1, 0)))
			res = tr.awaitCall("waiting Read", rd)
			tr.note("it returned within 1s", fmt.Sprint(res.took < time.Second))
		}},
		{name: "deadline cleared after it fired", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			buf := make([]byte, 16)
			n, err := c.Read(buf)
			tr.call("Read", n, err)
			n, err = c.Read(buf)
			tr.call("Read again", n, err)
			n, err = c.Write([]byte("w"))
			tr.call("Write", n, err)
			tr.err("SetReadDeadline zero", c.SetReadDeadline(time.Time{}))
			rd := goCall(func() (int, error) { return c.Read(buf) })
			time.Sleep(30 * time.Millisecond)
			peer.Write([]byte("x"))
			tr.awaitCall("waiting Read", rd)
			tr.err("SetWriteDeadline in the past", c.SetWriteDeadline(time.Now().Add(-time.Second)))
			n, err = c.Write([]byte("w"))
			tr.call("Write past its deadline", n, err)
			tr.err("SetWriteDeadline zero", c.SetWriteDeadline(time.Time{}))
			n, err = c.Write([]byte("w"))
			tr.call("Write", n, err)
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err = io.ReadFull(peer, buf[:2])
			tr.call("peer reads the writes", n, err)
		}},
		{name: "calls after Close", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			tr.err("Close", c.Close())
			n, err := c.Read(make([]byte, 16))
			tr.call("Read", n, err)
			n, err = c.Read(nil)
			tr.call("Read of 0 bytes", n, err)
			n, err = c.Write([]byte("x"))
			tr.call("Write", n, err)
			tr.err("Close again", c.Close())
			tr.err("SetDeadline", c.SetDeadline(time.Now()))
			tr.err("SetReadDeadline", c.SetReadDeadline(time.Now()))
			tr.err("SetWriteDeadline", c.SetWriteDeadline(time.Now()))
			tr.err("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			tr.err("CloseRead", callMethod(c, closeReader.CloseRead))
			tr.err("SetLinger(0)", callMethod(c, func(l lingerer) error { return l.SetLinger(0) }))
			tr.err("SetKeepAlive", callMethod(c, func(k keepAliver) error { return k.SetKeepAlive(true) }))
			tr.note("LocalAddr", fmt.Sprintf("%T", c.LocalAddr()))
			tr.note("RemoteAddr", fmt.Sprintf("%T", c.RemoteAddr()))
		}, documented: func(k semKind) map[string]string {
			return ctAddrs(k, "LocalAddr", "RemoteAddr")
		}},
		{name: "addresses", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			la, ra := c.LocalAddr(), c.RemoteAddr()
			tr.note("LocalAddr type", fmt.Sprintf("%T", la))
			tr.note("RemoteAddr type", fmt.Sprintf("%T", ra))
			tr.note("LocalAddr network", la.Network())
			tr.note("RemoteAddr network", ra.Network())
			tr.note("LocalAddr is the peer's RemoteAddr", fmt.Sprint(la.String() == peer.RemoteAddr().String()))
			tr.note("RemoteAddr is the peer's LocalAddr", fmt.Sprint(ra.String() == peer.LocalAddr().String()))
		}, documented: func(k semKind) map[string]string {
			return ctAddrs(k, "LocalAddr type", "RemoteAddr type", "LocalAddr network", "RemoteAddr network",
				"LocalAddr is the peer's RemoteAddr", "RemoteAddr is the peer's LocalAddr")
		}},
		{name: "methods", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			has := func(what string, ok bool) { tr.note("has "+what, fmt.Sprint(ok)) }
			has("CloseWrite", is[closeWriter](c))
			has("CloseRead", is[closeReader](c))
			has("SetLinger", is[lingerer](c))
			has("SetKeepAlive", is[keepAliver](c))
			has("SetKeepAlivePeriod", is[keepAlivePr](c))
			has("SetKeepAliveConfig", is[keepAliveCf](c))
			has("SetNoDelay", is[noDelayer](c))
			has("SetReadBuffer", is[readBufferer](c))
			has("SetWriteBuffer", is[writeBuffer](c))
			has("File", is[filer](c))
			has("SyscallConn", is[syscallConn](c))
			has("ReadFrom", is[io.ReaderFrom](c))
			has("WriteTo", is[io.WriterTo](c))
			has("type *net.TCPConn", is[*net.TCPConn](c))
			tr.err("SetKeepAlive(true)", callMethod(c, func(k keepAliver) error { return k.SetKeepAlive(true) }))
			tr.err("SetKeepAlivePeriod", callMethod(c, func(k keepAlivePr) error { return k.SetKeepAlivePeriod(30 * time.Second) }))
			tr.err("SetKeepAliveConfig", callMethod(c, func(k keepAliveCf) error {
				return k.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: time.Minute, Interval: 10 * time.Second, Count: 3})
			}))
			tr.err("SetKeepAlive(false)", callMethod(c, func(k keepAliver) error { return k.SetKeepAlive(false) }))
			tr.err("SetLinger(-1)", callMethod(c, func(l lingerer) error { return l.SetLinger(-1) }))
			tr.err("SetLinger(5)", callMethod(c, func(l lingerer) error { return l.SetLinger(5) }))
		}, documented: func(k semKind) map[string]string {
			if !k.app {
				return nil
			}
			// A Conn has what a net.TCPConn adds that a portable
			// program uses (README.md): CloseWrite, CloseRead,
			// SetLinger, SetKeepAlive and its period and config,
			// SetReadBuffer and SetWriteBuffer; a
			// program that asserts the others (or *net.TCPConn) finds
			// none and goes on without.
			m := map[string]string{}
			for _, what := range []string{"SetNoDelay", "File", "SyscallConn",
				"ReadFrom", "WriteTo", "type *net.TCPConn"} {
				m["has "+what] = "false"
			}
			if k.ct {
				// Keepalive is the daemon's TCP's: a cut-through session
				// fails with flow.ErrNotSupported (Conn.SetKeepAliveConfig).
				for _, what := range []string{"SetKeepAlive(true)", "SetKeepAlivePeriod", "SetKeepAliveConfig", "SetKeepAlive(false)"} {
					m[what] = "flow.ErrNotSupported"
				}
			}
			return m
		}},
	}
	runSemCases(t, r.kinds(), cases)
}

// semListenKind makes the listeners of one kind and their clients.
type semListenKind struct {
	name   string
	app    bool
	addr   netip.Addr                                // the address its listeners bind
	listen func(port uint16) (net.Listener, error)   // a listener on addr:port
	dial   func(to netip.AddrPort) (net.Conn, error) // a client's connect
}

// TestTCPListenerMatchesKernel: an app's TCP listener, on the wire and on
// a loopback address (cut-through alone), returns what a kernel listener
// returns, call for call: port 0 gets a port a client reaches, with an
// Addr of the type and address asked for; a second Listen of a port
// fails with EADDRINUSE, and once the first closed it succeeds; a Close
// wakes an Accept with net.ErrClosed, and after it Accept, Close and
// SetDeadline fail with net.ErrClosed, Addr stays, and a connect is
// refused.
func TestTCPListenerMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "semantics"})
	b := attach(t, d, app.Options{Name: "client"})
	loopback := netip.MustParseAddr("127.0.0.1")
	appListen := func(addr netip.Addr) func(uint16) (net.Listener, error) {
		return func(port uint16) (net.Listener, error) {
			return a.Listen("tcp://" + netip.AddrPortFrom(addr, port).String())
		}
	}
	dialFrom := func(h *nstest.Host) func(netip.AddrPort) (net.Conn, error) {
		return func(to netip.AddrPort) (c net.Conn, err error) {
			err = h.Do(func() error {
				c, err = net.DialTimeout("tcp", to.String(), 5*time.Second)
				return err
			})
			return c, err
		}
	}
	kinds := []semListenKind{
		{name: "kernel", addr: rig.A.IPv4, dial: dialFrom(rig.A), listen: func(port uint16) (l net.Listener, err error) {
			err = rig.A.Do(func() error {
				l, err = net.Listen("tcp", netip.AddrPortFrom(rig.A.IPv4, port).String())
				return err
			})
			return l, err
		}},
		{name: "wire", app: true, addr: rig.B.IPv4, listen: appListen(rig.B.IPv4), dial: dialFrom(rig.A)},
		{name: "loopback", app: true, addr: loopback, listen: appListen(loopback), dial: func(to netip.AddrPort) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return b.Dial(ctx, "tcp://"+to.String())
		}},
	}
	cases := []struct {
		name string
		run  func(t *testing.T, k semListenKind, tr *semTrace)
	}{
		{"port 0", func(t *testing.T, k semListenKind, tr *semTrace) {
			ln, err := k.listen(0)
			tr.err("Listen", err)
			if err != nil {
				return
			}
			defer ln.Close()
			addr := ln.Addr()
			tr.note("Addr type", fmt.Sprintf("%T", addr))
			tr.note("Addr network", addr.Network())
			ta, _ := addr.(*net.TCPAddr)
			tr.note("Addr is the address asked for, a port given", fmt.Sprint(ta != nil && ta.AddrPort().Addr().Unmap() == k.addr && ta.Port != 0))
			if ta == nil {
				return
			}
			c, err := k.dial(netip.AddrPortFrom(k.addr, uint16(ta.Port)))
			tr.err("a client connects to it", err)
			if err != nil {
				return
			}
			defer c.Close()
			sc := acceptWithin(t, ln)
			defer sc.Close()
			tr.note("accepted on that address", fmt.Sprint(sc.LocalAddr().String() == addr.String()))
		}},
		{"listen twice", func(t *testing.T, k semListenKind, tr *semTrace) {
			ln, err := k.listen(7510)
			tr.err("Listen", err)
			if err != nil {
				return
			}
			ln2, err := k.listen(7510)
			tr.err("Listen again", err)
			if err == nil {
				ln2.Close()
			}
			tr.err("Close", ln.Close())
			ln3, err := k.listen(7510)
			tr.err("Listen after the Close", err)
			if err == nil {
				ln3.Close()
			}
		}},
		{"Close wakes Accept", func(t *testing.T, k semListenKind, tr *semTrace) {
			ln, err := k.listen(7511)
			tr.err("Listen", err)
			if err != nil {
				return
			}
			addr := ln.Addr().String()
			acc := goCall(func() (int, error) {
				c, err := ln.Accept()
				if c != nil {
					c.Close()
					return 1, err
				}
				return 0, err
			})
			time.Sleep(50 * time.Millisecond)
			tr.err("Close", ln.Close())
			tr.awaitCall("waiting Accept (n: a conn)", acc)
			c, err := ln.Accept()
			tr.note("Accept after Close", fmt.Sprintf("conn %v %s", c != nil, errClass(err)))
			tr.err("Close again", ln.Close())
			tr.err("SetDeadline", callMethod(ln, func(d deadliner) error { return d.SetDeadline(time.Now()) }))
			tr.note("Addr unchanged", fmt.Sprint(ln.Addr().String() == addr))
			c, err = k.dial(netip.AddrPortFrom(k.addr, 7511))
			tr.err("a client connects", err)
			if c != nil {
				c.Close()
			}
		}},
		{"methods", func(t *testing.T, k semListenKind, tr *semTrace) {
			ln, err := k.listen(7512)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			_, ok := ln.(deadliner)
			tr.note("has SetDeadline", fmt.Sprint(ok))
			_, ok = ln.(filer)
			tr.note("has File", fmt.Sprint(ok))
			_, ok = ln.(syscallConn)
			tr.note("has SyscallConn", fmt.Sprint(ok))
			_, ok = ln.(*net.TCPListener)
			tr.note("has type *net.TCPListener", fmt.Sprint(ok))
		}},
	}
	for _, sc := range cases {
		t.Run(sc.name, func(t *testing.T) {
			var ref semTrace
			for i, k := range kinds {
				var tr semTrace
				sc.run(t, k, &tr)
				if i == 0 {
					ref = tr
					t.Logf("%s:%v", k.name, tr)
					continue
				}
				var doc map[string]string
				if sc.name == "methods" {
					// A Listener has SetDeadline, for Accept (README.md),
					// and no descriptor of its own.
					doc = map[string]string{"has File": "false", "has SyscallConn": "false", "has type *net.TCPListener": "false"}
				}
				compareSem(t, k.name, ref, tr, doc)
			}
		})
	}
}

// TestTCPDialMatchesKernel: an app's Dial fails as net.Dialer's
// DialContext does, error for error: a port nobody listens on is
// refused; an address with no port or a port out of range is an error
// at once; a context cancelled before the call, cancelled during a
// connect to an address that never answers, or whose deadline passes
// then, ends the dial at once with context.Canceled, or with
// context.DeadlineExceeded and a timeout.
func TestTCPDialMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "semantics"})
	kl := kernelListen(t, rig.A, ":7520")
	go serveEach(kl, func(net.Conn) {})
	kinds := []struct {
		name string
		dial func(ctx context.Context, addr string) (net.Conn, error)
	}{
		{"kernel", func(ctx context.Context, addr string) (c net.Conn, err error) {
			err = rig.A.Do(func() error {
				c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				return err
			})
			return c, err
		}},
		{"app", func(ctx context.Context, addr string) (net.Conn, error) { return a.Dial(ctx, "tcp://"+addr) }},
	}
	silent := func(last byte) string {
		b := rig.A.IPv4.As4()
		b[3] = last // in the rig's /24, owned by nobody: no answer to ARP
		return netip.AddrPortFrom(netip.AddrFrom4(b), 7520).String()
	}
	var ref semTrace
	for i, k := range kinds {
		var tr semTrace
		// timed dials addr with ctx (cancelled after cancelAfter, if
		// not 0) and notes the error, whether a program's assertion
		// err.(net.Error) holds, and whether it returned within 1s.
		timed := func(what string, ctx context.Context, addr string, cancelAfter time.Duration, cancel func()) {
			if cancelAfter > 0 {
				time.AfterFunc(cancelAfter, cancel)
			}
			start := time.Now()
			c, err := k.dial(ctx, addr)
			took := time.Since(start)
			if c != nil {
				c.Close()
			}
			if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
				// The kernel's dial ends with the connect's own deadline
				// (os.ErrDeadlineExceeded) or with ctx's
				// (context.DeadlineExceeded), as either comes first (the
				// dial may return before ctx.Err is set): a timeout both
				// ways.
				var ne net.Error
				timeout := errors.As(err, &ne) && ne.Timeout()
				dl := errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded)
				tr.note(what, fmt.Sprintf("timeout %v, a deadline error %v", timeout, dl))
			} else {
				tr.err(what, err)
			}
			if err != nil {
				_, ok := err.(net.Error)
				tr.note(what+": err.(net.Error)", fmt.Sprint(ok))
			}
			tr.note(what+": within 1s", fmt.Sprint(took < time.Second))
		}
		bg := context.Background()
		timed("refused", bg, netip.AddrPortFrom(rig.A.IPv4, 7521).String(), 0, nil)
		timed("no port", bg, rig.A.IPv4.String(), 0, nil)
		timed("port out of range", bg, rig.A.IPv4.String()+":70000", 0, nil)
		ctx, cancel := context.WithCancel(bg)
		cancel()
		timed("a cancelled context", ctx, netip.AddrPortFrom(rig.A.IPv4, 7520).String(), 0, nil)
		ctx, cancel = context.WithCancel(bg)
		timed("cancelled while connecting", ctx, silent(200), 100*time.Millisecond, cancel)
		ctx, cancel = context.WithTimeout(bg, 100*time.Millisecond)
		timed("deadline while connecting", ctx, silent(201), 0, nil)
		cancel()
		ctx, cancel = context.WithTimeout(bg, 5*time.Second)
		timed("a listener", ctx, netip.AddrPortFrom(rig.A.IPv4, 7520).String(), 0, nil)
		cancel()
		if i == 0 {
			ref = tr
			t.Logf("%s:%v", k.name, tr)
			continue
		}
		compareSem(t, k.name, ref, tr, nil)
	}
}
