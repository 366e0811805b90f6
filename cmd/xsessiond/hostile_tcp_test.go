package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// kernelEcho is a kernel TCP echo server on host A that records how each
// of its connections ended: a reset, or the peer's FIN.
type kernelEcho struct {
	ln     net.Listener
	mu     sync.Mutex
	resets int
	fins   int
	other  []error
	wg     sync.WaitGroup
}

func startKernelEcho(t *testing.T, rig *nstest.Pair, port int) *kernelEcho {
	t.Helper()
	k := &kernelEcho{}
	if err := rig.A.Do(func() (err error) {
		k.ln, err = net.Listen("tcp", ":"+strconv.Itoa(port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.ln.Close(); k.wg.Wait() })
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		for {
			c, err := k.ln.Accept()
			if err != nil {
				return
			}
			k.wg.Add(1)
			go func() {
				defer k.wg.Done()
				defer c.Close()
				_, err := io.Copy(c, c)
				k.mu.Lock()
				defer k.mu.Unlock()
				switch {
				case err == nil:
					k.fins++
				case errors.Is(err, syscall.ECONNRESET):
					k.resets++
				default:
					k.other = append(k.other, err)
				}
			}()
		}
	}()
	return k
}

func (k *kernelEcho) counts() (resets, fins int, other []error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.resets, k.fins, append([]error(nil), k.other...)
}

// hostileApp is an app of the test's own on the control socket and its
// segments, which does to its TCP sessions' fifos what it likes.
type hostileApp struct {
	r     *rawClient
	id    uint32 // the app's id, as ctl show lists it
	segs  map[uint32]*fifo.Segment
	evq   *fifo.EventQueue
	kicks []int
	evs   []fifo.Event
	kept  []fifo.SessionEvent // events read while waiting for others
}

func attachHostile(t *testing.T, sock string, scope flow.Scope) *hostileApp {
	t.Helper()
	h := &hostileApp{r: dialRaw(t, sock), segs: map[uint32]*fifo.Segment{}, evs: make([]fifo.Event, 64)}
	rep, fds, err := h.r.callFDs(&api.Attach{Name: "hostile", Scope: scope})
	if err != nil {
		t.Fatalf("hostile attach: %v", err)
	}
	ar := rep.(*api.AttachReply)
	h.id = ar.AppIndex
	// The segments own their descriptors, the event queue its epoll set.
	t.Cleanup(func() { api.CloseFDs(fds[len(ar.Segments)+1:]) })
	for i, s := range ar.Segments {
		seg, err := fifo.MapSegment(fds[i])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { seg.Close() })
		h.segs[s.Index] = seg
	}
	h.kicks = fds[len(ar.Segments)+1:]
	h.evq, err = fifo.OpenEventQueue(h.segs[ar.EventQueue.Segment], uint32(ar.EventQueue.Offset), fds[len(ar.Segments)])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.evq.Close() })
	return h
}

// event waits up to d for the first event of session handle (any handle
// when 0) that match accepts, keeping the others for later calls.
func (h *hostileApp) event(t *testing.T, d time.Duration, match func(fifo.SessionEvent) bool) fifo.SessionEvent {
	t.Helper()
	for i, se := range h.kept {
		if match(se) {
			h.kept = append(h.kept[:i], h.kept[i+1:]...)
			return se
		}
	}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		n, err := h.evq.PopBatch(h.evs)
		if err != nil && !errors.Is(err, fifo.ErrEmpty) {
			t.Fatalf("hostile app's event queue: %v", err)
		}
		for i := range n {
			se := fifo.DecodeSessionEvent(&h.evs[i])
			if match(se) {
				h.kept = append(h.kept, h.decodeRest(h.evs[i+1:n])...)
				return se
			}
			h.kept = append(h.kept, se)
		}
		if n == 0 {
			time.Sleep(200 * time.Microsecond)
		}
	}
	t.Fatalf("hostile app: no matching event within %v (kept %+v)", d, h.kept)
	return fifo.SessionEvent{}
}

// sessions returns what `ctl show apps` says of the app: its sessions
// open, and those the daemon ended that it has not closed.
func (h *hostileApp) sessions(t *testing.T, sock string) (open, ended int) {
	t.Helper()
	out, err := ctl(t, sock, "show", "apps", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var apps []daemon.AppView
	if err := json.Unmarshal([]byte(out), &apps); err != nil {
		t.Fatalf("apps json: %v\n%s", err, out)
	}
	for _, a := range apps {
		if a.ID == h.id {
			return a.Sessions, a.Ended
		}
	}
	t.Fatalf("the hostile app (%d) is not in show apps:\n%s", h.id, out)
	return 0, 0
}

func (h *hostileApp) decodeRest(evs []fifo.Event) []fifo.SessionEvent {
	out := make([]fifo.SessionEvent, len(evs))
	for i := range evs {
		out[i] = fifo.DecodeSessionEvent(&evs[i])
	}
	return out
}

// call sends m and reads its reply, mapping the segments the daemon adds
// meanwhile (SegmentAdded notices).
func (h *hostileApp) call(t *testing.T, m api.Message) (api.Message, error) {
	t.Helper()
	rep, fds, err := h.callFDs(t, m)
	api.CloseFDs(fds)
	return rep, err
}

// callFDs is call that returns the descriptors the reply carries.
func (h *hostileApp) callFDs(t *testing.T, m api.Message) (api.Message, []int, error) {
	t.Helper()
	return h.r.callNotices(m, func(id uint32, msg api.Message, fds []int) bool { return h.mapAdded(t, id, msg, fds) })
}

// mapAdded maps the segments of a SegmentAdded notice (id 0) and reports
// whether msg was one.
func (h *hostileApp) mapAdded(t *testing.T, id uint32, msg api.Message, fds []int) bool {
	t.Helper()
	sa, ok := msg.(*api.SegmentAdded)
	if !ok || id != 0 {
		return false
	}
	for i, sg := range sa.Segments {
		seg, err := fifo.MapSegment(fds[i])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { seg.Close() })
		h.segs[sg.Index] = seg // it owns fds[i]
	}
	return true
}

// notice reads one message from the control socket, where only notices
// come while no call waits for its reply.
func (h *hostileApp) notice(t *testing.T) {
	t.Helper()
	id, msg, fds, err := h.r.c.RecvID()
	if err != nil {
		t.Fatalf("hostile app's control socket: %v", err)
	}
	if !h.mapAdded(t, id, msg, fds) {
		api.CloseFDs(fds)
	}
}

func (h *hostileApp) fifoAt(t *testing.T, ref fifo.FifoRef) *fifo.Fifo {
	t.Helper()
	seg := h.segs[ref.Segment]
	for seg == nil {
		// The session's event may come before the notice that brings
		// its segment: read the control socket until it comes.
		h.notice(t)
		seg = h.segs[ref.Segment]
	}
	f, err := seg.FifoAt(ref.Offset)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// kick wakes every worker, as an app that queued data does.
func (h *hostileApp) kick() {
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	for _, k := range h.kicks {
		unix.Write(k, one)
	}
}

// TestHostileTCPFifos runs the daemon binary with a hostile app that opens
// wire TCP connections to a kernel echo server on host A and breaks its
// sessions' fifos (a tx fifo's tail more than its size past the head, an
// rx fifo's head past its tail, random values in every index and flag a
// side writes), while an honest app streams random bytes through the same
// server. Each broken connection is reset on the wire (the kernel server
// sees ECONNRESET) and the hostile app gets a reset event saying why
// (flow.ErrFifoCorrupt); the daemon counts them (its metric) and keeps
// running; the honest app's bytes all come back exact; once the hostile
// app closed its sessions nothing of them is left.
func TestHostileTCPFifos(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	xs, _ := binaries(t)
	sock := filepath.Join(t.TempDir(), "api.sock")
	d := startProcess(t, xs, "run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock,
		"--metrics-addr", "127.0.0.1:0")
	d.waitLine(t, "xsessiond started", 15*time.Second)
	m := regexp.MustCompile(`metrics listening.*addr=(\S+)`).FindStringSubmatch(d.output())
	if m == nil {
		t.Fatalf("the daemon did not say where its metrics are:\n%s", d.output())
	}
	metricsAddr := m[1]

	const port = 7300
	echo := startKernelEcho(t, rig, port)
	uri := fmt.Sprintf("tcp://%s:%d", rig.A.IPv4, port)

	// The honest app streams random bytes through the echo server until
	// the hostile one is done, and checks every byte that comes back.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, hc := attachDial(t, ctx, sock, "honest", flow.ScopeGlobal, uri)
	var stop atomic.Bool
	var sent, echoed atomic.Int64
	honestDone := make(chan error, 2)
	go func() {
		src := rand.NewChaCha8([32]byte{5, 6})
		buf := make([]byte, 8<<10)
		for !stop.Load() {
			src.Read(buf)
			if _, err := hc.Write(buf); err != nil {
				honestDone <- fmt.Errorf("honest write after %d bytes: %w", sent.Load(), err)
				return
			}
			sent.Add(int64(len(buf)))
			time.Sleep(100 * time.Microsecond)
		}
		honestDone <- hc.(interface{ CloseWrite() error }).CloseWrite()
	}()
	go func() {
		src := rand.NewChaCha8([32]byte{5, 6})
		buf, want := make([]byte, 8<<10), make([]byte, 8<<10)
		for {
			n, err := hc.Read(buf)
			src.Read(want[:n])
			if !bytes.Equal(buf[:n], want[:n]) {
				honestDone <- fmt.Errorf("the honest app's echo differs from what it sent after %d bytes", echoed.Load())
				return
			}
			echoed.Add(int64(n))
			if err == io.EOF {
				honestDone <- nil
				return
			}
			if err != nil {
				honestDone <- fmt.Errorf("honest read after %d bytes: %w", echoed.Load(), err)
				return
			}
		}
	}()

	h := attachHostile(t, sock, flow.ScopeGlobal)
	rng := rand.New(rand.NewPCG(7, 8))
	const rounds = 60
	wantResets := 0
	var handles []flow.Handle
	for i := range rounds {
		rep, err := h.call(t, &api.Connect{URI: uri, Opaque: uint32(i + 1)})
		if err != nil {
			t.Fatalf("round %d: hostile connect: %v", i, err)
		}
		_ = rep.(*api.ConnectReply)
		se := h.event(t, 5*time.Second, func(se fifo.SessionEvent) bool {
			return (se.Type == fifo.EventConnected || se.Type == fifo.EventConnectFailed) && se.Opaque == uint32(i+1)
		})
		if se.Type == fifo.EventConnectFailed {
			t.Fatalf("round %d: connect failed: code %d", i, se.Code)
		}
		hnd := flow.Handle(se.Handle)
		handles = append(handles, hnd)
		rx, tx := h.fifoAt(t, se.Rx), h.fifoAt(t, se.Tx)
		mode := i % 3
		switch mode {
		case 0: // the producer's index more than the fifo's size ahead
			fifotest.SetTail(tx, fifotest.Head(tx)+tx.Size()+1+uint32(rng.IntN(1<<20)))
			tx.SetEvent()
		case 1: // the consumer's index past the producer's, then data to echo
			fifotest.SetHead(rx, fifotest.Tail(rx)+1+uint32(rng.IntN(1<<20)))
			if _, err := tx.Enqueue([]byte("echo me into a broken rx fifo")); err != nil {
				t.Fatal(err)
			}
			tx.SetEvent()
		case 2: // random values in everything either side writes
			for _, f := range []*fifo.Fifo{rx, tx} {
				hd := fifotest.Header(f)
				for _, off := range []int{fifo.FifoOffTail, fifo.FifoOffHead, 192, 196, 200, 204} {
					v := rng.Uint32()
					hd[off], hd[off+1], hd[off+2], hd[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
				}
			}
		}
		h.kick()
		if mode == 2 {
			continue // what the daemon makes of it depends on the values
		}
		wantResets++
		se = h.event(t, 5*time.Second, func(se fifo.SessionEvent) bool {
			return flow.Handle(se.Handle) == hnd && (se.Type == fifo.EventReset || se.Type == fifo.EventDisconnected)
		})
		if se.Type != fifo.EventReset || flow.Code(se.Code) != flow.CodeFifoCorrupt {
			t.Fatalf("round %d (mode %d): event %v code %d, want a reset with code %d (fifo corrupt)", i, mode, se.Type, se.Code, flow.CodeFifoCorrupt)
		}
	}
	// The hostile app closes what it opened: a session the daemon ended
	// keeps its fifos until then.
	if open, ended := h.sessions(t, sock); open+ended != rounds {
		t.Fatalf("show apps: the hostile app has %d sessions and %d ended before it closed them, want %d in all", open, ended, rounds)
	}
	for _, hnd := range handles {
		if _, err := h.call(t, &api.Disconnect{Handle: hnd}); err != nil {
			t.Fatalf("disconnect %#x: %v", uint64(hnd), err)
		}
	}
	stop.Store(true)
	for range 2 {
		if err := <-honestDone; err != nil {
			t.Fatal(err)
		}
	}
	if echoed.Load() != sent.Load() || sent.Load() == 0 {
		t.Fatalf("the honest app sent %d bytes and got %d back", sent.Load(), echoed.Load())
	}

	// Every broken connection was reset on the wire.
	deadline := time.Now().Add(5 * time.Second)
	for {
		resets, _, other := echo.counts()
		if len(other) > 0 {
			t.Fatalf("kernel echo server: %v", other)
		}
		if resets >= wantResets {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the kernel server saw %d resets, want at least %d", resets, wantResets)
		}
		time.Sleep(20 * time.Millisecond)
	}
	body := scrapeURL(t, "http://"+metricsAddr+"/metrics")
	corrupt := sample(t, body, `xsessiond_tcp_fifo_corrupt_total{namespace="default"}`)
	if corrupt < float64(wantResets) || corrupt > rounds {
		t.Errorf("xsessiond_tcp_fifo_corrupt_total = %v, want %d to %d", corrupt, wantResets, rounds)
	}
	// Nothing of the hostile app's is left.
	deadline = time.Now().Add(5 * time.Second)
	for {
		open, ended := h.sessions(t, sock)
		if open+ended == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hostile app has %d sessions and %d ended after it closed them all", open, ended)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resets, fins, _ := echo.counts()
	t.Logf("%d hostile connections, %d of them certainly corrupt (metric %v); kernel server: %d resets, %d FINs; the honest app's %d bytes came back exact",
		rounds, wantResets, corrupt, resets, fins, echoed.Load())
}

// attachDial attaches an app named name with scope and dials uri from it;
// the app is closed when the test ends, if not before.
func attachDial(t *testing.T, ctx context.Context, sock, name string, scope flow.Scope, uri string) (*app.App, net.Conn) {
	t.Helper()
	a, err := app.Attach(ctx, app.Options{Socket: sock, Name: name, Scope: scope})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	c, err := a.Dial(ctx, uri)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", name, uri, err)
	}
	return a, c
}

// localListener attaches an app named name with local scope and listens
// on uri; both are closed when the test ends.
func localListener(t *testing.T, ctx context.Context, sock, name, uri string) net.Listener {
	t.Helper()
	a, err := app.Attach(ctx, app.Options{Socket: sock, Name: name, Scope: flow.ScopeLocal})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ln, err := a.Listen(uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// scrapeURL returns the body of a GET of url.
func scrapeURL(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// sample returns the value of the metric sample named name (with labels).
func sample(t *testing.T, body, name string) float64 {
	t.Helper()
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%q: %v", l, err)
			}
			return f
		}
	}
	t.Fatalf("no sample %s", name)
	return 0
}

// TestHostileCutThroughTCP has a hostile app open cut-through TCP sessions
// to an honest app's listener and break the fifos they share: the
// honest app's read of a tx fifo whose tail ran more than its size ahead,
// and its write into an rx fifo whose head is far past its tail, fail
// as a reset because of the corrupt fifo (ECONNRESET and
// flow.ErrFifoCorrupt; no hang, no crash, nothing read out of bounds);
// the honest app's other sessions go on, and once both ends closed, nothing
// of the sessions is left.
func TestHostileCutThroughTCP(t *testing.T) {
	_, sock, _ := startRigDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const port = 7400
	ln := localListener(t, ctx, sock, "honest", fmt.Sprintf("tcp://0.0.0.0:%d", port))
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	accept := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("the honest app accepted nothing")
			return nil
		}
	}

	h := attachHostile(t, sock, flow.ScopeLocal)
	uri := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	for mode := range 2 {
		rep, fds, err := h.callFDs(t, &api.Connect{URI: uri})
		if err != nil {
			t.Fatalf("hostile connect: %v", err)
		}
		cr := rep.(*api.ConnectReply)
		if !cr.CutThrough || len(fds) != 2 {
			api.CloseFDs(fds)
			t.Fatalf("connect: cut-through %v with %d descriptors, want a cut-through session", cr.CutThrough, len(fds))
		}
		seg, err := fifo.MapSegment(fds[0])
		if err != nil {
			t.Fatal(err)
		}
		wake := fds[1]
		rx, err := seg.FifoAt(cr.Rx.Offset)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := seg.FifoAt(cr.Tx.Offset)
		if err != nil {
			t.Fatal(err)
		}
		c := accept()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		var what string
		switch mode {
		case 0: // the honest app reads from a tx fifo whose tail ran ahead
			fifotest.SetTail(tx, fifotest.Head(tx)+tx.Size()+5)
			tx.SetEvent()
			unix.Write(wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
			_, err = c.Read(make([]byte, 4096))
			what = "read"
		case 1: // the honest app writes into an rx fifo whose head is far past its tail
			// (a writer may cache the head while its room lasts: it
			// reads it again, and finds it broken, once it filled that)
			fifotest.SetHead(rx, fifotest.Tail(rx)+1<<31)
			_, err = c.Write(make([]byte, 4*rx.Size()))
			what = "write"
		}
		// Reset as a wire session whose fifo is corrupt: ECONNRESET
		// because of flow.ErrFifoCorrupt.
		if !errors.Is(err, flow.ErrFifoCorrupt) || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("the honest app's %s on a broken cut-through session: %v, want ECONNRESET and flow.ErrFifoCorrupt", what, err)
		}
		// The honest app's reset may have ended the session for both
		// ends already (a cut-through session leaves nothing to
		// disconnect then).
		if _, err := h.call(t, &api.Disconnect{Handle: cr.Handle}); err != nil && !errors.Is(err, flow.ErrNoSession) {
			t.Fatalf("hostile disconnect: %v", err)
		}
		c.Close()
		seg.Close()
		unix.Close(wake)
	}

	// The honest app goes on serving another app.
	_, oc := attachDial(t, ctx, sock, "other", flow.ScopeLocal, uri)
	sc := accept()
	go io.Copy(sc, sc)
	msg := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{9}).Read(msg)
	go oc.Write(msg)
	got := make([]byte, len(msg))
	oc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(oc, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through the honest app after the hostile sessions: %v (equal %v)", err, bytes.Equal(got, msg))
	}
	if out, err := ctl(t, sock, "show", "sessions", "--json"); err != nil || !strings.Contains(out, `"handle"`) {
		t.Fatalf("show sessions with a session open: %v\n%s", err, out)
	}
	oc.Close()
	sc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := ctl(t, sock, "show", "sessions", "--json")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, `"handle"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions left after both ends closed them:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCutThroughBound: a hostile app that opens cut-through sessions to an
// honest app's listener, never closing them, stops at its bound
// (limits.max_cut_through_per_app) with ErrLimit; the daemon holds one
// descriptor per session, so its descriptors stay bounded; other apps
// still connect to the honest app, and once the hostile app closes
// them nothing is left.
func TestCutThroughBound(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	xs, _ := binaries(t)
	dir := t.TempDir()
	sock, cfg := filepath.Join(dir, "api.sock"), filepath.Join(dir, "xsessiond.yaml")
	const bound = 50
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("limits:\n  max_cut_through_per_app: %d\n", bound)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startProcess(t, xs, "run", "--config", cfg, "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	fds := func() int {
		es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln := localListener(t, ctx, sock, "honest", "tcp://0.0.0.0:7400")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	h := attachHostile(t, sock, flow.ScopeLocal)
	before := fds()
	var handles []flow.Handle
	for i := 0; ; i++ {
		rep, cfds, err := h.callFDs(t, &api.Connect{URI: "tcp://127.0.0.1:7400"})
		if err != nil {
			if !errors.Is(err, flow.ErrLimit) || i != bound {
				t.Fatalf("connect %d: %v, want ErrLimit at %d", i, err, bound)
			}
			break
		}
		api.CloseFDs(cfds)
		handles = append(handles, rep.(*api.ConnectReply).Handle)
	}
	if grown := fds() - before; grown > bound+10 {
		t.Fatalf("the daemon holds %d more descriptors for %d sessions", grown, bound)
	}
	other, oc := attachDial(t, ctx, sock, "other", flow.ScopeLocal, "tcp://127.0.0.1:7400")
	oc.Write([]byte("ping"))
	got := make([]byte, 4)
	oc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(oc, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo through the honest app: %q %v", got, err)
	}
	oc.Close()
	other.Close() // its descriptors in the daemon go too
	for _, hnd := range handles {
		if _, err := h.call(t, &api.Disconnect{Handle: hnd}); err != nil {
			t.Fatalf("disconnect %#x: %v", uint64(hnd), err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		open, ended := h.sessions(t, sock)
		if open+ended == 0 && fds() <= before+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the hostile app closed its sessions: %d open, %d ended; the daemon's descriptors %d, %d before", open, ended, fds(), before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
