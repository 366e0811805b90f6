package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
	"golang.org/x/sys/unix"
)

// The tests below play hostile clients with bare sockets (socket, connect,
// sendmsg, recvmsg), not with the package's Conn or Client.

// rawDial connects a bare SOCK_SEQPACKET socket to path.
func rawDial(t testing.TB, path string) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// rawRecv receives and decodes one record, waiting at most d. A blocking
// recvmsg on a bare descriptor returns EINTR when a signal reaches the
// thread (the Go runtime preempts goroutines with one): it is retried
// with what is left of d.
func rawRecv(fd int, d time.Duration) (Header, Message, error) {
	buf := make([]byte, MaxRecordSize)
	oob := make([]byte, oobSize)
	end := time.Now().Add(d)
	var n, oobn int
	for {
		tv := unix.NsecToTimeval(max(time.Until(end), time.Microsecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return Header{}, nil, err
		}
		var err error
		n, oobn, _, _, err = unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR && time.Now().Before(end) {
			continue
		}
		if err != nil {
			return Header{}, nil, err
		}
		break
	}
	if oobn > 0 {
		if fds, ok := parseRights(oob[:oobn]); ok {
			closeFDs(fds)
		}
	}
	if n == 0 {
		return Header{}, nil, io.EOF
	}
	return Decode(buf[:n])
}

// rawHelloFD dials and says Hello with a bare socket.
func rawHelloFD(t testing.TB, path string) int {
	t.Helper()
	fd := rawDial(t, path)
	if err := unix.Sendmsg(fd, encode(t, 1, &Hello{Major: VersionMajor}), nil, nil, 0); err != nil {
		t.Fatal(err)
	}
	if _, m, err := rawRecv(fd, 5*time.Second); err != nil || m.Type() != TypeHelloReply {
		t.Fatalf("hello: %v %v", m, err)
	}
	return fd
}

// waitEOF reads from fd until the server hangs up, within d.
func waitEOF(fd int, d time.Duration) error {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		_, _, err := rawRecv(fd, time.Until(end))
		switch {
		case err == nil, errors.Is(err, ErrMalformed):
			continue
		case errors.Is(err, io.EOF), errors.Is(err, unix.ECONNRESET):
			return nil
		default:
			return err
		}
	}
	return fmt.Errorf("still open after %v", d)
}

// runServer runs s on a fresh socket every uid may connect to, with h as
// its handler, until the test ends; stop ends it sooner and returns how
// long Serve took to return.
func runServer(t *testing.T, s *Server, h Handler) (path string, stop func() time.Duration) {
	t.Helper()
	path = sockPath(t)
	l, err := Listen(path, ListenOptions{Mode: 0o666})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(filepath.Dir(path)), 0o755); err != nil {
		t.Fatal(err)
	}
	s.Handler = h
	if s.Logf == nil {
		s.Logf = t.Logf
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	var once sync.Once
	var took time.Duration
	stop = func() time.Duration {
		once.Do(func() {
			start := time.Now()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
			took = time.Since(start)
		})
		return took
	}
	t.Cleanup(func() { stop() })
	return path, stop
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// floodShow sends Show requests on fd without ever reading the replies,
// until the socket refuses more or n were sent.
func floodShow(t *testing.T, fd, n int) int {
	t.Helper()
	for i := 0; i < n; i++ {
		rec := encode(t, uint32(i+2), &Show{What: ShowApps})
		if err := unix.Sendmsg(fd, rec, nil, nil, unix.MSG_DONTWAIT); err != nil {
			return i
		}
	}
	return n
}

// lastConn returns the server side of the latest connection.
func (d *fakeDaemon) lastConn() *Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conns[len(d.conns)-1]
}

func (d *fakeDaemon) closedErrs() []error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]error(nil), d.closed...)
}

// A client that sends requests and never reads its replies is dropped
// after SendTimeout, and counted; meanwhile other clients are served. Then
// notices to another such client return at once: a full queue drops it.
func TestStuckClientDisconnected(t *testing.T) {
	leakcheck.AtCleanup(t, leakcheck.Options{FDs: true, Goroutines: true}) // the sets of fds and goroutines at cleanup
	d := newFakeDaemon(t)
	var logs sync.Mutex
	var dropLines []string
	s := &Server{SendTimeout: 300 * time.Millisecond, Logf: func(f string, a ...any) {
		logs.Lock()
		dropLines = append(dropLines, fmt.Sprintf(f, a...))
		logs.Unlock()
	}}
	path, _ := runServer(t, s, d)
	good, err := DialClient(context.Background(), path, ClientOptions{Name: "good"})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()

	stuck := rawHelloFD(t, path)
	start := time.Now()
	sent := floodShow(t, stuck, 300)
	t.Logf("stuck client sent %d Show requests", sent)
	// Another client is served meanwhile.
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _, err := good.Call(ctx, &Unbind{Handle: 77})
		cancel()
		if err != nil {
			t.Fatalf("good client while another is stuck: %v", err)
		}
	}
	if !waitFor(5*time.Second, func() bool { return len(d.closedErrs()) == 1 }) {
		t.Fatalf("stuck client not dropped after %v", time.Since(start))
	}
	if cause := d.closedErrs()[0]; !errors.Is(cause, ErrSendTimeout) {
		t.Fatalf("handler Close got %v, want a send timeout", cause)
	}
	t.Logf("dropped after %v", time.Since(start))
	// The server counts, then logs, a drop after its handler's Close has
	// returned (ServeConn's deferred steps): wait for the log line.
	waitFor(5*time.Second, func() bool {
		logs.Lock()
		defer logs.Unlock()
		return len(dropLines) > 0
	})
	if st := s.Stats(); st.Disconnects[DisconnectSendTimeout] != 1 {
		t.Fatalf("disconnects %v, want one send_timeout", st.ByReason())
	}
	logs.Lock()
	want := fmt.Sprintf("pid %d uid %d: dropped (send_timeout)", os.Getpid(), os.Getuid())
	if len(dropLines) != 1 || !strings.Contains(dropLines[0], want) {
		t.Errorf("log %q, want one line with %q", dropLines, want)
	}
	logs.Unlock()
	if err := waitEOF(stuck, 2*time.Second); err != nil {
		t.Fatalf("stuck client's socket: %v", err)
	}

	// Notices to a stuck client never wait for it.
	stuck2 := rawHelloFD(t, path)
	sc := d.lastConn()
	floodShow(t, stuck2, 300)
	for i := 0; i < 200; i++ {
		t0 := time.Now()
		err := sc.Send(&SegmentAdded{Segments: []Segment{{Index: 1, Size: 4096}}}, d.segFD)
		if dt := time.Since(t0); dt > 100*time.Millisecond {
			t.Fatalf("notice %d to a stuck client took %v (%v)", i, dt, err)
		}
	}
	if !waitFor(5*time.Second, func() bool { return len(d.closedErrs()) == 2 }) {
		t.Fatal("second stuck client not dropped")
	}
	if cause := d.closedErrs()[1]; !errors.Is(cause, ErrSendTimeout) && !errors.Is(cause, ErrQueueFull) {
		t.Fatalf("handler Close got %v, want a send timeout or a full queue", cause)
	}
	if _, _, err := good.Call(context.Background(), &Unbind{Handle: 77}); err != nil {
		t.Fatalf("good client after: %v", err)
	}
}

// With a send timeout far away, closing the connection of a client that
// never reads, and stopping the server with another one, each return at
// once: the socket's closing ends the write stuck on the full buffer.
func TestCloseWithStuckClient(t *testing.T) {
	leakcheck.AtCleanup(t, leakcheck.Options{FDs: true, Goroutines: true}) // the sets of fds and goroutines at cleanup
	d := newFakeDaemon(t)
	s := &Server{SendTimeout: time.Minute}
	path, stop := runServer(t, s, d)

	stuck := func() (int, *Conn) {
		fd := rawHelloFD(t, path)
		c := d.lastConn()
		floodShow(t, fd, 300)
		// The replies (320 kB each) fill the socket and then the queue.
		if !waitFor(5*time.Second, func() bool {
			var used int
			c.rc.Control(func(sfd uintptr) { used, _ = unix.IoctlGetInt(int(sfd), unix.SIOCOUTQ) })
			return used > 64<<10
		}) {
			t.Fatal("socket buffer never filled")
		}
		time.Sleep(100 * time.Millisecond)
		return fd, c
	}
	fd1, c1 := stuck()
	t0 := time.Now()
	c1.Close()
	if dt := time.Since(t0); dt > time.Second {
		t.Fatalf("Conn.Close with a stuck client took %v", dt)
	}
	if !waitFor(time.Second, func() bool { return len(d.closedErrs()) == 1 }) {
		t.Fatal("connection not ended within 1s of Close")
	}
	if err := waitEOF(fd1, 2*time.Second); err != nil {
		t.Fatal(err)
	}

	stuck()
	if dt := stop(); dt > time.Second {
		t.Fatalf("Serve took %v to stop with a stuck client", dt)
	}
	st := s.Stats()
	if st.Disconnects[DisconnectClosed] != 1 || st.Disconnects[DisconnectShutdown] != 1 {
		t.Fatalf("disconnects %v", st.ByReason())
	}
}

// A bare Conn (no server): a send waiting for another send that is stuck
// on a full buffer gives up with its context, and Close unblocks the stuck
// one at once.
func TestConnSendStuckPeer(t *testing.T) {
	a, _ := pair(t)
	stuckErr := make(chan error, 1)
	go func() {
		for {
			if err := a.SendID(1, &ShowReply{JSON: make([]byte, maxShowChunk)}); err != nil {
				stuckErr <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond) // the buffer is full by now
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	if err := a.SendContext(ctx, 2, &OK{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send behind a stuck one: %v", err)
	}
	if dt := time.Since(t0); dt > 500*time.Millisecond {
		t.Fatalf("SendContext returned after %v", dt)
	}
	t0 = time.Now()
	a.Close()
	select {
	case err := <-stuckErr:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("stuck send: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not unblock the stuck send")
	}
	if dt := time.Since(t0); dt > time.Second {
		t.Fatalf("Close took %v", dt)
	}
}

func vmRSS(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// Continuation records are refused from their header, before anything is
// reassembled: 40 clients pushing endless continued messages (before and
// after Hello) cost the server no memory, and each is dropped and counted.
func TestContinuationFloodBounded(t *testing.T) {
	leakcheck.AtCleanup(t, leakcheck.Options{FDs: true, Goroutines: true}) // the sets of fds and goroutines at cleanup
	d := newFakeDaemon(t)
	var logs sync.Mutex
	var lines []string
	s := &Server{Logf: func(f string, a ...any) {
		logs.Lock()
		lines = append(lines, fmt.Sprintf(f, a...))
		logs.Unlock()
	}}
	path, _ := runServer(t, s, d)
	runtime.GC()
	before := vmRSS(t)

	reply, err := AppendRecord(nil, 7, FlagMore, &ShowReply{JSON: make([]byte, maxShowChunk)})
	if err != nil {
		t.Fatal(err)
	}
	// A request type with the continuation flag set by hand.
	show := encode(t, 7, &Show{What: ShowApps})
	show[3] |= byte(FlagMore)
	if h, err := DecodeHeader(show); err != nil || h.Flags&FlagMore == 0 || h.Type != TypeShow {
		t.Fatalf("hand-made record: %+v %v", h, err)
	}
	const clients = 40
	var wg sync.WaitGroup
	sent := make([]int, clients)
	fds := make([]int, clients)
	for i := range fds {
		if i%2 == 0 {
			fds[i] = rawDial(t, path) // before Hello
		} else {
			fds[i] = rawHelloFD(t, path)
		}
	}
	for i, fd := range fds {
		rec := reply
		if i%4 == 3 {
			rec = show
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Up to 20 MiB each, more than the old reassembly bound.
			for n := 0; n < 320; n++ {
				if err := unix.Sendmsg(fd, rec, nil, nil, 0); err != nil {
					return
				}
				sent[i]++
			}
		}()
	}
	for i, fd := range fds {
		if err := waitEOF(fd, 10*time.Second); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	wg.Wait()
	runtime.GC()
	after := vmRSS(t)
	t.Logf("VmRSS %d MiB before, %d MiB after; records sent per client: %v", before>>20, after>>20, sent)
	if after-before > 64<<20 {
		t.Fatalf("RSS grew by %d MiB", (after-before)>>20)
	}
	if !waitFor(2*time.Second, func() bool { return s.Stats().Disconnects[DisconnectNotAccepted] == clients }) {
		t.Fatalf("disconnects %v, want %d not_accepted", s.Stats().ByReason(), clients)
	}
	logs.Lock()
	defer logs.Unlock()
	if len(lines) == 0 || !strings.Contains(lines[0], "dropped (not_accepted)") {
		t.Fatalf("log %q", lines)
	}
}

// needRoot skips t unless the process runs as root (it connects as other
// uids), and fails it instead under XSESSIOND_PRIVILEGED=require, as CI
// runs the tests.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipUnprivileged(t, "needs root to connect as another uid")
	}
}

// skipUnprivileged skips t for why, or fails it under
// XSESSIOND_PRIVILEGED=require.
func skipUnprivileged(t *testing.T, why string) {
	t.Helper()
	if os.Getenv(nstest.PrivilegedEnv) == "require" {
		t.Fatalf("%s, and %s=require: run the tests as root (go test -exec sudo ./...)", why, nstest.PrivilegedEnv)
	}
	t.Skip(why)
}

// withEUID runs f on a thread whose effective uid is uid; the rest of the
// process keeps its own. Sockets connected in f carry uid as their peer
// credentials.
func withEUID(t *testing.T, uid int, f func()) {
	t.Helper()
	runtime.LockOSThread()
	const keep = ^uintptr(0) // -1: leave unchanged
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(uid), keep); e != 0 {
		runtime.UnlockOSThread()
		skipUnprivileged(t, fmt.Sprintf("setresuid: %v", e))
	}
	f()
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, 0, keep); e != 0 {
		// The thread stays locked and dies with the goroutine.
		t.Fatalf("restoring euid: %v", e)
	}
	runtime.UnlockOSThread()
}

// idleClients connects n clients as uid (its effective uid) to the server
// at path; each says Hello (a refused one's fails, which is fine) and
// nothing more. A failure is the test's error; the descriptors made so far
// are returned either way.
func idleClients(t *testing.T, path string, uid, n int) []int {
	t.Helper()
	fds := make([]int, 0, n)
	hello := encode(t, 1, &Hello{Major: VersionMajor, Name: "idle"})
	withEUID(t, uid, func() {
		for len(fds) < n {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Errorf("socket: %v", err)
				return
			}
			fds = append(fds, fd)
			if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
				t.Errorf("connect %d: %v", len(fds), err)
				return
			}
			unix.Sendmsg(fd, hello, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		}
	})
	return fds
}

// 2,000 idle clients against a limit of 1,000: those past the limit (less
// the reserve for root) are closed at once, the process's descriptors stay
// bounded, and a root client still gets answers.
func TestConnLimitRootReserve(t *testing.T) {
	needRoot(t)
	const need = 3500
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur < need && lim.Max > lim.Cur {
		// The soft limit may go up to the hard one; it is put back
		// afterwards.
		old := lim
		lim.Cur = min(lim.Max, need)
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("raise the soft limit of descriptors from %d to %d: %v", old.Cur, lim.Cur, err)
		}
		t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
	}
	if lim.Cur < need {
		if os.Getenv(nstest.PrivilegedEnv) == "require" {
			t.Fatalf("needs %d descriptors, the hard limit is %d, and %s=require: raise the hard limit (ulimit -Hn)", need, lim.Max, nstest.PrivilegedEnv)
		}
		t.Skipf("needs %d descriptors, the hard limit is %d", need, lim.Max)
	}
	leakcheck.AtCleanup(t, leakcheck.Options{Goroutines: true}) // the set of goroutines at cleanup
	d := newFakeDaemon(t)
	var logs sync.Mutex
	var limitLines int
	s := &Server{MaxConns: 1000, RootReserve: 8, MaxConnsPerUID: -1, HelloTimeout: time.Minute, IdleTimeout: time.Minute,
		Logf: func(f string, a ...any) {
			if strings.Contains(f, "over the limit") {
				logs.Lock()
				limitLines++
				logs.Unlock()
			}
		}}
	path, stop := runServer(t, s, d)
	fdsBefore := countFDs(t)
	const idle = 2000
	fds := idleClients(t, path, 65534, idle)
	defer closeFDs(fds)
	if t.Failed() {
		return
	}
	if !waitFor(10*time.Second, func() bool { return s.Stats().Accepted == idle }) {
		t.Fatalf("accepted %d of %d", s.Stats().Accepted, idle)
	}
	st := s.Stats()
	t.Logf("stats %+v", st)
	if st.Active != 1000-8 || st.Disconnects[DisconnectConnLimit] != idle-(1000-8) {
		t.Fatalf("active %d, refused %d; want %d and %d", st.Active, st.Disconnects[DisconnectConnLimit], 1000-8, idle-(1000-8))
	}
	if p := d.lastConn().Peer(); p.UID != 65534 {
		t.Fatalf("server saw the idle clients as %+v, want uid 65534", p)
	}
	// The server holds at most one descriptor per admitted connection.
	if n := countFDs(t) - fdsBefore - idle; n > 1000 {
		t.Fatalf("server holds %d descriptors", n)
	}
	logs.Lock()
	if limitLines < 1 || limitLines > 15 {
		t.Errorf("%d log lines about the limit, want a few", limitLines)
	}
	logs.Unlock()
	// Root still gets in and is answered.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := DialClient(ctx, path, ClientOptions{Name: "ctl"})
	if err != nil {
		t.Fatalf("root client over the limit: %v", err)
	}
	defer cl.Close()
	if sr, _, err := Do[*ShowReply](ctx, cl, &Show{What: ShowApps}); err != nil || len(sr.JSON) == 0 {
		t.Fatalf("root client's show: %v", err)
	}
	// The last non-root one was refused: its socket is at EOF.
	if err := waitEOF(fds[idle-1], 2*time.Second); err != nil {
		t.Fatalf("refused client: %v", err)
	}
	cl.Close()
	closeFDs(fds)
	fds = nil
	if dt := stop(); dt > 2*time.Second {
		t.Fatalf("stopping with 1,000 connections took %v", dt)
	}
}

// One uid's 300 idle clients against a bound of 100 per uid: those past it
// are closed at once, and another uid's clients still get in and are
// answered; once the first uid's close, it gets in again.
func TestConnLimitPerUID(t *testing.T) {
	needRoot(t)
	d := newFakeDaemon(t)
	s := &Server{MaxConnsPerUID: 100, HelloTimeout: time.Minute, IdleTimeout: time.Minute}
	path, _ := runServer(t, s, d)
	open := func(uid, n int) []int { return idleClients(t, path, uid, n) }
	hog := open(65534, 300)
	defer func() { closeFDs(hog) }()
	if t.Failed() {
		return
	}
	if !waitFor(10*time.Second, func() bool { return s.Stats().Accepted == 300 }) {
		t.Fatalf("accepted %d of 300", s.Stats().Accepted)
	}
	if st := s.Stats(); st.Active != 100 || st.Disconnects[DisconnectConnLimit] != 200 {
		t.Fatalf("active %d, refused %d; want 100 and 200", st.Active, st.Disconnects[DisconnectConnLimit])
	}
	if err := waitEOF(hog[299], 2*time.Second); err != nil {
		t.Fatalf("a refused client of the first uid: %v", err)
	}
	// Another uid's clients get in, and are answered.
	other := open(65533, 10)
	defer func() { closeFDs(other) }()
	if !waitFor(10*time.Second, func() bool { return s.Stats().Active == 110 }) {
		t.Fatalf("another uid's clients: active %d, want 110", s.Stats().Active)
	}
	withEUID(t, 65533, func() { unix.Close(rawHelloFD(t, path)) }) // a Hello answered
	// The first uid's clients close: it gets in again.
	closeFDs(hog)
	hog = nil
	if !waitFor(10*time.Second, func() bool { return s.Stats().Active == 10 }) {
		t.Fatalf("after the first uid's clients closed: active %d, want 10", s.Stats().Active)
	}
	again := open(65534, 1)
	defer func() { closeFDs(again) }()
	if !waitFor(10*time.Second, func() bool { return s.Stats().Active == 11 }) {
		t.Fatalf("the first uid after its clients closed: active %d, want 11", s.Stats().Active)
	}
}

// A client that says Hello and then nothing, attaching nothing, is dropped
// after IdleTimeout; an attached one is not. One that never says Hello is
// dropped after HelloTimeout.
func TestIdleAndHelloTimeouts(t *testing.T) {
	leakcheck.AtCleanup(t, leakcheck.Options{FDs: true, Goroutines: true}) // the sets of fds and goroutines at cleanup
	d := newFakeDaemon(t)
	s := &Server{IdleTimeout: 200 * time.Millisecond, HelloTimeout: 200 * time.Millisecond}
	path, _ := runServer(t, s, d)

	attached, err := DialClient(context.Background(), path, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer attached.Close()
	_, fds, err := Do[*AttachReply](context.Background(), attached, &Attach{Namespace: "blue", Secret: 42})
	if err != nil {
		t.Fatal(err)
	}
	closeFDs(fds)

	idle := rawHelloFD(t, path)
	silent := rawDial(t, path)
	t0 := time.Now()
	if err := waitEOF(idle, 3*time.Second); err != nil {
		t.Fatalf("idle client: %v", err)
	}
	if dt := time.Since(t0); dt < 150*time.Millisecond {
		t.Fatalf("idle client dropped after %v, before its timeout", dt)
	}
	if err := waitEOF(silent, 3*time.Second); err != nil {
		t.Fatalf("client without hello: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, _, err := attached.Call(context.Background(), &Unbind{Handle: 77}); err != nil {
		t.Fatalf("attached client after 2 idle timeouts: %v", err)
	}
	// Each drop is counted after the socket is closed (ServeConn's
	// deferred steps): wait for both counts.
	waitFor(5*time.Second, func() bool {
		st := s.Stats()
		return st.Disconnects[DisconnectIdle] > 0 && st.Disconnects[DisconnectHelloTimeout] > 0
	})
	st := s.Stats()
	if st.Disconnects[DisconnectIdle] != 1 || st.Disconnects[DisconnectHelloTimeout] != 1 {
		t.Fatalf("disconnects %v", st.ByReason())
	}
	errs := d.closedErrs()
	if len(errs) != 1 || !errors.Is(errs[0], ErrIdle) {
		t.Fatalf("handler Close: %v", errs)
	}
}

// credDaemon records the peer of every request.
type credDaemon struct {
	mu    sync.Mutex
	peers []Cred // guarded by mu
}

func (d *credDaemon) Open(*Conn, *Hello) (ConnHandler, error) { return d, nil }
func (d *credDaemon) Close(error)                             {}
func (d *credDaemon) Handle(_ context.Context, req Request) (Message, []int, error) {
	d.mu.Lock()
	d.peers = append(d.peers, req.Peer)
	d.mu.Unlock()
	if req.Conn == nil || req.Conn.Peer() != req.Peer {
		return nil, nil, errors.New("request without its connection")
	}
	return nil, nil, nil
}

func TestRequestPeer(t *testing.T) {
	path := sockPath(t)
	l, err := Listen(path, ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := &credDaemon{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Server{Handler: d}).Serve(ctx, l) }()
	defer func() { cancel(); <-done }()
	cl, err := DialClient(context.Background(), path, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i < 3; i++ {
		if _, _, err := cl.Call(context.Background(), &NsDel{ID: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	want := Cred{PID: int32(os.Getpid()), UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	if len(d.peers) != 3 {
		t.Fatalf("%d requests seen", len(d.peers))
	}
	for _, p := range d.peers {
		if p != want {
			t.Fatalf("peer %+v, want %+v", p, want)
		}
	}
}

func TestAttemptLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewAttemptLimiter(1, 3, 2)
	l.now = func() time.Time { return now }
	const uid = 1000
	for i := 0; i < 3; i++ {
		if !l.Allow(uid) {
			t.Fatalf("attempt %d refused within the burst", i)
		}
		if got := l.Fail(uid); got != (i == 2) {
			t.Fatalf("failure %d: exhausted %v", i, got)
		}
	}
	if l.Allow(uid) {
		t.Fatal("attempt allowed with an empty bucket")
	}
	if l.Fail(uid) {
		t.Fatal("a failure on an empty bucket reported as the first")
	}
	if !l.Allow(2000) {
		t.Fatal("another key is limited")
	}
	now = now.Add(500 * time.Millisecond)
	if l.Allow(uid) {
		t.Fatal("allowed after half a token came back")
	}
	now = now.Add(600 * time.Millisecond)
	if !l.Allow(uid) {
		t.Fatal("refused after a token came back")
	}
	if !l.Fail(uid) || l.Allow(uid) {
		t.Fatal("the token that came back was not taken")
	}
	// A guesser trying every 250 ms for 3 s gets burst + 3 s × rate checks.
	checked := 0
	for end := now.Add(3 * time.Second); !now.After(end); now = now.Add(250 * time.Millisecond) {
		if l.Allow(7) {
			checked++
			l.Fail(7)
		}
	}
	if checked != 3+3 {
		t.Fatalf("%d guesses checked in 3 s, want 6", checked)
	}
	// Bounded memory: at most maxKeys buckets.
	for k := uint64(100); k < 200; k++ {
		l.Fail(k)
	}
	if n := len(l.buckets); n > 2 {
		t.Fatalf("%d buckets kept, limit 2", n)
	}
}

// Drops are logged at most maxDropLogs times a second; the next line says
// how many were left out.
func TestDropLogRateLimited(t *testing.T) {
	var lines []string
	s := &Server{Logf: func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) }}
	p := Cred{PID: 7, UID: 1000}
	for i := 0; i < 100; i++ {
		s.logDrop(p, DisconnectMalformed, ErrMalformed)
	}
	if len(lines) != maxDropLogs {
		t.Fatalf("%d lines for 100 drops in a second, want %d", len(lines), maxDropLogs)
	}
	s.logMu.Lock()
	s.dropSecond = s.dropSecond.Add(-time.Second)
	s.logMu.Unlock()
	s.logDrop(p, DisconnectMalformed, ErrMalformed)
	want := fmt.Sprintf("(and %d more not logged)", 100-maxDropLogs)
	if len(lines) != maxDropLogs+1 || !strings.Contains(lines[maxDropLogs], want) || !strings.Contains(lines[maxDropLogs], "pid 7 uid 1000") {
		t.Fatalf("line after the pause: %q, want it to contain %q", lines[len(lines)-1], want)
	}
}

// countFDs is the number of descriptors the process holds: a bound on what
// the server keeps, not a leak check (leakcheck does those).
func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A client busy with many requests whose replies it reads late (an app
// closing hundreds of connections at once while its reader is not
// scheduled) fills its queue with replies; a notice sent then (a new
// segment) still finds room, because replies wait for room once three
// quarters of the queue is taken, and the client is not dropped. Before,
// the notice found the queue full and the daemon dropped the app
// (queue_full).
func TestNoticeRoomBesideReplies(t *testing.T) {
	leakcheck.AtCleanup(t, leakcheck.Options{FDs: true, Goroutines: true})
	d := newFakeDaemon(t)
	s := &Server{SendTimeout: 5 * time.Second, QueueLen: 16}
	path, _ := runServer(t, s, d)
	fd := rawHelloFD(t, path)
	defer unix.Close(fd)
	// Requests until the server stops taking them (its replies wait for
	// room), for at most a second.
	sent := 0
	for end := time.Now().Add(time.Second); sent < 5000 && time.Now().Before(end); {
		if unix.Sendmsg(fd, encode(t, uint32(sent+2), &Unbind{Handle: 77}), nil, nil, unix.MSG_DONTWAIT) != nil {
			time.Sleep(time.Millisecond)
			continue
		}
		sent++
	}
	sc := d.lastConn()
	// The replies fill the socket, then the queue, while nothing reads:
	// up to three quarters of it.
	q := sc.q.Load()
	queued := func() int {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.items) - q.head
	}
	if !waitFor(5*time.Second, func() bool { return queued() >= 12 }) {
		t.Fatalf("%d replies queued of %d requests", queued(), sent)
	}
	time.Sleep(100 * time.Millisecond)
	if n := queued(); n != 12 {
		t.Fatalf("%d replies queued of %d requests, want 12 (three quarters of the queue)", n, sent)
	}
	if err := sc.Send(&SegmentAdded{Segments: []Segment{{Index: 1, Size: 4096}}}, d.segFD); err != nil {
		t.Fatalf("notice beside %d requests' replies: %v", sent, err)
	}
	replies, notices := 0, 0
	for replies < sent || notices < 1 {
		_, m, err := rawRecv(fd, 5*time.Second)
		if err != nil {
			t.Fatalf("after %d replies and %d notices of %d requests: %v", replies, notices, sent, err)
		}
		switch m.(type) {
		case *OK, *Error:
			replies++
		case *SegmentAdded:
			notices++
		}
	}
	if errs := d.closedErrs(); len(errs) != 0 {
		t.Fatalf("client dropped: %v", errs)
	}
}

// Notices that other clients' requests cause (a cut-through session's
// Accepted, sent on the listening app's connection) go with TrySend: a
// flood of them, faster than the client reads, is refused past half of
// its queue and never drops it; its own notices still find room, and it
// gets every notice queued once it reads. Send of the same flood drops
// the client, as a notice to one that does not read must.
func TestTrySendFloodKeepsClient(t *testing.T) {
	leakcheck.AtCleanup(t, leakcheck.Options{FDs: true, Goroutines: true})
	d := newFakeDaemon(t)
	s := &Server{SendTimeout: 5 * time.Second, QueueLen: 16}
	path, _ := runServer(t, s, d)
	accepted := &Accepted{Listener: 77, SessionInfo: SessionInfo{Handle: 5, CutThrough: true}}
	flood := func(send func(Message, ...int) error) (sent int, err error) {
		for sent < 5000 {
			if err = send(accepted, d.segFD, d.eventFD); err != nil {
				return sent, err
			}
			sent++
		}
		return sent, nil
	}

	fd := rawHelloFD(t, path)
	sc := d.lastConn()
	sent, err := flood(func(m Message, fds ...int) error { return sc.TrySend(50*time.Millisecond, m, fds...) })
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("%d notices, then %v; want ErrQueueFull", sent, err)
	}
	if err := sc.Send(&SegmentAdded{Segments: []Segment{{Index: 1, Size: 4096}}}, d.segFD); err != nil {
		t.Fatalf("the client's own notice after %d refused ones: %v", sent, err)
	}
	got, own := 0, 0
	for got < sent || own < 1 {
		_, m, err := rawRecv(fd, 5*time.Second)
		if err != nil {
			t.Fatalf("after %d of %d notices: %v", got, sent, err)
		}
		switch m.(type) {
		case *Accepted:
			got++
		case *SegmentAdded:
			own++
		}
	}
	if err := unix.Sendmsg(fd, encode(t, 9, &Unbind{Handle: 77}), nil, nil, 0); err != nil {
		t.Fatal(err)
	}
	if _, m, err := rawRecv(fd, 5*time.Second); err != nil || m.Type() != TypeOK {
		t.Fatalf("request after the flood: %v %v", m, err)
	}
	if errs := d.closedErrs(); len(errs) != 0 || s.Stats().Disconnects[DisconnectQueueFull] != 0 {
		t.Fatalf("client dropped: %v %v", errs, s.Stats().ByReason())
	}

	// The same flood with Send.
	fd2 := rawHelloFD(t, path)
	sent, err = flood(d.lastConn().Send)
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("%d notices with Send, then %v; want ErrQueueFull", sent, err)
	}
	if err := waitEOF(fd2, 5*time.Second); err != nil {
		t.Fatalf("client flooded with Send: %v", err)
	}
	if !waitFor(5*time.Second, func() bool { return s.Stats().Disconnects[DisconnectQueueFull] == 1 }) {
		t.Fatalf("disconnects %v, want one queue_full", s.Stats().ByReason())
	}
}
