package tcp_test

import (
	"testing"
	"time"
)

// TestCloseAfterCloseWrite: an app that half-closes (CloseWrite: FIN sent)
// and then closes before the peer's FIN has nothing left to send: Close
// finishes the Conn at once (Closed), gracefully, as close(2) after
// shutdown(SHUT_WR) does, rather than waiting for the peer's FIN until
// CloseTimeout and resetting the connection.
func TestCloseAfterCloseWrite(t *testing.T) {
	_, client, server := connectedPair(t, fifoSize)
	c := client.getConn()
	if _, err := client.appTx.Enqueue([]byte("request")); err != nil {
		t.Fatal(err)
	}
	client.appTx.SetEvent()
	c.CloseWrite()
	recvOrFail(t, server.peerClosed, 5*time.Second, "the server's PeerClosed")
	buf := make([]byte, 16)
	if k, _ := server.appRx.Dequeue(buf); string(buf[:k]) != "request" {
		t.Fatalf("server got %q", buf[:k])
	}
	// The server does not close; the client's app closes its end.
	c.Close()
	recvOrFail(t, client.closed, 2*time.Second, "the client's Closed after Close")
	noReset(t, client, server)
	if in := c.Info(); in.ResetSent {
		t.Fatalf("the client reset the connection: %+v", in)
	}
	server.getConn().Close()
	recvOrFail(t, server.closed, 5*time.Second, "the server's Closed")
}
