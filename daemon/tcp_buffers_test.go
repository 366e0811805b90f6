package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/datapath/tcp"
)

// TestTCPNonReaderBounded: an app opens connections to a kernel server on
// host A that sends 1 MiB on each, and reads none of them. What the daemon
// holds for them in gVisor stays within the app's buffer bound
// (tcp.user_buffer_memory, on each of root's apps by itself; 8 MiB here)
// plus the clamped connections' 64 KiB
// buffers, not a receive buffer per connection; when the app reads at
// last, every byte comes, on the clamped connections as on the others.
func TestTCPNonReaderBounded(t *testing.T) {
	const appBound = 8 << 20
	rig, d := tcpRig(t, func(c *Config) { c.Datapath.TCP.Stack.GroupBufferBytes = appBound })
	const per = 1 << 20
	pattern := func(i, off int) byte { return byte(i*7 + off%251) }
	ln := kernelListen(t, rig.A, ":7600")
	go serveEach(ln, func(c net.Conn) {
		var idx [1]byte
		if _, err := io.ReadFull(c, idx[:]); err != nil {
			return
		}
		buf := make([]byte, per)
		for off := range buf {
			buf[off] = pattern(int(idx[0]), off)
		}
		c.Write(buf)
		io.Copy(io.Discard, c) // until the app closes
	})
	a := attach(t, d, app.Options{Name: "lazy", RxFifoSize: 64 << 10, TxFifoSize: 64 << 10})
	const n = 40
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := a.Dial(ctx, fmt.Sprintf("tcp://%s:7600", rig.A.IPv4))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	// The senders fill what the app's fifos and gVisor take.
	held := func() (rq int) {
		for _, c := range d.eng.TCPConns() {
			rq += c.RecvQ
		}
		return rq
	}
	bound := appBound + n*2*tcp.ClampedBuffer
	last, since := -1, time.Now()
	for time.Since(since) < 500*time.Millisecond {
		if h := held(); h != last {
			last, since = h, time.Now()
		}
		if last > bound {
			t.Fatalf("gVisor holds %d bytes for an app that reads nothing, over %d", last, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := d.Engine().TCPStats().Buffers
	t.Logf("%d connections of an app reading nothing: gVisor holds %d bytes for them (bound %d); buffers %+v", n, last, bound, st)
	if st.Clamped < n-appBound/(2<<20) {
		t.Fatalf("buffers %+v: want at least %d connections clamped", st, n-appBound/(2<<20))
	}
	// ctl show stats says so.
	sv := showStats(t, d)
	if tv := sv.TCP; tv == nil || tv.Connections < n || tv.BuffersClamped != st.Clamped || tv.UserBufferLimit != appBound || tv.BufferBytes <= 0 {
		t.Fatalf("show stats: tcp %+v, want %d connections or more, %d clamped, a user's bound of %d", tv, n, st.Clamped, appBound)
	}
	buf := make([]byte, 64<<10)
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		for off := 0; off < per; {
			k, err := c.Read(buf[:min(len(buf), per-off)])
			for j := range k {
				if buf[j] != pattern(i, off+j) {
					t.Fatalf("connection %d: byte %d is %d, want %d", i, off+j, buf[j], pattern(i, off+j))
				}
			}
			off += k
			if err != nil {
				t.Fatalf("connection %d after %d bytes: %v", i, off, err)
			}
		}
	}
}

// TestTCPOrphansAccounted: an app connects to a kernel server on host A
// that reads nothing (a 4 KiB receive buffer), writes 960 KiB and closes,
// three times: each connection finishes for the app while gVisor still
// holds most of what it wrote (an orphan). What they hold stays accounted
// against the app's bound, so the app's next connection is clamped; the
// orphans' peer takes nothing for the close timeout (2s here), so each is
// reset (the server reads ECONNRESET after what it got) and nothing is
// left accounted.
func TestTCPOrphansAccounted(t *testing.T) {
	const def = 2 << 20 // a connection's default gVisor buffers, both ways
	rig, d := tcpRig(t, func(c *Config) {
		// Room for a connection's default buffers beside two orphans
		// of 960 KiB, not three.
		c.Datapath.TCP.Stack.GroupBufferBytes = 2 * def
		c.Datapath.TCP.Stack.CloseTimeout = 2 * time.Second
	})
	var ln net.Listener
	if err := rig.A.Do(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
			return errors.Join(err, serr)
		}}
		var err error
		ln, err = lc.Listen(context.Background(), "tcp", ":7601")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	peers := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peers <- c
		}
	}()
	a := attach(t, d, app.Options{Name: "closer", RxFifoSize: 64 << 10, TxFifoSize: 64 << 10})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func() net.Conn {
		t.Helper()
		c, err := a.Dial(ctx, fmt.Sprintf("tcp://%s:7601", rig.A.IPv4))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	waitStats := func(what string, ok func(tcp.Stats) bool) tcp.Stats {
		t.Helper()
		var st tcp.Stats
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if st = d.Engine().TCPStats().Stats; ok(st) {
				return st
			}
			if time.Now().After(end) {
				t.Fatalf("%s: stats %+v", what, st)
			}
		}
	}
	const n, size = 3, 960 << 10
	var servers []net.Conn
	for i := range n {
		c := dial()
		servers = append(servers, <-peers)
		if _, err := c.Write(make([]byte, size)); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		waitStats(fmt.Sprintf("orphan %d", i+1), func(st tcp.Stats) bool { return st.Orphans == i+1 && st.Conns == 0 })
	}
	st := d.Engine().TCPStats().Stats
	t.Logf("%d orphans: buffers %+v", n, st.Buffers)
	if b := st.Buffers.Bytes; b < n*(size-64<<10) || b > n*def/2 || st.Buffers.Clamped != 0 {
		t.Fatalf("%d orphans: buffers %+v, want what they hold accounted (%d to %d bytes) and none clamped", n, st.Buffers, n*(size-64<<10), n*def/2)
	}
	// show sessions lists them as lingering, with what gVisor holds.
	lingering := 0
	for _, v := range d.eng.TCPConns() {
		if v.Lingering && v.SendQ > 0 && v.SendQ <= size {
			lingering++
		}
	}
	if lingering != n {
		t.Fatalf("%d lingering connections with a send queue of 1 to %d bytes, want %d: %+v", lingering, size, n, d.eng.TCPConns())
	}
	// The app's bound holds the orphans' send buffers: its next
	// connection is clamped.
	c := dial()
	defer c.Close()
	servers = append(servers, <-peers)
	if b := d.Engine().TCPStats().Buffers; b.Clamped != 1 {
		t.Fatalf("a connection beside %d orphans: buffers %+v, want it clamped", n, b)
	}
	// show sessions has the live connection with its own counters and the
	// orphans, though the layer gave the new session a handle one of
	// theirs had.
	var live, lingered int
	for _, v := range d.SessionViews() {
		switch {
		case v.State == "lingering" && v.TCPSendQ > 0:
			lingered++
		case v.Transport == "tcp" && v.State != "lingering" && v.TCPState == "ESTABLISHED" && v.TxBytes == 0:
			live++
		}
	}
	if live != 1 || lingered != n {
		t.Fatalf("show sessions: %d live and %d lingering connections, want 1 and %d: %+v", live, lingered, n, d.SessionViews())
	}
	sv := showStats(t, d)
	if tv := sv.TCP; tv == nil || tv.Orphans != n {
		t.Fatalf("show stats: tcp %+v, want %d orphans", tv, n)
	}
	// The peer takes nothing: after the close timeout each orphan is
	// reset, and the server reads what it got, then ECONNRESET.
	st = waitStats("orphans reset", func(st tcp.Stats) bool { return st.Orphans == 0 && st.OrphansReset == n })
	if b, live := st.Buffers.Bytes, int64(2*tcp.ClampedBuffer); b != live {
		t.Fatalf("after the orphans' reset %d bytes accounted, want %d (the live connection's)", b, live)
	}
	for i, s := range servers[:n] {
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.Copy(io.Discard, s)
		if !errors.Is(err, syscall.ECONNRESET) || got >= size {
			t.Fatalf("server %d: %d bytes then %v, want fewer than %d then ECONNRESET", i, got, err, size)
		}
		s.Close()
	}
	servers[n].Close()
}

// showStats asks d for ctl show stats over its control socket, as the CLI
// does.
func showStats(t *testing.T, d *Daemon) StatsView {
	t.Helper()
	doc, err := show(t, d.Socket(), "stats")
	if err != nil {
		t.Fatal(err)
	}
	var sv StatsView
	if err := json.Unmarshal(doc, &sv); err != nil {
		t.Fatal(err)
	}
	return sv
}
