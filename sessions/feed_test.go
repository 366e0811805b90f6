package sessions_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/sessions"
)

// TestFeed_MirrorFollowsTables applies a feed to a mirror and compares it
// with the Layer's own snapshot after a series of changes.
func TestFeed_MirrorFollowsTables(t *testing.T) {
	r := newRig(t)
	f := r.l.Subscribe(1024)
	defer f.Close()
	a := r.attach(0)
	h1 := r.bind(a, "udp://10.0.0.1:53")
	r.bind(a, "tcp://[::]:80")
	res, _ := r.l.ConnectURI(a, "udp://192.0.2.7:9", 0)
	eh, err := r.l.Connected(0, res.Handle)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, r.l.Unbind(a, h1), nil)
	r.bind(a, "udp://10.0.0.1:53")
	sh := r.established(a, 1, "udp://192.0.2.8:7")
	wantErr(t, r.l.Disconnect(a, eh), nil)

	mirror := map[sessions.Handle]sessions.Change{}
	var last uint64
	for len(f.C()) > 0 {
		c, err := f.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if c.Seq != last+1 {
			t.Fatalf("seq %d after %d", c.Seq, last)
		}
		last = c.Seq
		switch c.Op {
		case sessions.OpAdd:
			mirror[c.Handle] = c
		case sessions.OpDel:
			if _, ok := mirror[c.Handle]; !ok {
				t.Fatalf("delete of unknown %#x", c.Handle)
			}
			delete(mirror, c.Handle)
		}
	}
	seq, snap := r.l.Snapshot()
	if seq != last {
		t.Fatalf("snapshot seq %d, feed at %d", seq, last)
	}
	if len(snap) != len(mirror) {
		t.Fatalf("snapshot %d entries, mirror %d", len(snap), len(mirror))
	}
	for _, c := range snap {
		m, ok := mirror[c.Handle]
		if !ok || m.Tuple != c.Tuple || m.Kind != c.Kind || m.FIB != c.FIB || m.IfIndex != c.IfIndex || c.Op != sessions.OpAdd {
			t.Fatalf("snapshot entry %+v, mirror %+v", c, m)
		}
	}
	if _, ok := mirror[sh]; !ok {
		t.Fatal("accepted session missing")
	}
}

func TestFeed_OverflowMarksResync(t *testing.T) {
	r := newRig(t)
	f := r.l.Subscribe(2)
	defer f.Close()
	a := r.attach(0)
	for _, u := range []string{"udp://0.0.0.0:1", "udp://0.0.0.0:2", "udp://0.0.0.0:3"} {
		r.bind(a, u) // never blocks on the full feed
	}
	if !f.NeedsResync() {
		t.Fatal("overflow not marked")
	}
	_, err := f.Next(context.Background())
	if !errors.Is(err, sessions.ErrResync) {
		t.Fatalf("Next = %v, want ErrResync", err)
	}
	seq, snap := f.Resync()
	if f.NeedsResync() || seq != 3 || len(snap) != 3 {
		t.Fatalf("resync: %v %d %d", f.NeedsResync(), seq, len(snap))
	}
	r.bind(a, "udp://0.0.0.0:4")
	c, err := f.Next(context.Background())
	if err != nil || c.Seq != seq+1 {
		t.Fatalf("after resync: %+v %v", c, err)
	}
	// Next honours its context and Close.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := f.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next on empty feed = %v", err)
	}
	f.Close()
	if _, err := f.Next(context.Background()); !errors.Is(err, sessions.ErrFeedClosed) {
		t.Fatalf("Next after Close = %v", err)
	}
}
