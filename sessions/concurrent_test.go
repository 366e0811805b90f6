package sessions_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
)

// TestConcurrent_WorkersAndControlPlane runs two workers (each draining its
// mailbox, looking up listeners and rules and reading its shard) while the
// control plane binds, connects, claims and disconnects. Run it with -race.
func TestConcurrent_WorkersAndControlPlane(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w uint32) {
			defer wg.Done()
			sh := r.l.Shard(w)
			tup := tuple("10.0.0.1", 53, "192.0.2.7", 1000, sessions.TransportUDP)
			for !stop.Load() {
				sh.Drain()
				r.l.LookupListener(1, &tup)
				r.l.MatchRule(1, &tup)
				sh.Get(0)
			}
			sh.Drain()
		}(uint32(w))
	}
	for i := 0; i < 300; i++ {
		h, err := r.l.BindURI(a, fmt.Sprintf("udp://10.0.0.1:%d", 1000+i))
		if err != nil {
			t.Fatal(err)
		}
		sh := r.established(a, uint32(i%2), fmt.Sprintf("udp://192.0.2.7:%d", 1000+i))
		if i%3 == 0 {
			if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, RemotePort: uint16(i), Action: sessions.RuleDrop}); err != nil {
				t.Fatal(err)
			}
		}
		res, err := r.l.ConnectURI(a, "udp://192.0.2.9:7", 0)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := r.l.Connected(uint32(i%2), res.Handle); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.l.Disconnect(a, sh); err != nil {
			t.Fatal(err)
		}
		if err := r.l.Unbind(a, h); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if err := r.l.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}
