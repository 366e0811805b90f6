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

	// Keyed as the loader's maps are: an Add of a key present replaces it.
	type key struct {
		kind sessions.ChangeKind
		fib  sessions.FIBID
		t    sessions.FiveTuple
	}
	mirror := map[key]sessions.Change{}
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
		k := key{c.Kind, c.FIB, c.Tuple}
		switch c.Op {
		case sessions.OpAdd:
			mirror[k] = c
		case sessions.OpDel:
			if m, ok := mirror[k]; !ok || m.Handle != c.Handle {
				t.Fatalf("delete of %#x: the mirror has %+v", c.Handle, m)
			}
			delete(mirror, k)
		}
	}
	seq, snap := r.l.Snapshot()
	if seq != last {
		t.Fatalf("snapshot seq %d, feed at %d", seq, last)
	}
	if len(snap) != len(mirror) {
		t.Fatalf("snapshot %d entries, mirror %d", len(snap), len(mirror))
	}
	handles := map[sessions.Handle]bool{}
	for _, c := range snap {
		m, ok := mirror[key{c.Kind, c.FIB, c.Tuple}]
		if !ok || m.Handle != c.Handle || m.IfIndex != c.IfIndex || c.Op != sessions.OpAdd {
			t.Fatalf("snapshot entry %+v, mirror %+v", c, m)
		}
		handles[c.Handle] = true
	}
	if !handles[sh] {
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
