package tcp_test

import (
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/tcp"
)

// TestCloseAfterEndArmsNoTimer: a Close that comes after the Conn ended
// (the peer's reset got there first, as an app's close of a session can
// race it) arms no timer: one would hold the finished Conn, and what it
// points to, for CloseTimeout (60 s) to wake a pump for nothing.
func TestCloseAfterEndArmsNoTimer(t *testing.T) {
	p, client, server := connectedPair(t, fifoSize)
	c := client.getConn()
	server.getConn().Abort()
	recvOrFail(t, client.reset, 5*time.Second, "the client's Reset")
	recvOrFail(t, client.closed, 5*time.Second, "the client's Closed")
	c.Close()
	c.CloseWrite()
	c.Abort()
	if tcp.StopTimer(c) {
		t.Fatal("a Close after the Conn ended left a timer pending")
	}
	if n := p.a.Stats().Conns; n != 0 {
		t.Fatalf("%d Conns live after the only one ended", n)
	}
}
