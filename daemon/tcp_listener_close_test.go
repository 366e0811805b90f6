package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestTCPListenerCloseResetsQueued: connections an app's listener has not
// handed to Accept yet are reset when it closes, as Linux resets those in
// a closed listener's accept queue: kernel clients on host A and another
// app's cut-through client read ECONNRESET, not io.EOF (they read EOF, as
// after a graceful close by the server).
func TestTCPListenerCloseResetsQueued(t *testing.T) {
	rig, d := tcpRig(t)
	srv := attach(t, d, app.Options{Name: "never-accepts"})
	cli := attach(t, d, app.Options{Name: "client"})
	ln := listenApp(t, srv, "tcp://0.0.0.0:7270")
	var kcs []net.Conn
	if err := rig.A.Do(func() error {
		for i := range 3 {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, 7270).String(), 10*time.Second)
			if err != nil {
				return err
			}
			kcs = append(kcs, c)
			if i == 0 {
				if _, err := c.Write([]byte("request")); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range kcs {
		defer c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	cc, err := cli.Dial(ctx, "tcp://127.0.0.1:7270")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	waitFor(t, "four sessions waiting for Accept", 5*time.Second, func() bool {
		n := 0
		for _, s := range d.SessionViews() {
			if s.App == srv.Index() {
				n++
			}
		}
		return n == 4
	})
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	for i, c := range append(kcs, cc) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("client %d: read after the listener closed: %v, want ECONNRESET", i, err)
		}
	}
}
