package tcp_test

import (
	"bytes"
	"errors"
	"hash"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/tcp"
)

// TestBufferBounds: an owner's Conns get gVisor's default buffers (1 MiB
// each way) while the owner's bound has room for them, and ClampedBuffer
// buffers after; a clamped Conn still carries its bytes exactly, and
// neither a peer sending to Conns whose app reads nothing nor the Conns'
// end leaves more accounted than the bound.
func TestBufferBounds(t *testing.T) {
	const def = 2 << 20 // gVisor's default send and receive buffers
	opts := tcp.Options{GroupBufferBytes: 2*def + def/2, BufferBytes: 64 << 20}
	p := newPair(t, opts, wireOpts{}, wireOpts{})
	_, ac := listen(t, p.b, netip.AddrPortFrom(addrB, 80), 64<<10)
	const n = 6
	var clients, servers []*app
	for range n {
		c, s := dial(t, p, ac, netip.AddrPortFrom(addrB, 80), 64<<10)
		clients, servers = append(clients, c), append(servers, s)
	}
	// The dialling side (owner 1, one owner's bound) is clamped alike.
	for _, st := range []*tcp.Stack{p.a, p.b} {
		b := st.Stats().Buffers
		if want := int64(2*def + (n-2)*2*tcp.ClampedBuffer); b.Bytes != want || b.Clamped != n-2 {
			t.Fatalf("buffers %+v, want %d bytes and %d Conns clamped", b, want, n-2)
		}
	}
	for i, s := range servers {
		want := def / 2
		if i >= 2 {
			want = tcp.ClampedBuffer
		}
		if got := s.getConn().Info().RcvBuf; got != want {
			t.Fatalf("server Conn %d: receive buffer %d, want %d", i, got, want)
		}
	}

	// A peer sends 4 MiB to every Conn, whose app reads nothing: what
	// gVisor holds for them stays within their buffers.
	sent := make([]hash.Hash, n)
	sendErr := make(chan error, n)
	for i, c := range clients {
		sent[i] = newHash()
		go func() { sendErr <- c.send(4<<20, uint64(i), sent[i], 64<<10) }()
	}
	time.Sleep(500 * time.Millisecond)
	for i, s := range servers {
		in := s.getConn().Info()
		if in.RecvQ > in.RcvBuf {
			t.Errorf("server Conn %d holds %d bytes in gVisor, over its %d-byte buffer", i, in.RecvQ, in.RcvBuf)
		}
	}
	// Then every byte arrives, on clamped Conns as on the others.
	received := make([]hash.Hash, n)
	for i, s := range servers {
		h := newHash()
		if got, err := s.recv(4<<20, h, 64<<10, 0); err != nil || got != 4<<20 {
			t.Fatalf("server Conn %d: %d bytes, %v", i, got, err)
		}
		received[i] = h
	}
	for range n {
		if err := <-sendErr; err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if !bytes.Equal(received[i].Sum(nil), sent[i].Sum(nil)) {
			t.Fatalf("server Conn %d: the bytes differ from those sent", i)
		}
	}
	if b := p.b.Stats().Buffers; b.Bytes > opts.GroupBufferBytes+int64(n*2*tcp.ClampedBuffer) {
		t.Fatalf("buffers %+v grew past the owner's bound", b)
	}

	for _, c := range clients {
		c.getConn().Abort()
		<-c.closed
	}
	for _, s := range servers {
		<-s.closed
	}
	for _, st := range []*tcp.Stack{p.a, p.b} {
		if b := st.Stats().Buffers; b.Bytes != 0 {
			t.Fatalf("buffers %+v accounted after every Conn closed", b)
		}
	}
}

// TestBufferBoundRefuses: a Conn for which even ClampedBuffer buffers do
// not fit under the Stack's bound is refused with ErrTooManyConns, and
// counted.
func TestBufferBoundRefuses(t *testing.T) {
	const def = 2 << 20
	bound := int64(def + 2*tcp.ClampedBuffer)
	p := newPair(t, tcp.Options{BufferBytes: bound, GroupBufferBytes: bound}, wireOpts{}, wireOpts{})
	_, ac := listen(t, p.b, netip.AddrPortFrom(addrB, 80), 64<<10)
	dial(t, p, ac, netip.AddrPortFrom(addrB, 80), 64<<10) // default buffers
	dial(t, p, ac, netip.AddrPortFrom(addrB, 80), 64<<10) // clamped
	client := newApp(t, 64<<10)
	_, err := p.a.Dial(netip.AddrPortFrom(addrA, 0), netip.AddrPortFrom(addrB, 80), 1, client.rx, client.tx, client)
	if !errors.Is(err, tcp.ErrTooManyConns) {
		t.Fatalf("dial past the Stack's buffer bound: %v, want ErrTooManyConns", err)
	}
	st := p.a.Stats()
	if st.Buffers.Bytes != bound || st.Buffers.Clamped != 1 || st.Refused != 1 || st.Conns != 2 {
		t.Fatalf("stats %+v, want %d bytes, 1 Conn clamped, 1 refused, 2 Conns", st, bound)
	}
}

// TestBufferGroups: the Conns of owners in one group (Options.BufferGroup)
// share the group's bound; another group's are not held back by it.
func TestBufferGroups(t *testing.T) {
	const def = 2 << 20
	group := func(o uint64) uint64 { return o >> 32 }
	p := newPair(t, tcp.Options{GroupBufferBytes: def + def/2, BufferGroup: group}, wireOpts{}, wireOpts{})
	listen(t, p.b, netip.AddrPortFrom(addrB, 80), 64<<10)
	var clients []*app
	for i, owner := range []uint64{1<<32 | 1, 1<<32 | 2, 2<<32 | 3} {
		c := newApp(t, 64<<10)
		conn, err := p.a.Dial(netip.AddrPortFrom(addrA, 0), netip.AddrPortFrom(addrB, 80), owner, c.rx, c.tx, c)
		if err != nil {
			t.Fatal(err)
		}
		c.setConn(conn)
		clients = append(clients, c)
		recvOrFail(t, c.connected, 5*time.Second, "connected")
		// Only the second of group 1 finds no room for the defaults.
		if b, want := p.a.Stats().Buffers, min(uint64(i), 1); b.Clamped != want {
			t.Fatalf("Conn %d (owner %#x): buffers %+v, want %d clamped", i, owner, b, want)
		}
	}
	if b := p.a.Stats().Buffers; b.Bytes != 2*def+2*tcp.ClampedBuffer || b.Clamped != 1 {
		t.Fatalf("buffers %+v, want %d bytes and 1 Conn clamped", b, 2*def+2*tcp.ClampedBuffer)
	}
	if n := tcp.BufferGroups(p.a); n != 2 {
		t.Fatalf("%d groups accounted, want 2", n)
	}
	for _, c := range clients {
		c.getConn().Abort()
		<-c.closed
	}
	if b, n := p.a.Stats().Buffers, tcp.BufferGroups(p.a); b.Bytes != 0 || n != 0 {
		t.Fatalf("after every Conn closed: buffers %+v, %d groups accounted", b, n)
	}
}

// TestBufferGroupCap: past its bound a group gets clamped Conns until it
// holds twice the bound; the next one is refused, however much room the
// Stack has.
func TestBufferGroupCap(t *testing.T) {
	const def = 2 << 20
	p := newPair(t, tcp.Options{GroupBufferBytes: def, BufferBytes: 1 << 30}, wireOpts{}, wireOpts{})
	_, ac := listen(t, p.b, netip.AddrPortFrom(addrB, 80), 64<<10)
	const clamped = def / (2 * tcp.ClampedBuffer)
	var clients []*app
	for i := 0; ; i++ {
		c := newApp(t, 64<<10)
		conn, err := p.a.Dial(netip.AddrPortFrom(addrA, 0), netip.AddrPortFrom(addrB, 80), 1, c.rx, c.tx, c)
		if err != nil {
			if !errors.Is(err, tcp.ErrTooManyConns) || i != 1+clamped {
				t.Fatalf("dial %d: %v, want ErrTooManyConns at %d", i, err, 1+clamped)
			}
			break
		}
		c.setConn(conn)
		recvOrFail(t, c.connected, 5*time.Second, "connected")
		recvOrFail(t, ac.apps, 5*time.Second, "accept") // more than the acceptor's queue holds
		clients = append(clients, c)
	}
	if b := p.a.Stats().Buffers; b.Bytes != 2*def || b.Clamped != clamped {
		t.Fatalf("buffers %+v, want %d bytes, %d Conns clamped", b, 2*def, clamped)
	}
	for _, c := range clients {
		c.getConn().Abort()
		<-c.closed
	}
}

// TestBufferBoundResetsAccepted: a connection a listener's Stack has no
// buffer room for is reset, counted as its listener's limit, and the
// dialling side's connect fails.
func TestBufferBoundResetsAccepted(t *testing.T) {
	p := newPairOpts(t, tcp.Options{}, tcp.Options{BufferBytes: 1}, wireOpts{}, wireOpts{})
	ln, _ := listen(t, p.b, netip.AddrPortFrom(addrB, 80), 64<<10)
	c := newApp(t, 64<<10)
	conn, err := p.a.Dial(netip.AddrPortFrom(addrA, 0), netip.AddrPortFrom(addrB, 80), 1, c.rx, c.tx, c)
	if err != nil {
		t.Fatal(err)
	}
	c.setConn(conn)
	select {
	case err := <-c.failed:
		t.Logf("connect: %v", err)
	case err := <-c.reset:
		t.Logf("reset: %v", err)
	case <-c.connected:
		recvOrFail(t, c.reset, 5*time.Second, "reset after connect")
	case <-time.After(5 * time.Second):
		t.Fatal("the connect neither failed nor was reset")
	}
	if ln.Limited() != 1 || p.b.Stats().Buffers.Bytes != 0 {
		t.Fatalf("listener limited %d, buffers %+v", ln.Limited(), p.b.Stats().Buffers)
	}
}

// TestOrphanBuffers: a Conn whose app closed it once its tx fifo drained
// into gVisor, with the peer's window shut, finishes (Closed) while gVisor
// still holds what the peer has not taken. What it holds stays
// accounted until gVisor has delivered it, or until the close's time is
// up: then the connection is reset and nothing is left held.
func TestOrphanBuffers(t *testing.T) {
	const fifoSize = 64 << 10
	for _, tc := range []struct {
		name    string
		drained bool // the peer's app reads everything after the close
	}{{"delivered", true}, {"timed out", false}} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tcp.Options{CloseTimeout: 2 * time.Second}
			p := newPair(t, opts, wireOpts{}, wireOpts{})
			_, ac := listen(t, p.b, netip.AddrPortFrom(addrB, 80), fifoSize)
			client, server := dial(t, p, ac, netip.AddrPortFrom(addrB, 80), fifoSize)
			c := client.getConn()
			// More than the peer's rx fifo and receive window take (half
			// its receive buffer rb), less than the client's send buffer
			// (gVisor's default, rb too): the tx fifo drains into gVisor,
			// which keeps the rest. Were the send buffer to fill, the
			// rest would stay in the tx fifo: gVisor wakes a writer only
			// once half its send buffer is free again (Linux once a
			// third is), and the shut window frees nothing.
			rb := server.getConn().Info().RcvBuf
			n := int64(rb - 32<<10)
			sent := newHash()
			if err := client.send(n, 1, sent, 32<<10); err != nil {
				t.Fatal(err)
			}
			// Once the peer's window is shut, what the client's gVisor
			// holds (SendQ) is what the peer has not: every byte is in
			// one or the other.
			deadline := time.Now().Add(10 * time.Second)
			for {
				ci, si := c.Info(), server.getConn().Info()
				if ci.SendQ > 0 && int64(ci.SendQ) == n-int64(si.RxBytes)-int64(si.RecvQ) && client.appTx.QueuedBytes() == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the client's gVisor holds %d bytes, its tx fifo %d; the server has %d in its fifo and %d in gVisor, of %d",
						ci.SendQ, client.appTx.QueuedBytes(), si.RxBytes, si.RecvQ, n)
				}
				time.Sleep(10 * time.Millisecond)
			}
			c.Close()
			recvOrFail(t, client.closed, 5*time.Second, "Closed")
			st := p.a.Stats()
			if st.Orphans != 1 || st.Buffers.Bytes < int64(c.Info().SendQ) {
				t.Fatalf("after Closed with %d bytes unsent: %d orphans, %d bytes accounted", c.Info().SendQ, st.Orphans, st.Buffers.Bytes)
			}
			if tc.drained {
				got := newHash()
				if k, err := server.recv(-1, got, 64<<10, 0); err != nil || k != n {
					t.Fatalf("server read %d of %d bytes: %v", k, n, err)
				}
				if !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
					t.Fatal("the bytes differ from those sent")
				}
			} else {
				// The peer's Conn, reset while its app reads nothing,
				// holds what it received before the reset until its app
				// has read it, as a Linux socket: then the reset.
				sc := server.getConn()
				for end := time.Now().Add(10 * time.Second); sc.Info().State != "ERROR"; time.Sleep(10 * time.Millisecond) {
					if time.Now().After(end) {
						t.Fatalf("the peer's Conn is %s, not reset", sc.Info().State)
					}
				}
				buf := make([]byte, 64<<10)
				var err error
				for end := time.Now().Add(10 * time.Second); err == nil; {
					select {
					case err = <-server.reset:
						continue
					default:
					}
					if k, _ := server.appRx.Dequeue(buf); k > 0 {
						if server.appRx.DeqNotify(k) {
							sc.Kick()
						}
						continue
					}
					if time.Now().After(end) {
						t.Fatal("no reset once the peer's app read what it held")
					}
					time.Sleep(time.Millisecond)
				}
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("the peer's Conn ended with %v, want ECONNRESET", err)
				}
			}
			deadline = time.Now().Add(5 * time.Second)
			for st = p.a.Stats(); st.Orphans != 0 || st.Buffers.Bytes != 0; st = p.a.Stats() {
				if time.Now().After(deadline) {
					t.Fatalf("%d orphans and %d bytes left accounted", st.Orphans, st.Buffers.Bytes)
				}
				time.Sleep(20 * time.Millisecond)
			}
			want := uint64(0)
			if !tc.drained {
				want = 1
			}
			if st.OrphansReset != want {
				t.Fatalf("%d orphans reset, want %d", st.OrphansReset, want)
			}
		})
	}
}

// TestClosedConnsHoldNothingAcked: Conns closed after the peer took all
// they sent leave nothing accounted, orphans or not (only a FIN may be in
// flight): a server that closes connections at a high rate is not held
// back by the buffers of those that already delivered everything.
func TestClosedConnsHoldNothingAcked(t *testing.T) {
	p := newPair(t, tcp.Options{}, wireOpts{}, wireOpts{})
	_, ac := listen(t, p.b, netip.AddrPortFrom(addrB, 80), 64<<10)
	for i := range 20 {
		client, server := dial(t, p, ac, netip.AddrPortFrom(addrB, 80), 64<<10)
		if err := client.send(1<<10, uint64(i), newHash(), 1<<10); err != nil {
			t.Fatal(err)
		}
		if k, err := server.recv(1<<10, newHash(), 1<<10, 0); err != nil || k != 1<<10 {
			t.Fatalf("conn %d: server read %d bytes: %v", i, k, err)
		}
		c := client.getConn()
		// The server may read the bytes before the client's pump counts
		// them as moved (TxBytes, after gVisor's Write returned), and
		// SendQ counts only what was moved: wait for both.
		for end := time.Now().Add(5 * time.Second); c.Info().TxBytes != 1<<10 || c.Info().SendQ != 0; time.Sleep(time.Millisecond) {
			if time.Now().After(end) {
				in := c.Info()
				t.Fatalf("conn %d: %d of %d bytes moved never acknowledged", i, in.SendQ, in.TxBytes)
			}
		}
		c.Close()
		recvOrFail(t, client.closed, 5*time.Second, "Closed")
		if b := p.a.Stats().Buffers.Bytes; b != 0 {
			t.Fatalf("conn %d closed with everything acknowledged: %d bytes accounted", i, b)
		}
		server.getConn().Close()
	}
}
