package tcp_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/tcp"
)

const fifoSize = 1 << 20

func listen(tb testing.TB, s *tcp.Stack, addr netip.AddrPort, fifo uint32) (*tcp.Listener, *acceptor) {
	tb.Helper()
	ac := newAcceptor(tb, fifo)
	l, err := s.Listen(addr, 0, 2, ac)
	if err != nil {
		tb.Fatal(err)
	}
	return l, ac
}

func TestHandshake(t *testing.T) {
	p := newPair(t, tcp.Options{}, wireOpts{}, wireOpts{})
	for _, dst := range []netip.Addr{addrB, addrB6} {
		t.Run(dst.String(), func(t *testing.T) {
			_, ac := listen(t, p.b, netip.AddrPortFrom(dst, 80), fifoSize)
			client, server := dial(t, p, ac, netip.AddrPortFrom(dst, 80), fifoSize)
			cc, sc := client.getConn(), server.getConn()
			if cc.RemoteAddr() != netip.AddrPortFrom(dst, 80) || sc.LocalAddr() != cc.RemoteAddr() || sc.RemoteAddr() != cc.LocalAddr() {
				t.Fatalf("addresses: client %v->%v, server %v->%v", cc.LocalAddr(), cc.RemoteAddr(), sc.LocalAddr(), sc.RemoteAddr())
			}
			if cc.LocalAddr().Port() == 0 {
				t.Fatal("no ephemeral port")
			}
			// One small message each way.
			for _, d := range []struct{ from, to *app }{{client, server}, {server, client}} {
				if _, err := d.from.appTx.Enqueue([]byte("hello")); err != nil {
					t.Fatal(err)
				}
				d.from.getConn().Kick()
				recvOrFail(t, d.to.readable, 5*time.Second, "readable")
				buf := make([]byte, 16)
				n, _ := d.to.appRx.Dequeue(buf)
				if string(buf[:n]) != "hello" {
					t.Fatalf("got %q", buf[:n])
				}
			}
			cc.Abort()
			<-client.closed
			recvOrFail(t, server.reset, 5*time.Second, "reset")
			<-server.closed
		})
	}
}

// transfer sends n bytes each way at once and checks both streams.
func transfer(t *testing.T, p *pair, client, server *app, n int64) time.Duration {
	t.Helper()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	sums := make([][]byte, 4)
	for i, d := range []struct{ from, to *app }{{client, server}, {server, client}} {
		wg.Add(2)
		go func() {
			defer wg.Done()
			h := newHash()
			if err := d.from.send(n, uint64(i+7), h, 64<<10); err != nil {
				errs <- err
			}
			sums[2*i] = h.Sum(nil)
		}()
		go func() {
			defer wg.Done()
			h := newHash()
			got, err := d.to.recv(n, h, 64<<10, 0)
			if err != nil {
				errs <- err
			} else if got != n {
				errs <- errors.New("short")
			}
			sums[2*i+1] = h.Sum(nil)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if !bytes.Equal(sums[0], sums[1]) || !bytes.Equal(sums[2], sums[3]) {
		t.Fatalf("sha256 differ: %x/%x %x/%x", sums[0], sums[1], sums[2], sums[3])
	}
	return time.Since(start)
}

func TestTransfer100MB(t *testing.T) {
	n := int64(100 << 20)
	if testing.Short() {
		n = 10 << 20
	}
	p, client, server := connectedPair(t, fifoSize)
	d := transfer(t, p, client, server, n)
	t.Logf("%d MiB each way in %v: %.0f Mbit/s each way", n>>20, d.Round(time.Millisecond), float64(n)*8/d.Seconds()/1e6)
	st := p.a.Stats()
	t.Logf("stack A: %+v", st)
	if st.TxDropped != 0 || p.b.Stats().TxDropped != 0 {
		t.Logf("wire refused packets (retransmitted): A %d, B %d", st.TxDropped, p.b.Stats().TxDropped)
	}
}

func TestLossAndReorder(t *testing.T) {
	n := int64(16 << 20)
	if testing.Short() {
		n = 4 << 20
	}
	lossy := wireOpts{loss: 0.01, reorder: 0.02}
	p := newPair(t, tcp.Options{}, lossy, lossy)
	_, ac := listen(t, p.b, netip.AddrPortFrom(addrB, 80), fifoSize)
	client, server := dial(t, p, ac, netip.AddrPortFrom(addrB, 80), fifoSize)
	d := transfer(t, p, client, server, n)
	sa, sb := p.a.Stats(), p.b.Stats()
	t.Logf("%d MiB each way with 1%% loss, 2%% reorder in %v; retransmits A %d B %d", n>>20, d.Round(time.Millisecond), sa.Retransmits, sb.Retransmits)
	if sa.Retransmits == 0 || sb.Retransmits == 0 {
		t.Fatal("no retransmissions: the wire lost nothing?")
	}
}

// TestBackpressure: a consumer that drains its 64 KiB rx fifo slowly gets
// every byte; the rx fifo fills, the window closes, the sender's tx fifo
// fills, and nothing is lost (no retransmission is needed on a lossless
// wire beyond window probes).
func TestBackpressure(t *testing.T) {
	const small = 64 << 10
	const n = 4 << 20
	p, client, server := connectedPair(t, small)

	var sendErr error
	hs := newHash()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sendErr = client.send(n, 3, hs, 16<<10)
	}()
	// Read nothing until the rx fifo is full and the sender is stuck:
	// blocked on its full tx fifo, with nothing more queued for 300ms.
	deadline := time.Now().Add(10 * time.Second)
	last, since := int64(-1), time.Now()
	for {
		q := client.queuedTx.Load()
		if q != last {
			last, since = q, time.Now()
		}
		if server.appRx.MaxDequeue() == small && client.sendBlocked.Load() && time.Since(since) > 300*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no backpressure: rx fifo %d/%d, sender blocked %v, queued %d", server.appRx.MaxDequeue(), small, client.sendBlocked.Load(), q)
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("sender finished while the receiver read nothing")
	default:
	}
	t.Logf("stalled with %d of %d bytes queued by the sender: %d in the rx fifo, the rest in the gVisor buffers and the tx fifo", last, n, small)
	hr := newHash()
	got, err := server.recv(n, hr, 4<<10, 200*time.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	if sendErr != nil {
		t.Fatal(sendErr)
	}
	if got != n || !bytes.Equal(hs.Sum(nil), hr.Sum(nil)) {
		t.Fatalf("got %d bytes, sha256 equal %v", got, bytes.Equal(hs.Sum(nil), hr.Sum(nil)))
	}
	t.Logf("retransmits A %d (zero-window probes count here)", p.a.Stats().Retransmits)
}

func TestHalfClose(t *testing.T) {
	_, client, server := connectedPair(t, fifoSize)

	const n = 3 << 20
	hs := newHash()
	if err := client.send(n, 1, hs, 64<<10); err != nil {
		t.Fatal(err)
	}
	client.getConn().CloseWrite()
	hr := newHash()
	got, err := server.recv(-1, hr, 64<<10, 0) // until FIN
	if err != nil || got != n || !bytes.Equal(hs.Sum(nil), hr.Sum(nil)) {
		t.Fatalf("server got %d of %d before FIN (err %v)", got, n, err)
	}
	// The server still sends after the client's FIN.
	hs2 := newHash()
	if err := server.send(n, 2, hs2, 64<<10); err != nil {
		t.Fatal(err)
	}
	server.getConn().Close()
	hr2 := newHash()
	got, err = client.recv(-1, hr2, 64<<10, 0)
	if err != nil || got != n || !bytes.Equal(hs2.Sum(nil), hr2.Sum(nil)) {
		t.Fatalf("client got %d of %d after its FIN (err %v)", got, n, err)
	}
	recvOrFail(t, client.closed, 5*time.Second, "client closed")
	recvOrFail(t, server.closed, 5*time.Second, "server closed")
	noReset(t, client, server)
}

// noReset fails the test when either app was told of a reset.
func noReset(t *testing.T, client, server *app) {
	t.Helper()
	select {
	case err := <-client.reset:
		t.Fatalf("client reset: %v", err)
	case err := <-server.reset:
		t.Fatalf("server reset: %v", err)
	default:
	}
}

// TestCloseMark: an app that marks its tx fifo closed (fifo.RequestClose)
// right after queueing gets what it queued delivered, then FIN, as with
// Close; the Handler hears of the mark once, on the pump, and a Conn
// that PushTx would have moved goes to the pump instead.
func TestCloseMark(t *testing.T) {
	_, client, server := connectedPair(t, fifoSize)

	const n = 3 << 20
	hs := newHash()
	done := make(chan error, 1)
	go func() { done <- client.send(n, 4, hs, 64<<10) }()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	client.appTx.RequestClose()
	if client.getConn().PushTx() {
		t.Fatal("PushTx moved a tx fifo marked closed")
	}
	client.appTx.SetEvent()
	client.getConn().Kick()
	hr := newHash()
	got, err := server.recv(-1, hr, 64<<10, 0) // until FIN
	if err != nil || got != n || !bytes.Equal(hs.Sum(nil), hr.Sum(nil)) {
		t.Fatalf("server got %d of %d before FIN (err %v)", got, n, err)
	}
	recvOrFail(t, client.closed, 5*time.Second, "client closed")
	if k := client.closeReqs.Load(); k != 1 {
		t.Fatalf("CloseRequested called %d times, want 1", k)
	}
	server.getConn().Close()
	recvOrFail(t, server.closed, 5*time.Second, "server closed")
	noReset(t, client, server)
}

func TestReset(t *testing.T) {
	_, client, server := connectedPair(t, fifoSize)
	server.getConn().Abort()
	recvOrFail(t, server.closed, 5*time.Second, "server closed")
	err := recvOrFail(t, client.reset, 5*time.Second, "client reset")
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reset reported as %v, want ECONNRESET", err)
	}
	recvOrFail(t, client.closed, 5*time.Second, "client closed")
}

func TestConnectRefused(t *testing.T) {
	p := newPair(t, tcp.Options{}, wireOpts{}, wireOpts{})
	for _, dst := range []netip.Addr{addrB, addrB6} {
		a := newApp(t, 4096)
		start := time.Now()
		c, err := p.a.Dial(netip.AddrPort{}, netip.AddrPortFrom(dst, 81), 1, a.rx, a.tx, a)
		if err != nil {
			t.Fatal(err)
		}
		a.setConn(c)
		err = recvOrFail(t, a.failed, 5*time.Second, "connect failure")
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("%v: got %v, want ECONNREFUSED", dst, err)
		}
		recvOrFail(t, a.closed, time.Second, "closed")
		if d := time.Since(start); d > time.Second {
			t.Fatalf("refusal took %v", d)
		}
	}
}

func TestConnectTimeout(t *testing.T) {
	blackhole := wireOpts{drop: func([]byte) bool { return true }}
	p := newPair(t, tcp.Options{ConnectTimeout: 300 * time.Millisecond}, blackhole, wireOpts{})
	a := newApp(t, 4096)
	start := time.Now()
	c, err := p.a.Dial(netip.AddrPort{}, netip.AddrPortFrom(addrB, 80), 1, a.rx, a.tx, a)
	if err != nil {
		t.Fatal(err)
	}
	a.setConn(c)
	err = recvOrFail(t, a.failed, 5*time.Second, "connect failure")
	if !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("got %v, want ETIMEDOUT", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 2*time.Second {
		t.Fatalf("timeout after %v", d)
	}
	<-a.closed
	if st := p.a.Stats(); st.Conns != 0 {
		t.Fatalf("%d conns left", st.Conns)
	}
}

func TestOwnerLimit(t *testing.T) {
	p := newPair(t, tcp.Options{MaxConnsPerOwner: 2}, wireOpts{}, wireOpts{})
	_, ac := listen(t, p.b, netip.AddrPortFrom(addrB, 80), 4096)
	for range 2 {
		dial(t, p, ac, netip.AddrPortFrom(addrB, 80), 4096)
	}
	a := newApp(t, 4096)
	if _, err := p.a.Dial(netip.AddrPort{}, netip.AddrPortFrom(addrB, 80), 1, a.rx, a.tx, a); !errors.Is(err, tcp.ErrTooManyConns) {
		t.Fatalf("third dial of owner 1: %v, want ErrTooManyConns", err)
	}
	// Another owner may dial; the listener's owner (2) is at its limit on
	// B, so B resets the accepted connection.
	c, err := p.a.Dial(netip.AddrPort{}, netip.AddrPortFrom(addrB, 80), 3, a.rx, a.tx, a)
	if err != nil {
		t.Fatal(err)
	}
	a.setConn(c)
	// The handshake completes in gVisor before B's pump refuses the
	// Conn: A sees the RST either after Connected (Reset) or before its
	// pump saw the connection up (ConnectFailed); ECONNRESET both ways.
	select {
	case err = <-a.failed:
	case <-a.connected:
		err = recvOrFail(t, a.reset, 5*time.Second, "reset by the listener's limit")
	case <-time.After(5 * time.Second):
		t.Fatal("no outcome")
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("got %v, want ECONNRESET", err)
	}
	if r := p.b.Stats().Refused; r != 1 {
		t.Fatalf("B refused %d", r)
	}
}

// TestStackClose: closing a Stack ends every Conn with Reset(ECONNABORTED)
// then Closed, and every Listener with ListenerClosed.
func TestStackClose(t *testing.T) {
	p := newPair(t, tcp.Options{}, wireOpts{}, wireOpts{})
	_, ac := listen(t, p.b, netip.AddrPortFrom(addrB, 80), 4096)
	client, server := dial(t, p, ac, netip.AddrPortFrom(addrB, 80), 4096)
	p.b.Close()
	select {
	case <-server.closed:
	default:
		t.Fatal("server Conn not closed when Close returned")
	}
	if err := <-server.reset; !errors.Is(err, syscall.ECONNABORTED) {
		t.Fatalf("server: %v", err)
	}
	<-ac.closed
	if err := recvOrFail(t, client.reset, 5*time.Second, "client reset"); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client: %v", err)
	}
}

// TestDataAfterBothFINs: the peer sends more than the rx fifo holds and
// closes; we half-close while that data still waits in gVisor, so gVisor's
// endpoint reaches CLOSED with data unread. The Conn must still deliver
// every byte, then PeerClosed and Closed, and no Reset.
func TestDataAfterBothFINs(t *testing.T) {
	const small = 64 << 10
	const n = 512 << 10
	p := newPair(t, tcp.Options{}, wireOpts{}, wireOpts{})
	_, ac := listen(t, p.b, netip.AddrPortFrom(addrB, 80), fifoSize)
	client, server := dial(t, p, ac, netip.AddrPortFrom(addrB, 80), small)
	hs := newHash()
	if err := server.send(n, 5, hs, 64<<10); err != nil {
		t.Fatal(err)
	}
	server.getConn().Close()
	recvOrFail(t, server.closed, 5*time.Second, "server closed")
	// Wait until the client's rx fifo is full, then half-close with the
	// rest of the data (and the FIN behind it) still in gVisor.
	for deadline := time.Now().Add(5 * time.Second); client.appRx.MaxDequeue() < small; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("client rx fifo never filled")
		}
	}
	// The server's FIN is in the client's gVisor once the server's endpoint
	// is in FIN-WAIT-2 (its FIN acknowledged).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if st := tcp.EndpointStates(p.b); len(st) == 2 && (strings.HasPrefix(st[0], "FIN-WAIT2") || strings.HasPrefix(st[1], "FIN-WAIT2")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server endpoint never reached FIN-WAIT-2: %v", tcp.EndpointStates(p.b))
		}
	}
	client.getConn().CloseWrite()
	time.Sleep(100 * time.Millisecond) // LAST-ACK, the peer's ACK, CLOSED
	// A Kick may come at any time (the app queued into tx, say); the pump
	// then finds the endpoint CLOSED with the rx fifo still full.
	client.getConn().Kick()
	time.Sleep(20 * time.Millisecond)
	hr := newHash()
	got, err := client.recv(-1, hr, 4<<10, 0)
	if err != nil || got != n || !bytes.Equal(hs.Sum(nil), hr.Sum(nil)) {
		t.Fatalf("client got %d of %d (err %v)", got, n, err)
	}
	recvOrFail(t, client.closed, 5*time.Second, "client closed")
	select {
	case err := <-client.reset:
		t.Fatalf("client reset: %v", err)
	default:
	}
}

// TestInjectChecksum: without RXChecksumOffload the link endpoint drops a
// segment whose TCP checksum or IPv4 header checksum is wrong (gVisor is
// told the link verified them), singly and in a batch, and counts it.
func TestInjectChecksum(t *testing.T) {
	s, err := tcp.NewStack(tcp.WriterFunc(func(tcp.Packet) bool { return true }), tcp.Options{Pumps: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.AddAddress(netip.PrefixFrom(addrB, 24)); err != nil {
		t.Fatal(err)
	}
	// A SYN from 10.0.0.1:12345 to 10.0.0.2:80 with correct checksums.
	pkt := []byte{
		0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
		0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
	}
	binary.BigEndian.PutUint16(pkt[10:], ipChecksum(pkt[:20]))
	pseudo := append(append([]byte{}, pkt[12:20]...), 0, 6, 0, 20)
	binary.BigEndian.PutUint16(pkt[36:], ipChecksum(append(pseudo, pkt[20:]...)))
	if !s.Link().Inject(pkt) {
		t.Fatal("good segment refused")
	}
	badTCP := bytes.Clone(pkt)
	badTCP[36] ^= 1
	badIP := bytes.Clone(pkt)
	badIP[10] ^= 1
	if s.Link().Inject(badTCP) || s.Link().Inject(badIP) {
		t.Fatal("segment with a bad checksum accepted")
	}
	if n := s.Link().InjectBatch([][]byte{badTCP, pkt, badIP}); n != 1 {
		t.Fatalf("InjectBatch accepted %d of 1 good, 2 bad", n)
	}
	if st := s.Stats(); st.ChecksumError != 4 || st.RxPackets != 2 {
		t.Fatalf("stats: %+v, want 4 checksum errors, 2 packets", st)
	}
}

// TestInjectBatchFlows: a batch holding one data segment of each of many
// connections gets every segment to gVisor's TCP before InjectBatch
// returns (here each draws a RST, there being no such connection), however
// the receive offload sorted them into its buckets.
func TestInjectBatchFlows(t *testing.T) {
	var rsts atomic.Int64
	s, err := tcp.NewStack(tcp.WriterFunc(func(p tcp.Packet) bool {
		b := p.AppendTo(nil)
		if len(b) >= 40 && b[33]&0x04 != 0 {
			rsts.Add(1)
		}
		return true
	}), tcp.Options{Pumps: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.AddAddress(netip.PrefixFrom(addrB, 24)); err != nil {
		t.Fatal(err)
	}
	const flows = 40
	var batch [][]byte
	for i := range flows {
		pkt := make([]byte, 40+100)
		copy(pkt, []byte{0x45, 0, 0, 140, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2})
		binary.BigEndian.PutUint16(pkt[20:], uint16(20000+i))
		copy(pkt[22:], []byte{0, 80, 0, 0, 1, 0, 0, 0, 2, 0, 0x50, 0x10, 0xff, 0xff})
		binary.BigEndian.PutUint16(pkt[10:], ipChecksum(pkt[:20]))
		pseudo := append(append([]byte{}, pkt[12:20]...), 0, 6, 0, 120)
		binary.BigEndian.PutUint16(pkt[36:], ipChecksum(append(pseudo, pkt[20:]...)))
		batch = append(batch, pkt)
	}
	if n := s.Link().InjectBatch(batch); n != flows {
		t.Fatalf("InjectBatch accepted %d of %d", n, flows)
	}
	if n := rsts.Load(); n != flows {
		t.Fatalf("%d RSTs for %d segments of unknown connections", n, flows)
	}
}

// TestRequestResponseAcks: on a request/response connection the server's
// link sends one packet per request, the response, which carries the
// acknowledgement of the request that gVisor sent on its own at once; with
// AckDelay negative it sends both.
func TestRequestResponseAcks(t *testing.T) {
	const n = 200
	for _, c := range []struct {
		name  string
		delay time.Duration
	}{{"delayed", 10 * time.Second}, {"off", -1}} {
		t.Run(c.name, func(t *testing.T) {
			p := newPair(t, tcp.Options{AckDelay: c.delay}, wireOpts{}, wireOpts{})
			_, ac := listen(t, p.b, netip.AddrPortFrom(addrB, 80), 1<<16)
			client, server := dial(t, p, ac, netip.AddrPortFrom(addrB, 80), 1<<16)
			h := newHash()
			before := p.b.Stats()
			for i := range n {
				if err := client.send(64, uint64(i), h, 64); err != nil {
					t.Fatal(err)
				}
				if _, err := server.recv(64, h, 64, 0); err != nil {
					t.Fatal(err)
				}
				if err := server.send(64, uint64(i), h, 64); err != nil {
					t.Fatal(err)
				}
				if _, err := client.recv(64, h, 64, 0); err != nil {
					t.Fatal(err)
				}
			}
			after := p.b.Stats()
			sent, coalesced := after.TxPackets-before.TxPackets, after.AcksCoalesced-before.AcksCoalesced
			t.Logf("%d requests: B sent %d packets, %d acknowledgements coalesced, %d sent at their deadline", n, sent, coalesced, after.AcksDelayed-before.AcksDelayed)
			if c.delay > 0 && (sent > n+n/10 || coalesced < n-n/10) {
				t.Fatalf("B sent %d packets for %d responses (%d acknowledgements coalesced)", sent, n, coalesced)
			}
			if c.delay < 0 && (sent < n+n/2 || coalesced != 0) {
				t.Fatalf("without delay B sent %d packets for %d responses (%d acknowledgements coalesced)", sent, n, coalesced)
			}
		})
	}
}

// gatedApp is an app whose Connected waits for gate: it holds its Stack's
// pump (Options.Pumps 1) and so every other Conn's run.
type gatedApp struct {
	*app
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedApp) Connected(c *tcp.Conn) {
	close(g.entered)
	<-g.gate
	g.app.Connected(c)
}

// TestAbortWhileConnectingReleasesPort: a Conn aborted before its pump
// saw the handshake complete (gVisor completed it meanwhile) resets the
// connection, so that gVisor lets go of the local port at once: its
// owner, told the connect never completed, releases the port's kernel
// reservation at once, and the kernel may hand the port to the next
// connect. A FIN there kept the port in gVisor through FIN-WAIT and
// TIME-WAIT, and that connect failed with EADDRINUSE.
func TestAbortWhileConnectingReleasesPort(t *testing.T) {
	p := newPair(t, tcp.Options{Pumps: 1}, wireOpts{}, wireOpts{})
	dst := netip.AddrPortFrom(addrB, 80)
	_, ac := listen(t, p.b, dst, 64<<10)

	g := &gatedApp{app: newApp(t, 64<<10), entered: make(chan struct{}), gate: make(chan struct{})}
	gc, err := p.a.Dial(netip.AddrPortFrom(addrA, 0), dst, 1, g.rx, g.tx, g)
	if err != nil {
		t.Fatal(err)
	}
	g.setConn(gc)
	recvOrFail(t, g.entered, 5*time.Second, "the gated Conn's Connected")
	gServer := recvOrFail(t, ac.apps, 5*time.Second, "the gated Conn's accept")

	local := netip.AddrPortFrom(addrA, 40123)
	victim, c, err := dialFrom(t, p, local, dst, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(5 * time.Second); c.Info().State != "ESTABLISHED"; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the handshake did not complete in gVisor: %s", c.Info().State)
		}
	}
	server := recvOrFail(t, ac.apps, 5*time.Second, "accept")
	c.Abort()
	close(g.gate)
	recvOrFail(t, g.connected, 5*time.Second, "the gated Conn's connect")
	recvOrFail(t, victim.closed, 5*time.Second, "the aborted Conn's Closed")
	select {
	case <-victim.connected:
		t.Fatal("the aborted Conn reported Connected")
	default:
	}
	if !c.Info().ResetSent {
		t.Errorf("the aborted Conn did not reset its connection: %+v", c.Info())
	}
	// The port is free in gVisor: a connect from it succeeds.
	again, c2, err := dialFrom(t, p, local, dst, 64<<10)
	if err != nil {
		t.Fatalf("a connect from the aborted Conn's port %v: %v", local, err)
	}
	recvOrFail(t, again.connected, 5*time.Second, "the second connect")
	againServer := recvOrFail(t, ac.apps, 5*time.Second, "the second accept")
	if err := recvOrFail(t, server.reset, 5*time.Second, "the peer's reset"); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the peer's Conn ended with %v, want ECONNRESET", err)
	}
	// Every Conn ends before the test does, none left running as the
	// Stacks close.
	gc.Abort()
	c2.Abort()
	for _, a := range []*app{g.app, again, gServer, againServer} {
		recvOrFail(t, a.closed, 5*time.Second, "Closed")
	}
}

// TestEndTimeWaitReleasesPort: a connection its app closed first stays in
// gVisor's TIME-WAIT, holding its local port, so that a connect from that
// port is refused (EADDRINUSE); EndTimeWait ends it and frees the port.
func TestEndTimeWaitReleasesPort(t *testing.T) {
	p := newPair(t, tcp.Options{}, wireOpts{}, wireOpts{})
	dst := netip.AddrPortFrom(addrB, 80)
	_, ac := listen(t, p.b, dst, 64<<10)
	local := netip.AddrPortFrom(addrA, 40124)
	client, c, err := dialFrom(t, p, local, dst, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	recvOrFail(t, client.connected, 5*time.Second, "connected")
	server := recvOrFail(t, ac.apps, 5*time.Second, "accept")
	c.Close()
	recvOrFail(t, server.peerClosed, 5*time.Second, "the server's PeerClosed")
	server.getConn().Close()
	recvOrFail(t, client.closed, 5*time.Second, "the client's Closed")
	recvOrFail(t, server.closed, 5*time.Second, "the server's Closed")
	for end := time.Now().Add(5 * time.Second); c.Info().State != "TIME-WAIT"; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the client's connection is in %s, not TIME-WAIT", c.Info().State)
		}
	}
	if _, _, err := dialFrom(t, p, local, dst, 64<<10); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("a connect from a port in TIME-WAIT: %v, want EADDRINUSE", err)
	}
	if !c.EndTimeWait() {
		t.Fatal("EndTimeWait ended nothing")
	}
	if c.EndTimeWait() {
		t.Fatal("EndTimeWait ended something twice")
	}
	again, _, err := dialFrom(t, p, local, dst, 64<<10)
	if err != nil {
		t.Fatalf("a connect from the port after EndTimeWait: %v", err)
	}
	recvOrFail(t, again.connected, 5*time.Second, "the second connect")
	againServer := recvOrFail(t, ac.apps, 5*time.Second, "the second accept")
	again.getConn().Abort()
	recvOrFail(t, again.closed, 5*time.Second, "Closed")
	recvOrFail(t, againServer.closed, 5*time.Second, "the second server's Closed")
}
