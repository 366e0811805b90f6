package loader

import (
	"context"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestNoLeaks loads, attaches, mirrors and closes, and checks with
// leakcheck (sets of descriptors, goroutines and pins under the rig's
// namespace, polled until they settle) that nothing is left behind.
func TestNoLeaks(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	cycle := func() {
		o, err := spec.Load(ObjectsOptions{MaxEstablished: 1024})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.Attach(AttachOptions{Interface: p.B.Link, Netns: netnsPath(p.B), NetnsName: p.B.Name}); err != nil {
			t.Fatal(err)
		}
		src := newFakeSource()
		src.change(flow.OpAdd, flow.KindListener, p.B.IfIndex, listener(flow.TransportUDP, zero4, 9000), 1)
		m, err := NewMirror(o, src, MirrorOptions{IfIndex: p.B.IfIndex})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		feed := make(chan flow.Change)
		go func() { done <- m.Run(ctx, feed, time.Millisecond) }()
		feed <- src.change(flow.OpAdd, flow.KindEstablished, p.B.IfIndex, tuple(flow.TransportUDP, p.B.IPv4, 9000, p.A.IPv4, 1), 2)
		cancel()
		<-done
		if _, err := o.Counters.Read(); err != nil {
			t.Fatal(err)
		}
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cycle() // warm up lazily opened descriptors
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true,
		Dirs: []leakcheck.Dir{{Path: DefaultPinRoot, Prefix: p.B.Name}}})
	for i := 0; i < 3; i++ {
		cycle()
	}
	leaks.Check(t)
	checkDetached(t, p.B)
}
