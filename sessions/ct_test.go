package sessions_test

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/sessions"
	"github.com/xsessiond/xsessiond/sessions/sessionstest"
)

// mapAs maps seg as another process would: its own mapping of a duplicate
// of the segment's fd.
func mapAs(t *testing.T, seg sessions.Segment) *fifo.Segment {
	t.Helper()
	fd, err := syscall.Dup(seg.FD())
	if err != nil {
		t.Fatal(err)
	}
	m, err := fifo.MapSegment(fd)
	if err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func popOne(t *testing.T, am sessions.AppMemory) fifo.Event {
	t.Helper()
	m, ok := sessions.FifoManager(am)
	if !ok {
		t.Fatal("not a fifo-backed app")
	}
	evs := make([]fifo.Event, 4)
	n, err := m.EventQueue().PopBatch(evs)
	if err != nil || n != 1 {
		t.Fatalf("event queue: %d events, %v", n, err)
	}
	return evs[0]
}

// pump sends n pseudo-random bytes (seeded by seed) into w and returns their
// SHA-256.
func pump(w *fifo.Fifo, n int, seed uint64) [32]byte {
	h := sha256.New()
	r := rand.New(rand.NewPCG(seed, seed))
	buf := make([]byte, 64<<10)
	for sent := 0; sent < n; {
		c := min(len(buf), n-sent)
		for i := 0; i < c; i += 8 {
			v := r.Uint64()
			for j := 0; j < 8 && i+j < c; j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		h.Write(buf[:c])
		for off := 0; off < c; {
			k, err := w.Enqueue(buf[off:c])
			if err != nil {
				runtime.Gosched()
				continue
			}
			off += k
		}
		sent += c
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// drain reads n bytes from r and returns their SHA-256.
func drain(r *fifo.Fifo, n int) [32]byte {
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for got := 0; got < n; {
		k, err := r.Dequeue(buf[:min(len(buf), n-got)])
		if err != nil {
			runtime.Gosched()
			continue
		}
		h.Write(buf[:k])
		got += k
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// TestCutThrough_100MB: two local apps exchange 100 MB each way through a
// cut-through session in a real memfd segment, each side mapping the
// segment on its own and finding its fifos from its event queue. The
// test moves the bytes itself, with no datapath, so that they do not go
// over lo is not checked here.
func TestCutThrough_100MB(t *testing.T) {
	const n = 100 << 20
	view := sessionstest.NewView().Add(2, 1, addrA)
	note := &sessionstest.Notifier{}
	l, err := sessions.New(sessions.Config{View: view, Memory: sessions.FifoMemory{}, Notifier: note, Default: sessions.NamespaceConfig{IfIndex: 2, FIB4: 1}})
	if err != nil {
		t.Fatal(err)
	}
	srvAt, err := l.Attach(sessions.AttachOptions{ClientID: 1, Name: "srv", Scope: sessions.ScopeLocal, RxFifoSize: 1 << 20, TxFifoSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	cliAt, err := l.Attach(sessions.AttachOptions{ClientID: 2, Name: "cli", Scope: sessions.ScopeLocal, RxFifoSize: 1 << 20, TxFifoSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Detach(cliAt.App)
	defer l.Detach(srvAt.App)
	lh, err := l.BindURI(srvAt.App, "tcp://0.0.0.0:7777")
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.ConnectURI(cliAt.App, "tcp://127.0.0.1:7777", 9)
	if err != nil || !res.CutThrough {
		t.Fatalf("connect: %+v %v", res, err)
	}
	sev, cev := popOne(t, srvAt.Memory), popOne(t, cliAt.Memory)
	if sev.Type != fifo.EventAccepted || sev.Flags&sessions.FlagCutThrough == 0 || sessions.Handle(sev.Args[2]) != lh {
		t.Fatalf("server event %+v", sev)
	}
	if cev.Type != fifo.EventConnected || cev.Arg32 != 9 || sessions.Handle(cev.Handle) != res.Handle {
		t.Fatalf("client event %+v", cev)
	}
	// The segment reaches apps over the control socket: the daemon finds
	// it in the events its Notifier sees.
	var ctSeg sessions.Segment
	for _, ev := range note.Events() {
		if ev.Kind == sessions.EventConnected && ev.Handle == res.Handle {
			ctSeg = ev.Pair.Segment
		}
	}
	if ctSeg == nil || ctSeg.FD() < 0 {
		t.Fatalf("no cut-through segment with a descriptor in the notifier's events: %v", ctSeg)
	}
	srvSeg, cliSeg := mapAs(t, ctSeg), mapAs(t, ctSeg)
	at := func(seg *fifo.Segment, arg uint64) *fifo.Fifo {
		f, err := seg.FifoAt(fifo.RefFromArg(arg).Offset)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	srvRx, srvTx := at(srvSeg, sev.Args[0]), at(srvSeg, sev.Args[1])
	cliRx, cliTx := at(cliSeg, cev.Args[0]), at(cliSeg, cev.Args[1])

	c2s, s2c := make(chan [32]byte, 2), make(chan [32]byte, 2)
	go func() { c2s <- pump(cliTx, n, 1) }()
	go func() { c2s <- drain(srvRx, n) }()
	go func() { s2c <- pump(srvTx, n, 2) }()
	go func() { s2c <- drain(cliRx, n) }()
	a, b := <-c2s, <-c2s
	c, d := <-s2c, <-s2c
	if a != b {
		t.Fatalf("client to server: checksums differ %x %x", a, b)
	}
	if c != d {
		t.Fatalf("server to client: checksums differ %x %x", c, d)
	}
	if err := l.Disconnect(cliAt.App, res.Handle); err != nil {
		t.Fatal(err)
	}
	if ev := popOne(t, srvAt.Memory); ev.Type != fifo.EventDisconnected {
		t.Fatalf("server event after disconnect %+v", ev)
	}
}

// TestFifoMemory_NoLeaks: attach, sessions of every kind and detach leave no
// file descriptor and no goroutine behind. It uses leakcheck: sets of
// descriptors and goroutines, polled until they settle.
func TestFifoMemory_NoLeaks(t *testing.T) {
	view := sessionstest.NewView().Add(2, 1, addrA)
	dp := sessionstest.NewDatapath(addrA, addrA6)
	l, err := sessions.New(sessions.Config{View: view, Memory: sessions.FifoMemory{}, Datapath: dp, Default: sessions.NamespaceConfig{IfIndex: 2, FIB4: 1}})
	if err != nil {
		t.Fatal(err)
	}
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true})
	for round := 0; round < 3; round++ {
		srv, err := l.Attach(sessions.AttachOptions{ClientID: 1, Scope: sessions.ScopeLocal | sessions.ScopeGlobal, SegmentSize: 1 << 20, AddSegmentSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		cli, err := l.Attach(sessions.AttachOptions{ClientID: 2, Scope: sessions.ScopeLocal | sessions.ScopeGlobal})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.BindURI(srv.App, "udp://0.0.0.0:53"); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if _, err := l.ConnectURI(cli.App, "udp://127.0.0.1:53", 0); err != nil {
				t.Fatal(err)
			}
		}
		// Enough established sessions to add segments to srv's manager.
		for i := 0; i < 40; i++ {
			ho, err := l.ConnectURI(srv.App, fmt.Sprintf("udp://192.0.2.7:%d", 1000+i), 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.Connected(0, ho.Handle); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(srv.Memory.Segments()); n < 2 {
			t.Fatalf("server has %d segments, want a segment added", n)
		}
		ho, err := l.ConnectURI(cli.App, "udp://192.0.2.7:9", 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Connected(0, ho.Handle); err != nil {
			t.Fatal(err)
		}
		if err := l.Detach(srv.App); err != nil {
			t.Fatal(err)
		}
		if err := l.Detach(cli.App); err != nil {
			t.Fatal(err)
		}
		l.Shard(0).Drain()
	}
	leaks.Check(t)
}

// TestCutThrough_FifoMemoryBound: the fifos of a cut-through session,
// both directions, count against the fifo memory of the app that opened
// it, as its own sessions' fifos do, until the session closes: a client
// cannot hold more segment memory through cut-through sessions than its
// bound, nor open one whose fifos alone exceed it. The listening app's
// bound is not charged, so clients cannot use up a listener's memory.
func TestCutThrough_FifoMemoryBound(t *testing.T) {
	leakcheck.AtCleanup(t, leakcheck.Options{FDs: true}) // the set of fds once every app detached
	view := sessionstest.NewView().Add(2, 1, addrA)
	l, err := sessions.New(sessions.Config{View: view, Memory: sessions.FifoMemory{}, Default: sessions.NamespaceConfig{IfIndex: 2, FIB4: 1}})
	if err != nil {
		t.Fatal(err)
	}
	const fifoSize = 64 << 10
	attach := func(id uint64, rx uint32, maxMem uint64) sessions.AppID {
		t.Helper()
		at, err := l.Attach(sessions.AttachOptions{ClientID: id, Scope: sessions.ScopeLocal, RxFifoSize: rx, TxFifoSize: fifoSize,
			SegmentSize: 1 << 20, MaxFifoMemory: maxMem})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Detach(at.App) })
		return at.App
	}
	// The listener's own bound holds one session's fifos only.
	srv := attach(1, fifoSize, 2*fifoSize)
	if _, err := l.BindURI(srv, "tcp://0.0.0.0:7000"); err != nil {
		t.Fatal(err)
	}
	cli := attach(2, fifoSize, 5*fifoSize) // room for two sessions' fifos
	var first sessions.Handle
	for i := range 2 {
		res, err := l.ConnectURI(cli, "tcp://127.0.0.1:7000", uint32(i))
		if err != nil || !res.CutThrough {
			t.Fatalf("connect %d: %+v %v", i, res, err)
		}
		if i == 0 {
			first = res.Handle
		}
	}
	_, err = l.ConnectURI(cli, "tcp://127.0.0.1:7000", 2)
	wantErr(t, err, sessions.ErrNoMemory)
	// Another client reaches the listener whatever the first one holds.
	other := attach(3, fifoSize, 0)
	for i := range 3 {
		if _, err := l.ConnectURI(other, "tcp://127.0.0.1:7000", uint32(i)); err != nil {
			t.Fatalf("another client, connect %d: %v", i, err)
		}
	}
	// A close gives the memory back.
	wantErr(t, l.Disconnect(cli, first), nil)
	if _, err := l.ConnectURI(cli, "tcp://127.0.0.1:7000", 3); err != nil {
		t.Fatalf("connect after a close made room: %v", err)
	}
	// A client whose own rx fifo is larger than its bound opens none.
	big := attach(4, 1<<20, 5*fifoSize)
	_, err = l.ConnectURI(big, "tcp://127.0.0.1:7000", 0)
	wantErr(t, err, sessions.ErrNoMemory)
	// The server's sessions closed from its end give the client's memory
	// back too.
	for _, si := range l.Sessions() {
		if si.App == srv {
			wantErr(t, l.Disconnect(srv, si.Handle), nil)
		}
	}
	for i := range 2 {
		if _, err := l.ConnectURI(cli, "tcp://127.0.0.1:7000", uint32(10+i)); err != nil {
			t.Fatalf("connect %d after the server closed its sessions: %v", i, err)
		}
	}
	if err := l.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}
