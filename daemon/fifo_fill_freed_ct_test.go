package daemon

import (
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/flow"
)

// TestFifoFillDropsFreedCutThrough: the fifo readout behind show and the
// metrics takes out of the daemon's books an entry of a cut-through
// session whose memory is freed (the session is gone for both ends, so
// nothing reads it again), as it does an app's pair that went back to its
// memory. Before, it skipped such an entry and kept it, so one that no
// event took out stayed until its app detached. The entry is put back by
// hand here, as an end event the books missed would leave it.
func TestFifoFillDropsFreedCutThrough(t *testing.T) {
	d, srv, cli, ln := streamCutThroughPair(t)
	c, sc := ctStream(t, cli, ln)
	id := appIDOf(srv)
	d.mu.Lock()
	var h flow.Handle
	var p pairRef
	n := 0
	for h, p = range d.fifos[id] {
		n++
	}
	d.mu.Unlock()
	if n != 1 || p.ct == nil {
		t.Fatalf("the listening app has %d entries (cut-through %v), want its session's", n, p.ct != nil)
	}
	sc.Close()
	c.Close()
	waitFor(t, "the session's end", 5*time.Second, func() bool { return len(d.layer.Sessions()) == 0 })
	if p.ct.refs.tryRef() {
		p.ct.release()
		t.Fatal("the session's cut-through memory is not freed")
	}
	d.mu.Lock()
	d.trackLocked(id, h, p)
	d.mu.Unlock()
	d.fifoFill()
	if n := d.trackedFifos(id); n != 0 {
		t.Fatalf("after a readout, the daemon keeps %d entries of freed cut-through memory, want 0", n)
	}
}
