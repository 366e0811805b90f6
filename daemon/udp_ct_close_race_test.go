package daemon

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestPacketConnCloseWhileWritingToCutThroughPeer: a WriteTo to a
// cut-through peer that runs into the listener's Close fails with
// net.ErrClosed, as a kernel socket's WriteTo racing its Close does,
// never with the EPIPE of a peer gone: the peer is there, the listener
// closed. Before, a write that waited on the writers' lock Close held
// found the session forgotten and said the peer had gone.
func TestPacketConnCloseWhileWritingToCutThroughPeer(t *testing.T) {
	d := startDaemon(t)
	srv := attach(t, d, app.Options{Name: "listener"})
	cli := attach(t, d, app.Options{Name: "peer"})
	buf := make([]byte, 64)
	for round := range 30 {
		pc, err := srv.ListenPacket("udp://0.0.0.0:7934")
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := cli.Dial(ctx, "udp://127.0.0.1:7934")
		cancel()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		c.Write([]byte("hi"))
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, peer, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		errc := make(chan error, 1)
		go func() {
			for {
				if _, err := pc.WriteTo([]byte("x"), peer); err != nil {
					errc <- err
					return
				}
			}
		}()
		time.Sleep(time.Millisecond)
		pc.Close()
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("round %d: WriteTo racing Close: %v; want net.ErrClosed", round, err)
		}
		c.Close()
	}
}
