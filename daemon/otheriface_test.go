package daemon

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestNamespaceOnOtherInterface: a namespace may be on another interface
// of the daemon's netns than the one its datapath runs on. Its apps'
// listens and connects over the datapath fail with an error that names
// both interfaces and says what to do; with local scope its apps still
// reach each other cut-through.
func TestNamespaceOnOtherInterface(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	for _, args := range [][]string{
		{"link", "add", "xsside", "type", "veth", "peer", "name", "xsside-peer"},
		{"addr", "add", "10.79.0.1/24", "dev", "xsside"},
		{"link", "set", "xsside", "up"},
	} {
		ipIn(t, rig.B, args...)
	}
	d := startDaemon(t, onB(rig))
	if err := d.AddNamespace("side", 7, "xsside", rig.B.Name); err != nil {
		t.Fatal(err)
	}
	g := attach(t, d, app.Options{Name: "global", Namespace: "side", Secret: 7, Scope: flow.ScopeGlobal})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wantMsg := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s on a namespace of another interface: no error", what)
		}
		for _, w := range []string{"xsside", rig.B.Link, "local scope"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", what, err, w)
			}
		}
	}
	_, err := g.ListenPacket("udp://0.0.0.0:9400")
	wantMsg("udp listen", err)
	_, err = g.Listen("tcp://0.0.0.0:9401")
	wantMsg("tcp listen", err)
	_, err = g.Dial(ctx, "udp://"+netip.AddrPortFrom(rig.A.IPv4, 9402).String())
	wantMsg("udp dial", err)
	_, err = g.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, 9403).String())
	wantMsg("tcp dial", err)

	// Local scope: cut-through between the namespace's apps.
	l := attach(t, d, app.Options{Name: "local", Namespace: "side", Secret: 7, Scope: flow.ScopeLocal})
	l2 := attach(t, d, app.Options{Name: "local2", Namespace: "side", Secret: 7, Scope: flow.ScopeLocal})
	ln, err := l.Listen("tcp://0.0.0.0:9404")
	if err != nil {
		t.Fatalf("local listen: %v", err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 5)
		if n, err := c.Read(b); err == nil {
			_, _ = c.Write(b[:n])
		}
	}()
	c, err := l2.Dial(ctx, "tcp://10.79.0.1:9404")
	if err != nil {
		t.Fatalf("local dial: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := c.Read(b); err != nil || string(b) != "hello" {
		t.Fatalf("cut-through echo: %q, %v", b, err)
	}
}
