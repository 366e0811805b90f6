package tcp_test

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/tcp"
)

// TestPushTxResetIsNoFIN: a peer's reset that PushTx meets first (gVisor
// reports it to that one write, not to the read that follows) ends the
// Conn with ECONNRESET, and the Handler never hears PeerClosed: the peer
// sent no FIN, and an app told of one would take the reset for an end of
// stream.
func TestPushTxResetIsNoFIN(t *testing.T) {
	p := newPair(t, tcp.Options{Pumps: 1}, wireOpts{}, wireOpts{})
	dst := netip.AddrPortFrom(addrB, 80)
	_, ac := listen(t, p.b, dst, 64<<10)
	client, server := dial(t, p, ac, dst, 64<<10)
	c := client.getConn()

	// Hold A's only pump in another Conn's Connected.
	g := &gatedApp{app: newApp(t, 64<<10), entered: make(chan struct{}), gate: make(chan struct{})}
	gc, err := p.a.Dial(netip.AddrPortFrom(addrA, 0), dst, 1, g.rx, g.tx, g)
	if err != nil {
		t.Fatal(err)
	}
	g.setConn(gc)
	recvOrFail(t, g.entered, 5*time.Second, "the gated Conn's Connected")
	gServer := recvOrFail(t, ac.apps, 5*time.Second, "the gated Conn's accept")

	server.getConn().Abort()
	for end := time.Now().Add(5 * time.Second); c.Info().State != "ERROR"; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			close(g.gate)
			t.Fatalf("the client's connection is in %s after the peer's reset", c.Info().State)
		}
	}
	if _, err := client.appTx.Enqueue([]byte("after the reset")); err != nil {
		t.Fatal(err)
	}
	if !c.PushTx() {
		close(g.gate)
		t.Fatal("PushTx did not run with the pump held elsewhere")
	}
	close(g.gate)
	if err := recvOrFail(t, client.reset, 5*time.Second, "the client's reset"); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reset reported as %v, want ECONNRESET", err)
	}
	recvOrFail(t, client.closed, 5*time.Second, "the client's Closed")
	select {
	case <-client.peerClosed:
		t.Fatal("PeerClosed on a connection the peer reset")
	default:
	}
	gc.Abort()
	recvOrFail(t, g.closed, 5*time.Second, "the gated Conn's Closed")
	recvOrFail(t, gServer.closed, 5*time.Second, "the gated peer's Closed")
}
