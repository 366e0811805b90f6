package daemon

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestConnAfterAppCloseMatchesKernel: the App's Close closes its
// connections and packet listeners, and a call on one after it fails as
// after the object's own Close, as a closed kernel socket's does: "use of
// closed network connection", net.ErrClosed under the *net.OpError, every
// time (not the App's "app closed" when a select picked that case).
func TestConnAfterAppCloseMatchesKernel(t *testing.T) {
	_, d := tcpRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := attach(t, d, app.Options{Name: "server"})
	ln, err := srv.Listen("tcp://127.0.0.1:7530")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for round := range 30 {
		a := attach(t, d, app.Options{Name: "closing"})
		c, err := a.Dial(ctx, "tcp://127.0.0.1:7530")
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		pc, err := a.ListenPacket("udp://127.0.0.1:7531")
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
		_, rerr := c.Read(make([]byte, 8))
		_, werr := c.Write([]byte("x"))
		_, _, perr := pc.ReadFrom(make([]byte, 8))
		_, pwerr := pc.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9})
		for what, err := range map[string]error{"Read": rerr, "Write": werr, "ReadFrom": perr, "WriteTo": pwerr} {
			var op *net.OpError
			if !errors.As(err, &op) || !errors.Is(err, net.ErrClosed) || !strings.Contains(err.Error(), "use of closed network connection") {
				t.Fatalf("round %d: %s after the App's Close: %v, want use of closed network connection", round, what, err)
			}
		}
		s.Close()
	}
}
